"""Beam runners: 2 workers against 1 on the same create-samples job of 240 tiles.

For the DirectRunner in multi-processing mode and for the PortableRunner on Beam's Python
job service (LOOPBACK workers), the goal is 2 workers >= 1.5x the tiles/s of 1 worker. That
job service runs every stage on one worker (`PORTABLE_LIMIT`), so the portable runner is
measured a second time on a job service made to schedule 2 (`SCHEDULED`).
Each figure is the best of `REPEAT` runs, with CPU seconds (this process, its finished
children, and the job service) beside wall seconds.

Where the time goes: every configuration also runs a job of `SMALL` tiles. With wall =
fixed + tiles x per-tile, the two jobs give the fixed seconds (worker start-up, pipeline
submission, the metadata step) and the per-tile seconds of the steady state; the ratio
of per-tile seconds is the speed-up workers give once started. Each multi-processing
worker's CPU seconds are sampled too: on free cores a run lasts at least its busiest
worker's CPU time, which bounds the ratio whatever else runs on the machine (the load
average is reported beside it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
from typing import Iterator

import shapely

from benchmarks.result import Result, cpu_seconds
from tfchips.demo_data import generate
from tfchips.grid import tiles_for_shape

TILESIZE = 13  # 240 tiles over the demo area: the per-tile work is what is measured
SMALL = 24
REPEAT = 2
GOAL = 1.5
# Why the portable runner cannot use a second worker, from Beam 2.77's source.
PORTABLE_LIMIT = (
    "Beam's Python job service runs each job with FnApiRunner(provision_info=...).run_via_runner_api: "
    "FnApiRunner fixes _num_workers = 1 and only run_pipeline (the DirectRunner's entry) reads "
    "--direct_num_workers; --sdk_worker_parallelism is read nowhere in the Python SDK. Every stage's "
    "bundle goes to one SDK worker, so a second worker cannot help"
)

SCHEDULED = (
    "Beam's job service made to run each stage on --direct_num_workers SDK workers, as runners that "
    "schedule workers do (tests/beam_runners.py _scheduled_workers); LOOPBACK workers are threads of "
    "the submitting process, so they share its GIL"
)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of one run: wall, CPU in all, and CPU of each SDK worker process (none for LOOPBACK)."""

    wall: float
    cpu: float
    worker_cpu: tuple[float, ...] = ()


