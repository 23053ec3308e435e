"""Job building: option values (a command line's, a config file's) -> tiles, a `SampleJob`, `WriterOptions`.

Tiles come as a `tfchips.tile_blocks.TileSource` and its blocks, so that a pipeline of
millions of tiles never lists them in its driver.

The ``tfchips`` commands and the Beam pipelines parse their options each in their own
way, then both come here, so that a value means the same thing to both. ``values`` are
keyed by Python parameter name (``max_cloud``, ``tiles_path``, ``shard_size_mb``); errors
name those parameters in backticks, which each front end shows as its own flags.
"""

from __future__ import annotations

import os
import sys

from tfchips import storage
from tfchips.aoi import bbox_geometry, read_aoi
from tfchips.errors import ConfigError, OutputError
from tfchips.fingerprint import check_fingerprint, job_fingerprint
from tfchips.imagery import ImageryRequest, check_bands
from tfchips.labels import LabelRequest, load_ground_truth
from tfchips.records.encoder import RecordOptions
from tfchips.records.plan import parse_splits
from tfchips.records.writer import WriterOptions
from tfchips.processes import usable_cores
from tfchips.redaction import redact_json
from tfchips.samples import SampleJob
from tfchips.sources import TrustBoundary
from tfchips.tile_blocks import Block, TileSource

# Latitudes (degrees) between which UTM is defined.
UTM_SOUTH, UTM_NORTH = -80.0, 84.0


def recorded_options(values: dict) -> dict:
    """Option values as config.yaml and the manifest keep them: credentials in URLs masked."""
    return {
        name: tuple(redact_json(value)) if isinstance(value, list) else redact_json(value)
        for name, value in values.items()
    }


def trust_boundary(values: dict) -> TrustBoundary:
    """The `TrustBoundary` of the environment, widened or narrowed by ``allow_local_assets``/``allowed_hosts``."""
    boundary = TrustBoundary.from_environment()
    allow_local = values.get("allow_local_assets")
    hosts = values.get("allowed_hosts")
    return TrustBoundary(
        boundary.allow_local if allow_local is None else bool(allow_local),
        boundary.allowed_hosts if hosts is None else tuple(h for h in str(hosts).split(",") if h.strip()),
    )


def area_of_interest(aoi_path: str | None, bbox: tuple | None):
    """The WGS84 geometry chosen by exactly one of ``aoi_path`` (a vector file) and ``bbox`` (W, S, E, N degrees)."""
    if (aoi_path is None) == (bbox is None):
        raise ConfigError("give exactly one of `aoi_path` and `bbox`")
    return read_aoi(aoi_path) if aoi_path is not None else bbox_geometry(bbox)


_AREA_OPTIONS = ("tiles_path", "aoi_path", "bbox")


def with_area_from_command_line(values: dict, from_config: frozenset[str] = frozenset()) -> dict:
    """``values`` without the config file's area when the command line gives one.

    `tiles_path`, `aoi_path` and `bbox` are one choice: any of them given otherwise than
    by the config file (``from_config``) replaces those the file gives, so the job and the
    config it saves name one area.
    """
    given = [n for n in _AREA_OPTIONS if values.get(n) is not None and n not in from_config]
    if not given:
        return values
    return {**values, **{n: None for n in _AREA_OPTIONS if n in from_config}}


