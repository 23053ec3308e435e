"""A job's tiles cut into one span of neighbours per worker process, the spans stolen in halves.

Neighbouring tiles share source blocks: a worker that makes them one after another
fetches each block once and finds it in its GDAL block cache for the next tile. A
shared queue handing tiles out in turn gives every worker every other tile, so each
fetches the blocks that a pair shares (measured on `benchmarks.bench_fetch`: 1.98 times
the unique bytes with 2 workers, 1.07 with 1). So the tiles, in the job's order (grid
rows), are cut into one contiguous span per worker; each worker takes its own span from
the front, and a worker whose span is empty takes the back half of the longest span
left, so that every span stays contiguous and no worker idles while another has work.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Sequence

from tfchips.workers import process_pool

# Tasks queued per worker: its next tile is there when it finishes one.
IN_FLIGHT_PER_WORKER = 2


class Spans:
    """Indices ``0..count-1`` as one contiguous span per worker, handed out by `take`."""

    def __init__(self, count: int, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        edges = [math.floor(count * w / workers) for w in range(workers + 1)]
        # [next, stop) per worker.
        self._spans = [[edges[w], edges[w + 1]] for w in range(workers)]

    def take(self, worker: int) -> int | None:
        """The next index for ``worker``: the front of its span, or of the back half it steals
        from the longest span left; None when every index has been taken."""
        span = self._spans[worker]
        if span[0] == span[1]:
            victim = max(self._spans, key=lambda s: s[1] - s[0])
            left = victim[1] - victim[0]
            if not left:
                return None
            middle = victim[1] - math.ceil(left / 2)
            span[0], span[1], victim[1] = middle, victim[1], middle
        index = span[0]
        span[0] += 1
        return index


class WorkersDied(Exception):
    """A worker process died; ``in_progress`` holds the indices that were queued or running."""

    def __init__(self, in_progress: list[int]) -> None:
        super().__init__(f"a worker process died with {len(in_progress)} item(s) in progress")
        self.in_progress = in_progress


@contextlib.contextmanager
def span_workers(workers: int) -> Iterator[list[concurrent.futures.Executor]]:
    """``workers`` processes for `map_in_spans`, each a pool of its own (so that work can go
    to a chosen one), all ending with this process (`tfchips.workers.process_pool`)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(process_pool(1)) for _ in range(workers)]


def map_in_spans(
    function: Callable, items: Sequence, pools: list[concurrent.futures.Executor], *args
) -> Iterator[tuple[int, object]]:
    """``function(item, *args)`` for every one of ``items`` on ``pools`` (`span_workers`), each
    working through a span of neighbours (`Spans`); yields ``(index, result)`` as each ends,
    in the order they end. On an error the pools are shut down, their queued work cancelled.

    Raises:
        WorkersDied: a worker process died (killed, perhaps by the out-of-memory killer).
        Exception: whatever ``function`` raised, once its item's turn to be yielded came.
    """
    spans = Spans(len(items), len(pools))
    running: dict[concurrent.futures.Future, tuple[int, int]] = {}

    def submit(worker: int) -> None:
        index = spans.take(worker)
        if index is None:
            return
        try:
            future = pools[worker].submit(function, items[index], *args)
        except BrokenProcessPool:  # its process died since its last result came back
            raise WorkersDied(sorted([index, *(queued for _, queued in running.values())])) from None
        running[future] = worker, index

    try:
        for worker in range(len(pools)):
            for _ in range(IN_FLIGHT_PER_WORKER):
                submit(worker)
        while running:
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                raise WorkersDied(sorted(index for _, index in running.values()))
            for future in done:
                worker, index = running.pop(future)
                yield index, future.result()
                submit(worker)
    except BaseException:
        # Without this each pool would finish its queued tasks before the error surfaces.
        for pool in pools:
            pool.shutdown(cancel_futures=True)
        raise
