"""The concurrent range copies of one backfill run (`backfill.runner._all_or_nothing`): the first failure
stops the others and is raised as itself (not wrapped in an ExceptionGroup), with its cause.
Pure asyncio, no server (about 0.05 s)."""

from __future__ import annotations

import asyncio

import pytest

from backfill.runner import _all_or_nothing


class CopyFailed(Exception):
    pass


async def test_the_first_failure_cancels_the_rest_and_is_raised_as_itself() -> None:
    stopped: list[str] = []

    async def slow(name: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.append(name)
            raise

    async def failing() -> None:
        await asyncio.sleep(0.01)
        try:
            raise OSError("connection reset")
        except OSError as exc:
            raise CopyFailed("range 2 failed") from exc

    async def failing_later() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("never reached: cancelled first")

    with pytest.raises(CopyFailed, match="range 2 failed") as caught:
        await _all_or_nothing([slow("a"), failing(), slow("b"), failing_later()])
    assert sorted(stopped) == ["a", "b"]
    assert isinstance(caught.value.__cause__, OSError)


async def test_all_succeed() -> None:
    done: list[int] = []

    async def copy(n: int) -> None:
        await asyncio.sleep(0)
        done.append(n)

    await _all_or_nothing([copy(n) for n in range(4)])
    assert sorted(done) == [0, 1, 2, 3]
