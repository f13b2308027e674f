"""A micro-batcher: requests that arrive within a few milliseconds share one model call.

Written by hand because no well-kept library does this for FastAPI: Ray Serve's ``@serve.batch`` needs a Ray
cluster, and the small PyPI batching packages are unmaintained. It is an asyncio queue drained by one task
that gathers items until ``max_batch`` or ``max_wait_ms`` is reached, runs the batch function in a worker
thread (so the event loop keeps accepting requests), and hands each caller back its own slice.

All model work goes through the same single worker thread (``run``), so a PyTorch model is never used by two
threads at once and explanations (which switch attention implementations and need gradients) cannot
interleave with predictions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["BatcherStats", "MicroBatcher"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatcherStats:
    """Counters to see whether batching happens (exposed by ``GET /health``)."""

    requests: int = 0
    """Calls to ``submit``."""
    items: int = 0
    """Items (SMILES) submitted."""
    batches: int = 0
    """Batch-function calls; ``requests / batches`` > 1 means requests were merged."""
    largest_batch: int = 0
    """Most items in one batch-function call."""
    busy_seconds: float = 0.0
    """Time spent inside the batch function."""

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "items": self.items, "batches": self.batches,
                "largest_batch": self.largest_batch, "busy_seconds": round(self.busy_seconds, 3)}


@dataclass
class _Pending(Generic[Item, Result]):
    items: list[Item]
    future: asyncio.Future[list[Result]]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Item, Result]):
    """Merge concurrent ``submit`` calls into batched calls of ``batch_fn`` on one worker thread.

    Args:
        batch_fn: maps a list of items to a list of results of the same length and order. It runs in the
            worker thread. When it raises on a batch merged from several requests, each request is run again on
            its own, so only the request that holds the bad item gets the exception.
        max_batch: most items per call; a request is never split, so one larger than this runs alone.
        max_wait_ms: how long the first item of a batch waits for company. While a batch runs, new requests
            queue up and form the next batch at once, so under load batches fill without waiting.

    Use ``start()`` / ``stop()`` from the app's lifespan (they need the running event loop).
    """

    def __init__(self, batch_fn: Callable[[list[Item]], Sequence[Result]], max_batch: int = 256,
                 max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatcherStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smilesformer-model")
        self._queue: asyncio.Queue[_Pending[Item, Result]] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Pending[Item, Result] | None = None  # taken from the queue but did not fit the last batch

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._carry is not None)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="smilesformer-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        # callers still waiting get an error rather than hanging forever
        leftovers = [self._carry] if self._carry is not None else []
        while self._queue is not None and not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the server is shutting down"))
        self._carry = None
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Results for ``items``, in order, computed in a batch with whatever else arrived meanwhile."""
        if not self.running:
            raise RuntimeError("the micro-batcher is not running (start it in the app's lifespan)")
        items = list(items)
        if not items:
            return []
        self.stats.requests += 1
        self.stats.items += len(items)
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def run(self, fn: Callable[..., Result], *args: Any) -> Result:
        """Run ``fn(*args)`` on the model thread, between batches (for work that is not batched)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _next_batch(self) -> list[_Pending[Item, Result]]:
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                if remaining > 0:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                else:
                    pending = self._queue.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(pending.items) > self.max_batch:
                self._carry = pending
                break
            batch.append(pending)
            size += len(pending.items)
        return batch

    async def _run_alone(self, batch: list[_Pending[Item, Result]]) -> None:
        loop = asyncio.get_running_loop()
        for p in batch:
            if p.future.done():
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.batch_fn, p.items)
            except Exception as exc:
                logger.exception("a request of %d items failed", len(p.items))
                if not p.future.done():
                    p.future.set_exception(exc)
            else:
                if not p.future.done():
                    p.future.set_result(list(results))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            # a caller that disconnected has a cancelled future: do not spend the model on it
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            items = [item for p in batch for item in p.items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.batch_fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except Exception as exc:
                if len(batch) == 1:
                    logger.exception("a request of %d items failed", len(items))
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                else:  # one request's bad item must not fail its neighbours: run each request on its own
                    logger.warning("batch of %d items from %d requests failed (%s); retrying each request alone",
                                   len(items), len(batch), exc)
                    await self._run_alone(batch)
                continue
            finally:
                self.stats.batches += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(items))
                self.stats.busy_seconds += time.perf_counter() - started
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(list(results[start:start + len(p.items)]))
                start += len(p.items)
