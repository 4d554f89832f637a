"""The eager hand-off: a coroutine stepped once must then run exactly as a task would."""

import asyncio

import pytest

from connector.consumer import finish


async def test_a_coroutine_stepped_once_finishes_with_its_value() -> None:
    gate = asyncio.Event()

    async def hand_off() -> int:
        await gate.wait()
        await asyncio.sleep(0)
        return 7

    coro = hand_off()
    step = coro.send(None)
    task = asyncio.ensure_future(finish(coro, step))
    gate.set()
    assert await asyncio.wait_for(task, 5) == 7


async def test_a_coroutine_stepped_once_is_cancelled_where_it_waits() -> None:
    gate, seen = asyncio.Event(), []

    async def hand_off() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro = hand_off()
    task = asyncio.ensure_future(finish(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_an_error_after_the_first_step_reaches_the_waiter() -> None:
    async def hand_off() -> None:
        await asyncio.sleep(0)
        raise LookupError("no channel")

    coro = hand_off()
    with pytest.raises(LookupError, match="no channel"):
        await finish(coro, coro.send(None))
