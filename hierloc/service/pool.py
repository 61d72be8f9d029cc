"""A worker pool with a bounded queue: a fixed number of threads and a fixed number of admitted jobs.

A request is admitted (`BoundedPool.admit`) before its body is read, so that at most `capacity` =
workers + queue_size requests hold a body, an image or a place in the queue at any time; beyond that
`admit` raises `Overloaded` at once (the service answers 503 with Retry-After), never buffering more.
An admitted request owns a `Slot` until its job has finished running: a job that outlives its request's
time limit cannot be interrupted (Python threads are not killable) but keeps its slot until it ends, so
the bound holds; a job still waiting when its request times out is cancelled and never runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Overloaded(RuntimeError):
    """Every worker is busy and the queue is full."""


class JobTimeout(TimeoutError):
    """A job did not finish within its request's time limit."""


class Slot:
    """A place in the pool held by one request; released once (by its job's end, or by the request)."""

    def __init__(self, pool: BoundedPool) -> None:
        self._pool = pool
        self._released = False
        self.submitted = False
        self.admitted_at = time.perf_counter()

    def release(self) -> None:
        """Give the place back (idempotent)."""
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool._admitted -= 1

    def release_unless_submitted(self) -> None:
        """Give the place back if no job took it over (the request ended before or without running one)."""
        if not self.submitted:
            self.release()


class BoundedPool:
    """`workers` threads and at most `queue_size` jobs waiting for them; see the module docstring."""

    def __init__(self, workers: int, queue_size: int, name: str = "hierloc-worker",
                 initializer: Callable[[], Any] | None = None) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError(f"a pool needs at least one worker and a queue of 0 or more, got {workers}, {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        # `initializer` runs once in each worker thread (e.g. its OpenMP thread count, which is per thread).
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=initializer)
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._closed = False

    @property
    def capacity(self) -> int:
        """Requests admitted at most: running plus waiting."""
        return self.workers + self.queue_size

    @property
    def running(self) -> int:
        """Jobs running now."""
        return self._running

    @property
    def admitted(self) -> int:
        """Requests holding a slot now (reading their body, waiting or running)."""
        return self._admitted

    @property
    def waiting(self) -> int:
        """Admitted requests not running (the queue depth)."""
        return max(0, self._admitted - self._running)

    def admit(self) -> Slot:
        """A slot for one request, or Overloaded at once when `capacity` requests hold one."""
        with self._lock:
            if self._closed:
                raise Overloaded("the service is shutting down")
            if self._admitted >= self.capacity:
                raise Overloaded(f"all {self.workers} workers are busy and the queue of {self.queue_size} is full")
            self._admitted += 1
        return Slot(self)

    def _run(self, fn: Callable[..., T], args: tuple, deadline: float) -> T:
        if time.perf_counter() > deadline:
            raise JobTimeout("the request's time limit passed while it waited in the queue")
        with self._lock:
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running -= 1

    async def run(self, slot: Slot, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run `fn(*args)` on a worker for the request holding `slot`; JobTimeout after `timeout` seconds."""
        deadline = slot.admitted_at + timeout
        future: Future = self._executor.submit(self._run, fn, args, deadline)
        slot.submitted = True
        future.add_done_callback(lambda _: slot.release())
        remaining = max(0.0, deadline - time.perf_counter())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), remaining)
        except asyncio.TimeoutError:
            future.cancel()  # a waiting job never runs; a running one finishes and then frees its slot
            raise JobTimeout(f"no answer within the time limit of {timeout:g} s") from None

    def shutdown(self, wait: bool = True) -> None:
        """Admit nothing more; with `wait`, return once every submitted job has finished."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait)
