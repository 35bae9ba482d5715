"""The locks pin what pyproject.toml asks for, with hashes, and the development environment is the lock.

`make test`, CI and the benchmarks install `requirements-dev.lock`, the image `requirements.lock` (both
with `--require-hashes`); `make lock` makes them again from pyproject.toml. A dependency added to or
bounded in pyproject.toml without `make lock` fails here, not at an install on another machine."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.dockerfile import ROOT, read_dockerfile, requirement_lines

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked(name: str) -> dict[str, str]:
    """The lock's pins, by canonical name, each checked to be exact and hashed."""
    text = (ROOT / name).read_text()
    pins: dict[str, str] = {}
    for line in requirement_lines(text):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{name}: {line!r} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = specifier.version
    # An entry is its requirement line and the indented lines after it; each must carry a hash.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    for entry in entries:
        if entry.strip() and not entry.startswith("#"):
            assert "--hash=sha256:" in entry, f"{name}: {entry.split()[0]} has no hash"
    return pins


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.lock", PYPROJECT["project"]["dependencies"]),
        (
            "requirements-dev.lock",
            PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"],
        ),
    ],
)
def test_each_lock_pins_every_requirement_within_its_bounds(lock: str, requirements: list[str]) -> None:
    pins = locked(lock)
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{lock} lacks {requirement.name}: run `make lock`"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {requirement.name}=={version} outside {requirement.specifier}: run `make lock`"
        )


def test_the_image_and_the_development_environment_install_the_same_versions() -> None:
    image, development = locked("requirements.lock"), locked("requirements-dev.lock")
    assert {name: development.get(name) for name in image} == image
    for name, version in development.items():
        assert metadata.version(name) == version, f"installed {name} is not the lock's: run `make test`"


def test_the_image_installs_the_lock_with_hashes() -> None:
    runs = [i.arguments for stage in read_dockerfile() for i in stage.all("RUN")]
    assert any("--require-hashes" in run and "-r requirements.lock" in run for run in runs), runs
