"""Worker pools for the local writer: an ordered, memory-bounded map over threads or processes."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import multiprocessing
import sys
from typing import Callable, Iterable, Iterator

# Items per task sent to a worker: enough to keep every worker busy, few enough
# that memory does not grow with the folder.
_BATCH = 8


def _map_batch(function: Callable, batch: list) -> list:
    return [function(item) for item in batch]


def _worker_init() -> None:
    # One GDAL environment per worker thread or process, not one per opened chip.
    import rasterio

    rasterio.Env().__enter__()


@contextlib.contextmanager
def worker_pool(workers: int, processes: bool = False) -> Iterator[concurrent.futures.Executor | None]:
    """A pool of ``workers`` threads (or processes) for `ordered_map`; None for one worker.

    Threads are the default: libtiff, GDAL and TensorFlow decode with the GIL
    released, and records need not be copied between processes. Processes are
    forked, which starts them in milliseconds, unless this process has loaded
    TensorFlow: forking its threads is unsafe, so they are spawned (and the main
    script must then be import-safe).
    """
    if workers == 1:
        import rasterio

        with rasterio.Env():
            yield None
        return
    if not processes:
        executor = concurrent.futures.ThreadPoolExecutor(workers, initializer=_worker_init)
    else:
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method), initializer=_worker_init
        )
        executor.submit(int).result()  # forks every worker now, while no TensorFlow thread exists
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def ordered_map(
    function: Callable, items: Iterable, executor: concurrent.futures.Executor | None = None, in_flight: int = 4
) -> Iterator:
    """``map(function, items)`` on ``executor`` (in this process if None): in order, memory bounded.

    Items go to the workers in batches of a few; at most ``in_flight`` batches are
    submitted and not yet consumed, so results never pile up in memory.
    """
    if executor is None:
        return map(function, items)
    return ordered_batch_map(functools.partial(_map_batch, function), items, executor, in_flight)


def ordered_batch_map(
    function: Callable[[list], list],
    items: Iterable,
    executor: concurrent.futures.Executor | None = None,
    in_flight: int = 4,
) -> Iterator:
    """`ordered_map` of a ``function`` that takes a batch (a list of items) and returns their results."""
    if executor is None:
        for batch in _batches(items):
            yield from function(batch)
        return
    pending: collections.deque = collections.deque()
    for batch in _batches(items):
        pending.append(executor.submit(function, batch))
        if len(pending) >= in_flight:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


def _batches(items: Iterable) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
