"""Subprocesses of one test (servers, workers, CLI runs), each logging to its own file, all stopped and
waited for at the end whatever happened."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Processes:
    tmp_path: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """`python argv...` in the background, its output in `<tmp_path>/<name>-<n>.log`."""
        with self.log_path(name).open("wb") as log:
            process = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def log_path(self, name: str) -> Path:
        return self.tmp_path / f"{name}-{len(self.started)}.log"

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
