"""The prediction pool and the body budget (serve/work.py) with real threads: a full line
refuses at once without taking a place, a reserved place is given back either way, and the
bytes of bodies held never pass the budget."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fastcore_cv.serve.work import BodyBudget, Busy, WorkPool


def test_a_full_line_refuses_at_once_and_check_room_takes_no_place():
    pool, release = WorkPool(slots=1, waiting=1), threading.Event()
    started = threading.Event()

    def blocked() -> str:
        started.set()
        release.wait(30)
        return "done"

    async def scenario() -> list[str]:
        pool.check_room()  # room: nothing taken
        assert pool.counts()["waiting"] == 0
        pool.reserve()
        first = asyncio.ensure_future(pool.run_reserved(blocked, timeout_s=30))
        await asyncio.to_thread(started.wait, 30)
        pool.reserve()  # the one waiting place
        second = asyncio.ensure_future(pool.run_reserved(lambda: "second", timeout_s=30))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="1 predictions running and 1 waiting"):
            pool.check_room()
        with pytest.raises(Busy):
            pool.reserve()
        assert pool.counts() == {"running": 1, "waiting": 1, "peak_running": 1, "limit": 1}
        release.set()
        return [await first, await second]

    try:
        assert asyncio.run(scenario()) == ["done", "second"]
        assert pool.counts()["running"] == pool.counts()["waiting"] == 0
        pool.check_room()
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_the_body_budget_counts_bytes_and_gives_them_back():
    budget = BodyBudget(100)
    with budget.holding() as take:
        take(60)
        with budget.holding() as other:
            other(40)  # exactly the budget
            with pytest.raises(Busy, match="100 bytes of uploads held, budget 100"):
                other(1)
            assert budget.held == 100
        assert budget.held == 60
        with pytest.raises(Busy):
            take(41)
    assert budget.held == 0  # given back, the refused take included (it was never counted)


def test_the_budget_is_given_back_when_a_request_fails():
    budget = BodyBudget(10)
    with pytest.raises(ValueError), budget.holding() as take:
        take(7)
        raise ValueError("the upload was bad")
    assert budget.held == 0
