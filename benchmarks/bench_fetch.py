"""Imagery from a STAC API at local-file speed: searches, bytes and CPU per tile (issue #18).

A loopback server (`benchmarks.loopback`) serves COGs with byte ranges and a STAC API that
pages 10 items unless asked for more, as pgstac does. The job is `imagery_for_tile` over a
grid of tiles in grid order, in 2 processes that each work through a span of
neighbouring tiles (`tfchips.work_spans`, as create-samples feeds its workers), for
``closest`` and ``median`` with a bit mask. The baseline is the read path before #18
(`benchmarks.legacy_read`: a search per tile, two warps per file, files opened per
tile), run in the same process on the same tiles. Both must give identical pixels. Figures:

- searches per tile, against the baseline (goal: at most 1 per 64 tiles);
- bytes fetched against the unique bytes the job needs, on a job of its own of 32 x 32
  tiles (goal: at most 1.2 times; the blocks two workers' spans share are fetched by
  both, a fixed cost per boundary, so the figure with 1 worker is given beside it);
- CPU seconds per tile in the workers, closest and median (goal: at most 0.7 times);
- tiles per second through the API against local files (goal: at least 0.9 times);
- peak worker memory over 5,000 tiles against 500 (goal: within 10%), with the default
  block cache (256 MiB, which fills as the job reads more of the scenes: the area of
  500 tiles needs about 7 MB of it, that of 5,000 about 66 MB) and with one of 8 MiB,
  full within the first 500 tiles, so that what still grows is not a cache.

``TFCHIPS_BENCH_FETCH_SIDE`` (16) sets the grid side in tiles of 128 px at 30 m,
``TFCHIPS_BENCH_FETCH_BYTES_SIDE`` (32) that of the bytes job;
``TFCHIPS_BENCH_FETCH_MEMORY_TILES`` (5000) the larger count of the memory run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

from benchmarks import legacy_read
from benchmarks.loopback import Service, make_world, tile_grid
from benchmarks.result import Result
from tfchips.grid import Tile
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.work_spans import map_in_spans, span_workers

WORKERS = 2
TILESIZE = 128
REPEAT = 2
# A block cache that fills within the first 500 tiles of the memory job: what grows beyond it is not a cache.
SMALL_CACHE = {"GDAL_CACHEMAX": "8"}


@dataclass
class Run:
    wall: float
    cpu_per_tile: float
    digests: list[str]
    peak_rss_kib: int


@functools.lru_cache(maxsize=4)
def _request(options: str) -> ImageryRequest:
    return ImageryRequest.from_options(json.loads(options))


def _work(tile: Tile, options: str) -> tuple[str, float, int]:
    request = _request(options)
    start = time.process_time()
    imagery = imagery_for_tile(tile, request)
    cpu = time.process_time() - start
    digest = hashlib.sha1(imagery.data.tobytes() + imagery.valid.tobytes() + repr(imagery.scenes).encode())
    return digest.hexdigest(), cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _start(legacy: bool, environment: dict[str, str]) -> None:
    """A worker's first task: ``environment`` and the read path before #18 where asked, and the modules a tile needs."""
    os.environ.update(environment)
    if legacy:
        legacy_read.install()
    import tfchips.imagery  # noqa: F401


def _run(
    tiles: list[Tile], options: dict, legacy: bool = False, workers: int = WORKERS, environment: dict | None = None
) -> Run:
    text = json.dumps(options)
    with span_workers(workers) as pools:
        for pool in pools:
            pool.submit(_start, legacy, environment or {}).result()
        start = time.perf_counter()
        results = [result for _, result in sorted(map_in_spans(_work, tiles, pools, text))]
        wall = time.perf_counter() - start
    return Run(wall, sum(r[1] for r in results) / len(tiles), [r[0] for r in results], max(r[2] for r in results))


def _best(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.cpu_per_tile)