def _stat(pid: int | str) -> tuple[int, float]:
    """(parent pid, CPU seconds) of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # ppid, utime + stime


def _process_cpu(pid: int | None) -> float:
    return 0.0 if pid is None else _stat(pid)[1]


class WorkerSampler:
    """CPU seconds of each SDK worker process below this one, sampled every `PERIOD` s while running.

    Multi-processing workers run as ``sh -c python -m ...sdk_worker_main``, grandchildren of
    this process, and are gone (their CPU folded into the shell's) once the run ends.
    """

    PERIOD = 0.5

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "WorkerSampler":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.PERIOD):
            tree = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    tree[int(pid)] = _stat(pid)
            children = {pid for pid, (parent, _) in tree.items() if parent == os.getpid()}
            for pid, (parent, cpu) in tree.items():
                if parent in children and _is_worker(pid):
                    self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))


def _is_worker(pid: int) -> bool:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return b"sdk_worker_main" in stream.read()
    return False


def _run(args: list[str], service_pid: int | None) -> Timing:
    from beam_pipelines import create_training_samples

    cpu, start = cpu_seconds() + _process_cpu(service_pid), time.perf_counter()
    with WorkerSampler() as workers:
        create_training_samples.main(args)
    wall, spent = time.perf_counter() - start, cpu_seconds() + _process_cpu(service_pid) - cpu
    return Timing(wall, spent, tuple(sorted(workers.seen.values())))


@dataclasses.dataclass(frozen=True)
class Job:
    """The demo job's options without ``--tiles`` and ``--out``, and where tile lists and outputs go."""

    options: list[str]
    root: str

    def tiles_file(self, keys: list[str], name: str) -> str:
        path = os.path.join(self.root, f"{name}.txt")
        with open(path, "w") as stream:
            stream.write("\n".join(keys) + "\n")
        return path

    def best(self, tiles: str, runner: list[str], label: str, service_pid: int | None) -> Timing:
        runs = [self.run(tiles, runner, f"{label}-{i}", service_pid) for i in range(REPEAT)]
        return min(runs, key=lambda t: t.wall)

    def run(self, tiles: str, runner: list[str], label: str, service_pid: int | None) -> Timing:
        out = os.path.join(self.root, label)
        return _run([*self.options, "--tiles", tiles, "--out", out, *runner], service_pid)


def _job(root: str) -> tuple[Job, list[str]]:
    """The demo job and the keys of its tiles of `TILESIZE` pixels."""
    demo = generate(f"{root}/demo", seed=0)
    options = []
    for name, value in demo.job_options().items():
        if name not in ("out", "tilesize", "bbox"):  # the tiles file says which tiles
            options += [f"--{name.replace('_', '-')}", str(value)]
    tiles = tiles_for_shape(shapely.box(*demo.bbox), demo.resolution, TILESIZE)
    return Job(options, root), [t.key for t in tiles]


def _result(name: str, job: Job, runner, service_pid: int | None, big: str, small: str, count: int, extra: dict) -> Result:
    timings = {}
    for workers in (1, 2):
        args = runner(workers)
        timings[workers] = (job.best(big, args, f"{name}-{workers}-big", service_pid),
                            job.best(small, args, f"{name}-{workers}-small", service_pid))
    details = {"tiles": count, "tilesize": TILESIZE, "small_tiles": SMALL, "repeat": REPEAT,
               "load_average": round(os.getloadavg()[0], 1), "baseline_is": "1 worker", "figure_is": "2 workers"}
    for workers, (whole, part) in timings.items():
        per_tile = (whole.wall - part.wall) / (count - SMALL)
        details[f"workers_{workers}"] = {
            "wall_s": round(whole.wall, 2), "cpu_s": round(whole.cpu, 2),
            "fixed_wall_s": round(whole.wall - per_tile * count, 2), "per_tile_wall_ms": round(1000 * per_tile, 1),
            "per_tile_cpu_ms": round(1000 * (whole.cpu - part.cpu) / (count - SMALL), 1),
            "worker_cpu_s": [round(c, 1) for c in whole.worker_cpu],
        }
    one, two = details["workers_1"], details["workers_2"]
    details["steady_state_ratio"] = round(one["per_tile_wall_ms"] / two["per_tile_wall_ms"], 2)
    if timings[1][0].worker_cpu and timings[2][0].worker_cpu:
        # On free cores a run lasts at least as long as its busiest worker's CPU time.
        details["free_cores_bound_ratio"] = round(max(timings[1][0].worker_cpu) / max(timings[2][0].worker_cpu), 2)
    return Result(name=name, unit="tiles/s", figure=count / timings[2][0].wall, baseline=count / timings[1][0].wall,
                  goal_ratio=GOAL, details={**details, **extra})


def run() -> Iterator[Result]:
    from tests.beam_runners import job_service, loopback_grpc, runner_args

    with tempfile.TemporaryDirectory() as root, loopback_grpc():
        job, keys = _job(root)
        big, small = job.tiles_file(keys, "big"), job.tiles_file(keys[:SMALL], "small")
        job.run(small, runner_args("direct"), "warm", None)  # imports, page cache, catalog parsing
        yield _result("runners.multi_processing.workers", job, lambda n: runner_args("multi_processing", workers=n),
                      None, big, small, len(keys), {})
        for name, scheduled, extra in (("portable", False, {"why": PORTABLE_LIMIT}),
                                       ("portable_scheduled", True, {"job_service": SCHEDULED})):
            with job_service(tempfile.mkdtemp(dir=root), scheduled=scheduled) as service:
                yield _result(f"runners.{name}.workers", job,
                              lambda n: [*runner_args("portable", service.address, workers=n), f"--direct_num_workers={n}"],
                              service.pid, big, small, len(keys), extra)