def job_tiles(values: dict, from_config: frozenset[str] = frozenset()) -> tuple[TileSource, list[Block]]:
    """The tiles of ``tiles_path``, or of ``aoi_path``/``bbox`` at ``resolution`` (m) and ``tilesize``/``pad`` (pixels),
    as a source and its blocks (`TileSource.tiles` lists them).

    ``from_config`` names the values that came from a config file: an area given
    otherwise replaces the file's (`with_area_from_command_line`).
    """
    values = with_area_from_command_line(values, from_config)
    area_given = values["aoi_path"] is not None or values["bbox"] is not None
    if values["tiles_path"] is not None:
        if area_given:
            raise ConfigError("give `tiles_path` or `aoi_path`/`bbox`, not both")
        return TileSource.of_file(values["tiles_path"])
    if values["resolution"] is None or values["tilesize"] is None:
        raise ConfigError("`resolution` and `tilesize` are needed with `aoi_path`/`bbox`")
    area = area_of_interest(values["aoi_path"], values["bbox"])
    _, south, _, north = area.bounds
    if south < UTM_SOUTH or north > UTM_NORTH:
        # The grid goes on to the poles, but few catalogs do and tiles there are distorted.
        print(
            f"warning: the area of interest reaches latitude {south if south < UTM_SOUTH else north:g},"
            f" outside the UTM band ({UTM_SOUTH:g} to {UTM_NORTH:g}); its tiles are distorted",
            file=sys.stderr,
        )
    return TileSource.of_area(area, values["resolution"], values["tilesize"], values["pad"])


def job_from_values(
    values: dict,
    from_config: frozenset[str] = frozenset(),
    chips: bool = True,
    save_config=None,
) -> tuple[TileSource, list[Block], SampleJob]:
    """Tiles (a source and its blocks, `job_tiles`) and job from create-samples option values,
    checked before anything is written.

    The labels are read and every catalog opened first, and unless ``overwrite`` a
    folder of chips made with other options is refused, so that a job that cannot run
    stops before anything is written.

    Args:
        values: option values by parameter name, as `tfchips create-samples` takes them.
        from_config: names of the values that came from a config file.
        chips: False when the chips go to TFRecords rather than to ``out`` (the Beam
            pipeline's ``tfrecords``), so no fingerprint of ``out`` is checked.
        save_config: called as ``save_config(out, recorded_options(values))`` once ``out``
            exists, to keep the options the job ran with (``OUT/config.yaml``).
    """
    values = with_area_from_command_line(values, from_config)
    source, blocks = job_tiles(values)
    labels = LabelRequest.from_options(values)
    job = SampleJob(
        imagery=ImageryRequest.from_options(values),
        labels=labels,
        out=values["out"],
        min_valid=values["min_valid"],
        min_labelled=values["min_labelled"],
        overwrite=values["overwrite"],
        class_names=dict(labels.classes),
        provenance=bool(values.get("provenance")),
    )
    load_ground_truth(job.labels)
    boundary = trust_boundary(values)
    # Worker processes, started later, read the boundary from the environment.
    os.environ.update(boundary.environment())
    check_bands(job.imagery, boundary)
    if chips and not job.overwrite:
        check_fingerprint(job.out, job_fingerprint(job.imagery, job.labels), lambda name: f"`{name}`", "`overwrite`")
    try:
        if not storage.is_url(job.out):
            os.makedirs(job.out, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{job.out}: cannot write the output folder ({error.strerror})") from None
    if save_config is not None:
        save_config(job.out, recorded_options(values))
    return source, blocks, job


def writer_options(values: dict, progress: bool = True) -> WriterOptions:
    """`WriterOptions` from to-tfrecords option values (``shards`` or ``shard_size_mb``, ``split_text``, ...)."""
    if (values["shards"] is None) == (values["shard_size_mb"] is None):
        raise ConfigError("give exactly one of `shards` and `shard_size_mb`")
    return WriterOptions(
        records=RecordOptions(values["encoding"], values["label_encoding"], values["decoder"], values["schema"]),
        shards=values["shards"],
        shard_size_mb=values["shard_size_mb"],
        compression=values["compression"],
        workers=values["workers"] or usable_cores(),
        processes=values["processes"],
        splits=parse_splits(values["split_text"]),
        split_by=values["split_by"],
        seed=values["seed"],
        statistics=values["statistics"],
        exact_statistics=values.get("exact_statistics", False),
        skip_bad=values["skip_bad"],
        overwrite=values["overwrite"],
        progress=progress,
    )
