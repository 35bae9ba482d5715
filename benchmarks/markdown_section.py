"""What the benchmark scripts share to report their figures.

`write_section` puts a benchmark's Markdown section into a file such as BENCHMARKS.md, between its own
markers: the section replaces the one already there, or is appended, so each script rewrites only its own
figures. `shown_path` and `cpu_model` fill the header every section opens with. `export_tree` writes a
commit's files to a directory, for a benchmark that measures the code before a change beside it."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
from pathlib import Path


def write_section(path: Path, section: str, start_marker: str, end_marker: str) -> None:
    """`section` starts with `start_marker` and ends with `end_marker`."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(end_marker) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.write_text(text if text.endswith("\n") else text + "\n")


def shown_path(path: str) -> str:
    """A path as the figures should show it: relative to the repository when inside it, so the file does
    not carry one machine's checkout location."""
    repo = Path(__file__).resolve().parent.parent
    try:
        # abspath, not resolve(): a venv's python is a symlink to the system interpreter.
        return str(Path(os.path.abspath(path)).relative_to(repo))
    except ValueError:
        return path


def cpu_model() -> str:
    """The CPU's model name, as the machine line of a section shows it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def export_tree(commit: str, directory: Path) -> Path:
    """The repository's files at `commit` (`git archive`), in `directory`, which must exist."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory
