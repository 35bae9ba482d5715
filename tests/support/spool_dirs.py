"""Breaking and repairing a spool directory, the way a failed disk or a wrong mount would."""

from __future__ import annotations

import shutil
from pathlib import Path


def break_directory(directory: Path) -> None:
    """Make every file operation under `directory` fail, for root too: it becomes a regular file."""
    shutil.rmtree(directory)
    directory.write_text("no longer a directory\n")


def repair_directory(directory: Path) -> None:
    directory.unlink()
    directory.mkdir()
