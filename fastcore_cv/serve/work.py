"""Predictions in a fixed set of worker threads, counted until they really finish.

Why: a request that gives up on its timeout cannot stop the decode or onnxruntime call it
started (a thread cannot be killed). If its slot were freed at once, new work would start
beside the abandoned work and memory would grow without bound (issue 9: 20 decodes at once
against a limit of 2, +11 GB). Here the limit is the number of pool threads: a timed-out
call keeps its thread, and so its slot, until it returns; later calls wait (bounded) or are
refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Busy(Exception):
    """Every slot is running and the waiting line is full: refused without waiting."""


class WorkPool:
    """At most ``slots`` calls running at once and at most ``waiting`` more queued for them.

    A request ``reserve``s its place (counted as waiting) once its body is read, then
    ``run_reserved`` answers within ``timeout_s`` (TimeoutError), but the call it started
    keeps its slot until it returns; a queued call whose caller gave up is dropped unstarted."""

    def __init__(self, slots: int, waiting: int) -> None:
        self.slots, self.max_waiting = slots, waiting
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="predict")
        self._lock = threading.Lock()
        self.running = self.waiting = self.peak_running = 0

    def counts(self) -> dict[str, int]:
        """Calls running now, queued now, the most ever running at once, and the limit."""
        with self._lock:
            return {"running": self.running, "waiting": self.waiting,
                    "peak_running": self.peak_running, "limit": self.slots}  # fmt: skip

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._lock:
            self.waiting -= 1
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.running -= 1

    def _dropped(self, future: Future) -> None:
        if future.cancelled():  # never started: it still counts as waiting
            with self._lock:
                self.waiting -= 1

    def check_room(self) -> None:
        """Raise Busy at once if the line is full now, taking no place: a request checks this
        before reading its body, so a refused upload is never read."""
        with self._lock:
            if self.running + self.waiting >= self.slots + self.max_waiting:
                raise Busy(f"{self.running} predictions running and {self.waiting} waiting")

    def reserve(self) -> None:
        """Take a place in the line (raises Busy at once when it is full). Follow it with
        ``run_reserved``, or ``release`` if the request fails first."""
        with self._lock:
            if self.running + self.waiting >= self.slots + self.max_waiting:
                raise Busy(f"{self.running} predictions running and {self.waiting} waiting")
            self.waiting += 1

    def release(self) -> None:
        """Give back a place taken by ``reserve`` that ``run_reserved`` will not use."""
        with self._lock:
            self.waiting -= 1

    async def run_reserved(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
        """``fn(*args)`` in a pool thread, on the place ``reserve`` took; raises TimeoutError
        after ``timeout_s`` (waiting included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            future = self._pool.submit(self._call, fn, args)
        except RuntimeError:  # shut down: the place is not used
            self.release()
            raise
        future.add_done_callback(self._dropped)
        # On timeout wait_for cancels the wrapper, which cancels ``future`` if it has not
        # started; a running call cannot be cancelled and keeps its thread.
        result = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        if loop.time() > deadline:  # done, but after the deadline (the timer had not fired)
            raise TimeoutError(f"took longer than {timeout_s} s")
        return result

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking work and drop queued calls; running calls finish in their threads
        (``wait``: return once they have, and the threads are gone)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


class BodyBudget:
    """The bytes of request bodies held in memory at once, across requests, counted as they
    arrive: a slow client holds only the bytes it has sent, never a place in the prediction
    line (so a handful of stalled uploads cannot lock others out), and past the budget a
    request is refused (Busy) instead of read."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit, self.held = limit_bytes, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Count ``n`` more bytes as held, or raise Busy if they would pass the budget."""
        with self._lock:
            if self.held + n > self.limit:
                raise Busy(f"{self.held:,} bytes of uploads held, budget {self.limit:,}")
            self.held += n

    def give(self, n: int) -> None:
        """Stop counting ``n`` bytes (their request has ended)."""
        with self._lock:
            self.held -= n

    @contextlib.contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A ``take`` for one request; everything it took is given back on exit."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            self.take(n)
            taken += n

        try:
            yield take
        finally:
            self.give(taken)