def run() -> Iterator[Result]:
    side = int(os.environ.get("TFCHIPS_BENCH_FETCH_SIDE") or 16)
    memory_tiles = int(os.environ.get("TFCHIPS_BENCH_FETCH_MEMORY_TILES") or 5000)
    bytes_side = int(os.environ.get("TFCHIPS_BENCH_FETCH_BYTES_SIDE") or 32)
    tiles = tile_grid(side, TILESIZE, 30.0)
    with tempfile.TemporaryDirectory() as root:
        world = make_world(root, tiles)
        with Service(world) as service:
            shape = {"tiles": len(tiles), "tilesize": TILESIZE, "resolution_m": 30, "workers": WORKERS}
            for method in ("closest", "median"):
                api = world.options(service.url, method)
                ours, theirs = [], []
                counts = {}
                for _ in range(REPEAT):
                    for legacy, runs in ((True, theirs), (False, ours)):
                        service.log.reset()
                        runs.append(_run(tiles, api, legacy))
                        log = service.log
                        counts[legacy] = (log.searches, log.pages, log.fetched(), log.unique())
                new, old = _best(ours), _best(theirs)
                if new.digests != old.digests:
                    raise AssertionError(f"{method}: pixels differ from the read path before #18")
                if method == "closest":
                    searches, pages, _, _ = counts[False]
                    old_searches, old_pages, old_fetched, old_unique = counts[True]
                    before_18 = old_fetched / old_unique
                    yield Result(
                        name="fetch.searches_per_tile", unit="searches/tile", figure=searches / len(tiles),
                        baseline=old_searches / len(tiles), goal_ratio=64, higher_is_better=False,
                        details={**shape, "pages": pages, "baseline_pages": old_pages,
                                 "baseline_is": "a search per tile (TFCHIPS_STAC_SEARCH_BLOCK=1), pages of 10"},
                    )
                yield Result(
                    name=f"fetch.cpu_per_tile.{method}", unit="s/tile", figure=new.cpu_per_tile,
                    baseline=old.cpu_per_tile, goal_ratio=1 / 0.7, higher_is_better=False,
                    details={**shape, "baseline_is": "the read path before #18 on the same job (best of 2)"},
                )
            # Back to back, so that both see the same load on the machine.
            api_runs, local_runs = [], []
            for _ in range(REPEAT):
                api_runs.append(_run(tiles, world.options(service.url)))
                local_runs.append(_run(tiles, world.options(world.catalog)))
            api_closest = min(api_runs, key=lambda run: run.wall)
            fastest = min(local_runs, key=lambda run: run.wall)
            if fastest.digests != api_closest.digests:
                raise AssertionError("the STAC API and local files give different pixels")
            yield Result(
                name="fetch.api_vs_local_files", unit="tiles/s", figure=len(tiles) / api_closest.wall,
                baseline=len(tiles) / fastest.wall, goal_ratio=0.9,
                details={**shape, "method": "closest", "baseline_is": "the same job on the static catalog's files"},
            )
        # Many small tiles over the same scenes.
        small = tile_grid(side * 6, 64, 10.0, ti0=tiles[0].ti * 6, tj0=tiles[-1].tj * 6)
        few, many = small[:500], small[:memory_tiles]
        local = world.options(world.catalog)
        for name, environment in (("fetch.peak_memory", {}), ("fetch.peak_memory.small_block_cache", SMALL_CACHE)):
            baseline, figure = (_run(job, local, environment=environment).peak_rss_kib for job in (few, many))
            yield Result(
                name=name, unit="MiB", figure=figure / 1024, baseline=baseline / 1024, goal_ratio=1 / 1.1,
                higher_is_better=False,
                details={"tiles": len(many), "baseline_tiles": len(few), "tilesize": 64, "resolution_m": 10,
                         "environment": environment, "baseline_is": "peak worker RSS over 500 tiles"},
            )
    yield _bytes_fetched(bytes_side, shape, before_18)


def _bytes_fetched(side: int, shape: dict, before_18: float) -> Result:
    """Bytes fetched over the unique bytes, closest, through the API, 2 workers and 1.

    Its own job, larger than the others: each boundary between two workers' spans costs
    the block rows both fetch (a fixed amount, about a quarter of the unique bytes of a
    16 x 16 job), so the figure depends on the job's size more than on anything else.
    """
    tiles = tile_grid(side, TILESIZE, 30.0)
    with tempfile.TemporaryDirectory() as root:
        world = make_world(root, tiles)
        with Service(world) as service:
            ratios = {}
            for workers in (WORKERS, 1):
                service.log.reset()
                _run(tiles, world.options(service.url), workers=workers)
                ratios[workers] = (service.log.fetched(), service.log.unique())
    fetched, unique = ratios[WORKERS]
    return Result(
        name="fetch.bytes_fetched", unit="bytes", figure=fetched, baseline=unique, goal_ratio=1 / 1.2,
        higher_is_better=False,
        details={**shape, "tiles": len(tiles), "fetched_over_unique": round(fetched / unique, 3),
                 "one_worker_fetched_over_unique": round(ratios[1][0] / ratios[1][1], 3),
                 f"before_18_fetched_over_unique_{shape['tiles']}_tiles": round(before_18, 3),
                 "baseline_is": "unique bytes: the union of the ranges served"},
    )
