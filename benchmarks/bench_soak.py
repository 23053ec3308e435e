"""Soak: ``tfchips create-samples`` over 2,228 tiles of the demo catalog; memory must stay flat.

The demo area (1.8 km x 1.9 km) is cut into 4 px tiles at 10 m so that a long job fits in
about a minute. The job runs as a subprocess with two workers; a sampler reads the
proportional set size (PSS, so pages shared after fork count once; RSS where PSS is
unavailable) of the whole process tree every 250 ms and the number of chips published.
The figure is the peak over the whole job (2,228 tiles); the baseline the peak until
500 tiles were done. Goal ratio 0.8: the whole job may peak at most 25% above the
first 500 tiles. A job holds one small record per tile (statistics for the manifest),
so a few MB of growth is expected on a tree of a few hundred MB; a leak of a chip's
pixels or a file handle per tile would break the goal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator

from benchmarks.result import Result
from tfchips.aoi import bbox_geometry
from tfchips.demo_data import DEMO_BBOX, generate
from tfchips.grid import tiles_for_shape

TILESIZE, RESOLUTION, WORKERS = 4, 10.0, 2
EARLY = 500
SAMPLE_SECONDS = 0.25  # reading smaps costs kernel time: sample gently
_SUMMARY = "tfchips create-samples: "


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return found


def _memory_kib(pid: int) -> int:
    """PSS of one process in KiB (RSS where smaps_rollup is missing); 0 once it has gone."""
    for path, field in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as stream:
                for line in stream:
                    if line.startswith(field):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def _published(folder: str) -> int:
    try:
        return sum(not entry.name.startswith(".") for entry in os.scandir(folder))
    except FileNotFoundError:
        return 0


def run() -> Iterator[Result]:
    if not os.path.isdir("/proc/self/task"):
        print('{"benchmark": "soak", "skipped": "needs Linux /proc to follow the job\'s processes"}')
        return
    tiles = len(tiles_for_shape(bbox_geometry(DEMO_BBOX), RESOLUTION, TILESIZE, 0))
    with tempfile.TemporaryDirectory() as root:
        demo = generate(os.path.join(root, "demo"), seed=0)
        out = os.path.join(root, "chips")
        options = {**demo.job_options(out), "tilesize": TILESIZE, "workers": WORKERS}
        args = [w for name, value in options.items() for w in (f"--{name.replace('_', '-')}", str(value))]
        command = [sys.executable, "-c", "import sys; from tfchips.cli.main import cli; sys.exit(cli())"]
        start = time.perf_counter()
        process = subprocess.Popen(
            [*command, "create-samples", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        peaks = {"early": 0, "all": 0}
        reached_early = [None]

        def sample() -> None:
            while process.poll() is None:
                total = sum(_memory_kib(pid) for pid in _tree(process.pid))
                done = _published(os.path.join(out, "labels"))
                peaks["all"] = max(peaks["all"], total)
                if done < EARLY:
                    peaks["early"] = max(peaks["early"], total)
                elif reached_early[0] is None:
                    reached_early[0] = time.perf_counter() - start
                time.sleep(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, stderr = process.communicate()
        sampler.join()
        seconds = time.perf_counter() - start
        # Exit status 1 only says some tiles failed (a few 40 m tiles are under cloud in every scene).
        # The command's summary is the last line it writes to stderr.
        summary = next((line for line in reversed(stderr.splitlines()) if line.startswith(_SUMMARY)), "")
        if process.returncode not in (0, 1) or " written " not in summary:
            raise RuntimeError(f"create-samples failed ({process.returncode}): {stderr[-2000:]}")
        written = _published(os.path.join(out, "labels"))
    yield Result(
        name="soak.create_samples_peak_memory",
        unit="MiB",
        figure=peaks["all"] / 1024,
        baseline=peaks["early"] / 1024,
        goal_ratio=0.8,
        higher_is_better=False,
        details={
            "tiles": tiles,
            "written": written,
            "workers": WORKERS,
            "baseline_is": f"peak PSS of the process tree over the first {EARLY} tiles",
            "figure_is": f"peak PSS of the process tree over all {tiles} tiles",
            "growth_kib_per_tile": round((peaks["all"] - peaks["early"]) / max(tiles - EARLY, 1), 2),
            "seconds": round(seconds, 1),
            "seconds_to_first_500": None if reached_early[0] is None else round(reached_early[0], 1),
            "summary": summary.removeprefix(_SUMMARY).split(";")[0],
        },
    )
