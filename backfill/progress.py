"""Progress of a copy: a bar (rows, rate, ETA) on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from tqdm import tqdm


class Progress(Protocol):
    def start(self, label: str, total: int, unit: str = "rows") -> None: ...
    def advance(self, rows: int) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def start(self, label: str, total: int, unit: str = "rows") -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm[Any] | None = None

    def start(self, label: str, total: int, unit: str = "rows") -> None:
        # An unknown total (0: a REST collection that does not say its size) shows a count and a rate.
        self._bar = tqdm(
            total=total or None, desc=label, unit=unit, unit_scale=True, file=self._stream, smoothing=0.1
        )

    def advance(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LineProgress:
    """`label: 50,000/200,000 rows (25%), 98,000 rows/s, ETA 2 s`, every `interval_s` and at the end
    (`label: 50,000 records, 9,800 records/s` when the total is not known)."""

    def __init__(self, write: Callable[[str], None], *, interval_s: float = 5.0) -> None:
        self._write = write
        self._interval_s = interval_s
        self._label = ""
        self._unit = "rows"
        self._total = 0
        self._done = 0
        self._started = self._last = 0.0
        self._running = False

    def start(self, label: str, total: int, unit: str = "rows") -> None:
        self._label, self._total, self._unit, self._done = label, total, unit, 0
        self._started = self._last = time.monotonic()
        self._running = True

    def advance(self, rows: int) -> None:
        self._done += rows
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            self._write(self._line(now))

    def close(self) -> None:
        if self._running:
            self._running = False
            self._write(self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        share = f" ({100 * self._done / self._total:.0f}%)" if self._total else ""
        left = max(self._total - self._done, 0)
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and left else ""
        unit = self._unit
        done = f"{self._done:,}/{self._total:,}" if self._total else f"{self._done:,}"
        return f"{self._label}: {done} {unit}{share}, {rate:,.0f} {unit}/s{eta}"


def progress_for(stream: TextIO = sys.stderr) -> Progress:
    if stream.isatty():
        return BarProgress(stream)
    return LineProgress(lambda line: print(line, file=stream, flush=True))
