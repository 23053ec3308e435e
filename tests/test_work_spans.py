"""Work split into spans of neighbours per worker, stolen in halves (tfchips.work_spans), over the usable cores."""

from __future__ import annotations

import os

import pytest

from tfchips.work_spans import Spans, WorkersDied, map_in_spans, span_workers


def _runs(indices: list[int]) -> int:
    """How many runs of consecutive indices ``indices`` make."""
    return sum(1 for i, index in enumerate(indices) if i == 0 or index != indices[i - 1] + 1)


def _drain(spans: Spans, turns: list[int]) -> dict[int, list[int]]:
    """Take indices for the workers in ``turns`` order (cycled) until none are left."""
    taken: dict[int, list[int]] = {worker: [] for worker in set(turns)}
    idle: set[int] = set()
    while len(idle) < len(taken):
        for worker in turns:
            index = spans.take(worker)
            if index is None:
                idle.add(worker)
            else:
                taken[worker].append(index)
    return taken


@pytest.mark.parametrize("count,workers", [(0, 2), (1, 2), (7, 3), (256, 2), (1000, 7)])
def test_every_index_is_taken_once(count, workers):
    taken = _drain(Spans(count, workers), list(range(workers)))
    every = sorted(index for indices in taken.values() for index in indices)
    assert every == list(range(count))


def test_workers_at_the_same_pace_each_keep_one_contiguous_span():
    taken = _drain(Spans(256, 2), [0, 1])
    assert taken[0] == list(range(128)) and taken[1] == list(range(128, 256))


def test_a_fast_worker_steals_the_back_half_of_the_longest_span_and_spans_stay_contiguous():
    spans = Spans(100, 2)
    # Worker 0 takes three times as many tiles as worker 1.
    taken = _drain(spans, [0, 0, 0, 1])
    assert taken[0][:50] == list(range(50))
    stolen = taken[0][50:]
    assert stolen and min(stolen) > max(taken[1][:17])  # it stole from the far end of worker 1's span
    # A few steals, each a run: far fewer runs than alternate tiles (50) would make.
    assert _runs(taken[0]) <= 6 and _runs(taken[1]) <= 6
    assert len(taken[0]) > 2 * len(taken[1])


def test_workers_must_be_at_least_one():
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        Spans(3, 0)


def _where(item: int, offset: int) -> tuple[int, int]:
    return item + offset, os.getpid()


def test_map_in_spans_gives_each_process_runs_of_neighbours():
    items = list(range(40))
    with span_workers(2) as pools:
        results = dict(map_in_spans(_where, items, pools, 1000))
    assert sorted(results) == items and all(results[i][0] == i + 1000 for i in items)
    processes = {pid for _, pid in results.values()}
    assert len(processes) == 2 and os.getpid() not in processes
    for pid in processes:
        mine = [i for i in items if results[i][1] == pid]
        assert _runs(mine) <= 4, mine  # a span, and perhaps a few stolen halves


def _die_at(item: int, fatal: int) -> int:
    if item == fatal:
        os._exit(3)
    return item


def test_a_dead_worker_is_reported_with_the_items_in_progress():
    with pytest.raises(WorkersDied) as died, span_workers(2) as pools:
        list(map_in_spans(_die_at, list(range(20)), pools, 12))
    assert 12 in died.value.in_progress


def test_a_worker_that_died_before_its_next_task_is_reported_too():
    from concurrent.futures.process import BrokenProcessPool

    with span_workers(2) as pools:
        with pytest.raises(BrokenProcessPool):
            pools[1].submit(os._exit, 3).result()
        with pytest.raises(WorkersDied) as died:
            list(map_in_spans(_where, list(range(6)), pools, 0))
    assert 3 in died.value.in_progress  # the first of the dead worker's span


def _fail_at(item: int, bad: int) -> int:
    if item == bad:
        raise ValueError(f"item {item} is bad")
    return item


def test_an_error_in_the_function_reaches_the_caller():
    with pytest.raises(ValueError, match="item 5 is bad"), span_workers(2) as pools:
        list(map_in_spans(_fail_at, list(range(10)), pools, 5))


def test_usable_cores_follow_the_affinity_and_fall_back_to_the_core_count(monkeypatch):
    from tfchips.processes import usable_cores

    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert usable_cores() == 1
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores() == 6
