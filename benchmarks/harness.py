"""What the benchmark scripts share: starting and stopping servers, waiting for them, driving wrk, the
statistics of rounds, and writing figures.

Processes     every server a script starts, each in its own session (process group, optionally pinned to
              a CPU with taskset), stopped with SIGTERM then SIGKILL at the end
wait_http     an HTTP server up (200), or the error with the tail of its log if its process exited
parse_wrk     wrk's `--latency` output as requests/s, p50, p99 and errors
median, percentile, rates     a round's figures (percentile: nearest rank)
cpu_seconds, load_average     what a process used and how busy the machine was, from /proc
write_section a benchmark's Markdown section into a file such as BENCHMARKS.md, between its own markers:
              the section replaces the one already there, or is appended, so each script rewrites only its
              own figures; `shown_path` and `cpu_model` fill the header every section opens with
export_tree   a commit's files in a directory, for a benchmark that measures the code before a change

Scripts run from this folder (`python benchmarks/bench_x.py`) and import it as `harness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Processes:
    """Every process a script starts, each in its own session (process group), stopped at the end. The
    environment is the script's, without PYTHONPATH and CUTOVER_* (a server reads only its own config)."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        cpu: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with its output in `log_path`; `cpu`: pinned to that CPU list (taskset)."""
        argv = ["taskset", "-c", cpu, *argv] if cpu is not None else list(argv)
        log(f"start {name}: {shlex.join(argv)}")
        out = log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CUTOVER_")}
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append((name, proc, out))
        return proc

    @staticmethod
    def signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        if proc.poll() is None:
            self.signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self.signal(proc, signal.SIGKILL)  # anything left in the group
        for i, (_name, known, out) in enumerate(self._procs):
            if known is proc:
                out.close()
                del self._procs[i]
                break

    def stop_all(self) -> None:
        for _name, proc, _out in list(reversed(self._procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                log(f"could not stop pid {proc.pid}: {exc}")


async def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None, log_path: Path | None = None, timeout_s: float = 20.0
) -> None:
    """Until `url` answers 200; a BenchError when `proc` exits first or the time is up."""
    import aiohttp  # here: not every script that imports the harness starts a server

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    shown = "" if log_path is None else f":\n{tail(log_path)}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"exited with {proc.returncode} before ready{shown}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise BenchError(f"{url} not ready after {timeout_s:.0f} s ({last}){shown}")


# --------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    pct: dict[str, float] = {}
    for m in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M):
        pct[m.group(1)] = float(m.group(2)) * _UNITS_MS[m.group(3)]
    if rps is None or "50" not in pct or "99" not in pct:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    reqs = re.search(r"^\s*(\d+) requests in", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        requests=int(reqs.group(1)) if reqs else 0,
        errors=(int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0),
    )


# --------------------------------------------------------------------------- figures


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def rates(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU time of `pid` so far (/proc, clock ticks), with its children's when `children`
    (a proxy and its shadow process); None when the process is gone."""
    pids = [pid]
    if children:
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total: float | None = None
    for one in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return total


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


# --------------------------------------------------------------------------- writing figures


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
    try:
        # abspath, not resolve(): a venv's python is a symlink to the system interpreter.
        return str(Path(os.path.abspath(path)).relative_to(REPO))
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
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory
