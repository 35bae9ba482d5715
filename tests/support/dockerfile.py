"""The image's build without a Docker daemon: the build context `docker build` would send, the Dockerfile
read instruction by instruction, and its build stage reproduced in a temporary directory.

Context: the checkout filtered by .dockerignore with docker-py's implementation of its rules (the
library Docker maintains for Python; its own `build()` sends exactly `exclude_paths`). One difference
from the Docker CLI is known: docker-py matches case-insensitively.

Build stage: WORKDIR and COPY are carried out as Docker does; RUN is carried out only in the forms this
module knows, and anything else fails loudly, so a Dockerfile change cannot make the reproduction quietly
differ from the image:
- `python -c ...` (with a redirection) runs as is, with the development interpreter as `python`;
- `pip install ... -r FILE` is checked, not run: every requirement must be satisfied by the development
  environment, which stands in for the image's dependency layer (no network, no compiler);
- `pip install ... .` runs with `--no-deps --no-build-isolation` (the build backend and the dependencies
  come from the development environment), `--ignore-installed` (the development install stays) and the
  prefix moved into the temporary directory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from docker.utils.build import exclude_paths
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # as written, continuation lines joined

    def words(self) -> list[str]:
        """The arguments as a list: JSON (exec) form, or split like a shell would."""
        text = self.arguments.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            assert isinstance(parsed, list)
            return [str(word) for word in parsed]
        return shlex.split(text)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def read_dockerfile(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    stages: list[Stage] = []
    logical = ""
    for raw in path.read_text().splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            logical += raw.rstrip()[:-1] + " "
            continue
        logical += raw
        keyword, _, arguments = logical.strip().partition(" ")
        logical = ""
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def ignore_patterns(root: Path = ROOT) -> list[str]:
    """.dockerignore's patterns, read as docker-py reads them (comments and blank lines dropped)."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path = ROOT) -> list[str]:
    """Relative paths of the files `docker build` sends from `root` (directories left out)."""
    paths = exclude_paths(str(root), ignore_patterns(root), dockerfile="Dockerfile")
    return sorted(p for p in paths if (root / p).is_file() or (root / p).is_symlink())


def materialise_context(destination: Path, root: Path = ROOT) -> list[str]:
    files = context_files(root)
    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target, follow_symlinks=False)
    return files


@dataclass(frozen=True)
class BuildResult:
    prefix: Path  # what the build stage installed under its `--prefix`
    site_packages: Path
    scripts: Path


def reproduce_build_stage(stage: Stage, context: Path, filesystem: Path, *, prefix: str) -> BuildResult:
    """Carry out `stage` with `context` as the build context and `filesystem` as its root directory."""
    workdir = filesystem
    install_prefix = filesystem / prefix.lstrip("/")
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = filesystem / instruction.arguments.strip().lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            _copy(instruction, context, filesystem, workdir)
        elif instruction.keyword == "RUN":
            _run(instruction, workdir, filesystem, prefix)
        else:
            raise AssertionError(f"the build stage's {instruction.keyword} is not reproduced here")
    purelib = sysconfig.get_path(
        "purelib", vars={"base": str(install_prefix), "platbase": str(install_prefix)}
    )
    scripts = sysconfig.get_path(
        "scripts", vars={"base": str(install_prefix), "platbase": str(install_prefix)}
    )
    return BuildResult(install_prefix, Path(purelib), Path(scripts))


def _copy(instruction: Instruction, context: Path, filesystem: Path, workdir: Path) -> None:
    assert not any(w.startswith("--from") for w in instruction.words()), "COPY --from in the build stage"
    words = [w for w in instruction.words() if not w.startswith("--")]
    *sources, destination = words
    target = filesystem / destination.lstrip("/") if destination.startswith("/") else workdir / destination
    into_directory = destination.endswith("/") or destination in (".", "./") or len(sources) > 1
    for source in sources:
        origin = (context / source).resolve()
        assert origin == context or context in origin.parents, f"COPY {source}: outside the context"
        assert origin.exists(), f"COPY {source}: not in the build context (excluded by .dockerignore?)"
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, symlinks=True)
        else:
            path = target / origin.name if into_directory else target
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, path)


def _run(instruction: Instruction, workdir: Path, filesystem: Path, prefix: str) -> None:
    command = instruction.arguments.strip()
    if command.startswith("python -c "):
        environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        subprocess.run(["sh", "-c", command], cwd=workdir, env=environment, check=True, timeout=60)
        return
    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], f"RUN {command!r} is not reproduced here"
    options = words[2:]
    assert f"--prefix={prefix}" in options, f"RUN {command!r} does not install into {prefix}"
    if "-r" in options:
        requirements = requirement_lines((workdir / options[options.index("-r") + 1]).read_text())
        missing = [line for line in requirements if not _satisfied(Requirement(line))]
        assert not missing, f"the development environment lacks the image's requirements {missing}"
        return
    assert options[-1] == ".", f"RUN {command!r} is not reproduced here"
    known = {"--no-cache-dir", "--no-deps", f"--prefix={prefix}", "."}
    assert set(options) <= known, f"RUN {command!r}: options {set(options) - known} are not reproduced here"
    target = filesystem / prefix.lstrip("/")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        # --ignore-installed: with only --prefix, pip would first uninstall the development environment's
        # own (editable) cutover, which it finds on its path.
        + ["--ignore-installed", "--no-cache-dir", "--prefix", str(target), "."],
        cwd=workdir,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, f"RUN {command!r} failed:\n{built.stdout}\n{built.stderr}"


def requirement_lines(text: str) -> list[str]:
    """The requirements of a requirements file, a hashed lock included: continuation lines joined, then
    comments and `--hash` options left out."""
    joined = text.replace("\\\n", " ")
    lines = []
    for line in joined.split("\n"):
        words = [word for word in line.split("#", 1)[0].split() if not word.startswith("--hash=")]
        if words:
            lines.append(" ".join(words))
    return lines


def _satisfied(requirement: Requirement) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)
