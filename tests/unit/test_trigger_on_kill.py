"""finish_despite_cancels: how on_kill survives Airflow 3.3's triggerer cancelling it again.

The triggerer runs on_kill inside the trigger's task, already cancelled once, and cancels that
task again at each state sync until it ends. These drive the same pattern with asyncio alone.
"""

from __future__ import annotations

import asyncio

import pytest

from kubedbt.airflow.trigger import finish_despite_cancels


async def _cancelled_every(task: asyncio.Task[None], interval: float) -> None:
    while not task.done():
        task.cancel("__airflow_user_action__")
        await asyncio.sleep(interval)


def test_the_work_finishes_through_repeated_cancels_of_its_caller() -> None:
    finished: list[str] = []

    async def stop() -> None:
        await asyncio.sleep(0.3)
        finished.append("stopped")

    async def scenario() -> bool:
        on_kill = asyncio.ensure_future(finish_despite_cancels(stop(), budget=5))
        canceller = asyncio.ensure_future(_cancelled_every(on_kill, 0.02))
        await asyncio.wait([on_kill])
        await canceller
        return on_kill.cancelled()

    assert not asyncio.run(scenario()), "on_kill ended by a cancel before the stop was done"
    assert finished == ["stopped"]


def test_without_cancels_it_is_a_plain_await() -> None:
    done: list[bool] = []

    async def work() -> None:
        await asyncio.sleep(0)
        done.append(True)

    asyncio.run(finish_despite_cancels(work(), budget=1))
    assert done == [True]


def test_past_the_budget_the_cancel_wins_and_the_work_is_cancelled() -> None:
    async def scenario() -> tuple[bool, bool]:
        state = {"work_cancelled": False}

        async def endless() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                state["work_cancelled"] = True
                raise

        on_kill = asyncio.ensure_future(finish_despite_cancels(endless(), budget=0.2))
        canceller = asyncio.ensure_future(_cancelled_every(on_kill, 0.05))
        await asyncio.wait([on_kill], timeout=5)
        await canceller
        await asyncio.sleep(0)
        return on_kill.cancelled(), state["work_cancelled"]

    assert asyncio.run(scenario()) == (True, True)


def test_the_work_s_error_is_raised_even_when_a_cancel_came_first() -> None:
    async def failing() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("the API refused the patch")

    async def scenario() -> None:
        on_kill = asyncio.ensure_future(finish_despite_cancels(failing(), budget=5))
        canceller = asyncio.ensure_future(_cancelled_every(on_kill, 0.02))
        await asyncio.wait([on_kill])
        await canceller
        on_kill.result()

    with pytest.raises(RuntimeError, match="refused the patch"):
        asyncio.run(scenario())
