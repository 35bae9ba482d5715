"""Can the local spool take an intent right now? Checked at start (a proxy with an unusable spool does not
start) and again while it runs (`buffer_worker.spool.SpoolingSink` keeps the answer for readiness and for
refusing writes before they are forwarded).

The check does what a spooled append and the mover do, on a probe file beside the spool: create, write a
block, fsync, remove. Permission bits alone would say nothing (root ignores them; a read-only mount, an
immutable directory or a full disk refuse root too), so nothing is inferred from `os.access`.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from pathlib import Path

# One file-system block: a disk that cannot take this cannot take a spooled intent either.
_PROBE_BYTES = b"\0" * 4096


class SpoolUnusableError(Exception):
    """The spool cannot be written; `problem` says why in words an operator can act on."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"spool {path} is not usable: {problem} (buffer.spool_path)")


def spool_file(spool_path: str | os.PathLike[str], process_index: int) -> Path:
    """The spool of one proxy process: a restarted process resumes its own predecessor's spool."""
    path = Path(spool_path)
    return path.with_name(f"{path.name}.{process_index}")


def spool_problem(path: Path) -> str | None:
    """None when an intent can be spooled to `path` now, else what stands in the way."""
    directory = path.parent
    if not directory.exists():
        return f"directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.exists():
        if not path.is_file():
            return f"{path} is not a regular file"
        try:
            # Opened as an append does it, writing nothing: the file itself must take appends.
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            return f"file {path} is not writable ({exc.strerror})"
    # The directory must take new files too: the mover renames the spool and rewrites what is left.
    probe = path.with_name(path.name + ".probe")
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        return f"directory {directory} is not writable ({exc.strerror})"
    try:
        try:
            os.write(descriptor, _PROBE_BYTES)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left for it in {directory} ({exc.strerror})"
        return f"directory {directory} does not take writes ({exc.strerror})"
    finally:
        with suppress(OSError):
            probe.unlink()
    return None


def check_spool(path: Path) -> None:
    """Raise `SpoolUnusableError` unless an intent can be spooled to `path` now."""
    problem = spool_problem(path)
    if problem is not None:
        raise SpoolUnusableError(path, problem)
