"""What a chip folder or a TFRecord dataset holds, and whether it is intact.

`inspect_dataset` decodes every chip or record once (see
`tfchips.dataset_reader.open_dataset` for the paths it takes) and gathers counts,
the storage schema, band statistics, class pixel counts, valid-pixel fractions
and an integrity check: every record against its dataset.json, every shard's
record count and SHA-256. Nothing here writes files.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tfchips.chips import IMAGES_DIR, LABELS_DIR, MANIFEST_NAME, NOT_UTF8, chip_key
from tfchips.dataset_reader import (
    ChipSample,
    ChipSource,
    DecodedChip,
    OnProgress,
    Problem,
    RasterLayout,
    RecordSource,
    decode_record,
    load_pair,
    no_progress,
    open_dataset,
    problem_of,
    read_shard,
    sample_chips,
    shard_sha256,
)
from tfchips.errors import ChipError, RecordError, TfchipsError
from tfchips.figures import (
    SAMPLE_SIZE,
    BandSummary,
    ChipEntry,
    ChipFigures,
    ClassSummary,
    FractionSummary,
    Histogram,
    PixelSample,
    band_summaries,
    chip_figures,
    class_summaries,
    format_number,
    fraction_summary,
)
from tfchips.records.dataset_info import DATASET_JSON, DatasetInfo
from tfchips.statistics import ChipStatistics

__all__ = [
    "BandSummary",
    "ChipSample",
    "ChipSource",
    "ClassSummary",
    "DecodedChip",
    "FractionSummary",
    "Histogram",
    "Inspection",
    "Problem",
    "RasterLayout",
    "RecordSource",
    "ShardCheck",
    "format_number",
    "inspect_dataset",
    "load_pair",
    "open_dataset",
    "sample_chips",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class ShardCheck:
    """A shard as read against dataset.json: record counts and SHA-256, found and expected.

    ``records`` counts the records read before any corruption; ``error`` says why
    reading stopped early, or that the file is missing.
    """

    file: str
    split: str
    records: int
    expected_records: int | None
    sha256: str | None
    expected_sha256: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.expected_records == self.records
            and self.expected_sha256 is not None
            and self.expected_sha256 == self.sha256
        )


@dataclass(frozen=True)
class Inspection:
    """Everything `inspect_dataset` found; ``verified`` when there is no problem."""

    path: str
    kind: str
    counts: dict[str, int]
    splits: dict[str, int]
    schema: dict[str, tuple[tuple[RasterLayout, int], ...]]
    bands: tuple[BandSummary, ...]
    classes: tuple[ClassSummary, ...]
    ignored_pixels: int
    valid_fraction: FractionSummary
    chips: tuple[ChipEntry, ...]
    shards: tuple[ShardCheck, ...]
    problems: tuple[Problem, ...]
    class_names: dict[str, str] | None

    @property
    def verified(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        """The ``tfchips inspect --json`` document."""
        return {
            "path": self.path,
            "kind": self.kind,
            "verified": self.verified,
            "counts": dict(self.counts),
            "splits": dict(self.splits),
            "schema": {
                side: [{**layout.as_json(), "count": count} for layout, count in layouts]
                for side, layouts in self.schema.items()
            },
            "bands": [band.as_json() for band in self.bands],
            "classes": [dataclasses.asdict(c) for c in self.classes],
            "ignored_pixels": self.ignored_pixels,
            "valid_fraction": {
                "min": self.valid_fraction.minimum,
                "mean": self.valid_fraction.mean,
                "median": self.valid_fraction.median,
                "max": self.valid_fraction.maximum,
                "histogram": self.valid_fraction.histogram.as_json(),
            },
            "shards": [{**dataclasses.asdict(s), "ok": s.ok} for s in self.shards],
            "chips": [dataclasses.asdict(c) for c in self.chips],
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "class_names": self.class_names,
        }


def _layout_problems(path: str, kind: str, layouts: dict[str, collections.Counter]) -> list[Problem]:
    """Chips whose dtype or bands differ from the most common ones cannot share one dataset."""
    problems = []
    for side, counter in layouts.items():
        kinds = {(layout.dtype, layout.band_names) for layout in counter}
        if len(kinds) > 1:
            described = "; ".join(f"{dtype} {list(names)}" for dtype, names in sorted(kinds))
            problems.append(Problem(path, f"{kind} {side}s differ in dtype or bands: {described}"))
    return problems


def summarize(
    source: ChipSource | RecordSource,
    figures: Iterable[ChipFigures | Problem],
    counts: dict[str, int],
    shards: Sequence[ShardCheck] = (),
    problems: Iterable[Problem] = (),
    sample_size: int = SAMPLE_SIZE,
) -> Inspection:
    """Merge per-chip figures (in any order) and problems into an `Inspection`.

    ``shards`` is read once ``figures`` is exhausted, so a reader may fill it as it goes.
    """
    problems = list(problems)
    layouts = {"image": collections.Counter(), "label": collections.Counter()}
    statistics: ChipStatistics | None = None
    band_names: tuple[str, ...] = ()
    samples: list[PixelSample] = []
    entries: list[ChipEntry] = []
    ignored = 0
    for item in figures:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        layouts["image"][item.layouts[0]] += 1
        layouts["label"][item.layouts[1]] += 1
        entries.append(item.entry)
        ignored += item.ignored_pixels
        if statistics is None:
            statistics, band_names = item.statistics, item.layouts[0].band_names
            samples = [PixelSample(sample_size) for _ in band_names]
        elif item.layouts[0].band_names != band_names:
            continue  # reported by _layout_problems; its bands cannot be merged with the others
        else:
            statistics = statistics.merge(item.statistics)
        for sample, (keys, values) in zip(samples, item.samples):
            sample.add(keys, values)
    problems.extend(_layout_problems(source.path, source.kind[:-1], layouts))
    splits: dict[str, int] = collections.Counter(e.split for e in entries if e.split is not None)
    for check in shards:
        splits.setdefault(check.split, 0)
    return Inspection(
        path=source.path,
        kind=source.kind,
        counts={**counts, "decoded": len(entries)},
        splits=dict(splits),
        schema={side: tuple(counter.most_common()) for side, counter in layouts.items()},
        bands=band_summaries(statistics, band_names, samples),
        classes=class_summaries(statistics, source.class_names),
        ignored_pixels=ignored,
        valid_fraction=fraction_summary([e.valid_fraction for e in entries]),
        chips=tuple(sorted(entries, key=lambda e: (e.split or "", e.name))),
        shards=tuple(shards),
        problems=tuple(problems),
        class_names=source.class_names,
    )


# ---------------------------------------------------------------------------
# Inspecting
# ---------------------------------------------------------------------------


def _folder_problems(source: ChipSource) -> list[Problem]:
    problems = []
    for path in source.folder.unpaired:
        side = os.path.basename(os.path.dirname(path))
        other = LABELS_DIR if side == IMAGES_DIR else IMAGES_DIR
        problems.append(Problem(path, f"unpaired: no chip of the same name in {other}/"))
    problems += [Problem(path, NOT_UTF8) for path in source.folder.undecodable]
    if source.manifest_keys is not None:
        manifest = os.path.join(source.path, MANIFEST_NAME)
        stems = {os.path.splitext(os.path.basename(p))[0] for p in source.folder.unpaired}
        present = {p.key for p in source.folder.pairs} | {chip_key(stem) for stem in stems}
        for key in sorted(source.manifest_keys - present):
            problems.append(Problem(manifest, f"tile {key} is written according to the manifest, but its chips are missing"))
        for pair in source.folder.pairs:
            if pair.key not in source.manifest_keys:
                problems.append(Problem(pair.image_path, f"chip pair {pair.name} is not in {MANIFEST_NAME}"))
    return problems


def _folder_figures(source: ChipSource, sample_size: int, on_progress: OnProgress) -> Iterator[ChipFigures | Problem]:
    pairs = source.folder.pairs
    on_progress("inspect", "chip", 0, len(pairs))
    for done, pair in enumerate(pairs, 1):
        try:
            yield chip_figures(load_pair(pair), sample_size)
        except ChipError as error:
            yield problem_of(error, pair.image_path, pair.label_path)
        on_progress("inspect", "chip", done, len(pairs))


def _shard_figures(
    source: RecordSource, checks: list[ShardCheck], sample_size: int, on_progress: OnProgress
) -> Iterator[ChipFigures | Problem]:
    """Figures of every record; appends each shard's `ShardCheck` to ``checks`` once it is read."""
    done = 0
    # Drawn before the first read, which imports TensorFlow (seconds).
    on_progress("inspect", "record", done, source.listed_records)
    for shard in source.shards:
        count, error = 0, None
        try:
            for serialized in read_shard(shard):
                index, count, done = count, count + 1, done + 1
                on_progress("inspect", "record", done, source.listed_records)
                try:
                    chip = decode_record(serialized, shard.split, source.dataset, f"{shard.path} record {index}")
                except TfchipsError as decode_error:
                    yield problem_of(decode_error, shard.path)
                    continue
                if source.dataset is not None and (contradiction := _contradiction(chip, source.dataset)):
                    message = f"record {index} {chip.name!r} contradicts {DATASET_JSON}: {contradiction}"
                    yield Problem(shard.path, message)
                yield chip_figures(chip, sample_size)
        except RecordError as read_error:
            error = str(read_error)
        checks.append(
            ShardCheck(os.path.basename(shard.path), shard.split, count, shard.records, shard_sha256(shard.path), shard.sha256, error)
        )


def _contradiction(chip: DecodedChip, dataset: DatasetInfo) -> str:
    """How a record's pixels differ from what dataset.json says (make_dataset reads by the latter); "" if not."""
    found = []
    for side, layout, spec in (("image", chip.image_layout, dataset.image), ("label", chip.label_layout, dataset.label)):
        differences = spec.differences(layout.encoding, layout.shape, layout.dtype, layout.band_names)
        if differences:
            found.append(f"{side} {', '.join(differences)}")
    return "; ".join(found)


def _shard_problems(source: RecordSource, checks: Sequence[ShardCheck]) -> list[Problem]:
    problems = []
    if source.dataset is None:
        problems.append(Problem(source.path, f"no {DATASET_JSON} beside the shards: record counts and SHA-256 not verified"))
    for path in source.unlisted:
        problems.append(Problem(path, f"shard not listed in {DATASET_JSON}"))
    for shard, check in zip(source.shards, checks):  # one check per shard, in order
        path = shard.path
        if check.error is not None:
            problems.append(problem_of(check.error, path))
        if check.expected_records is not None and check.records != check.expected_records:
            problems.append(Problem(path, f"{check.records} records read, {DATASET_JSON} says {check.expected_records}"))
        if check.expected_sha256 is not None and check.sha256 is not None and check.sha256 != check.expected_sha256:
            problems.append(Problem(path, f"SHA-256 {check.sha256} differs from {DATASET_JSON}'s {check.expected_sha256}"))
    if source.dataset is not None and os.path.isdir(source.path):  # the whole dataset, not a pattern
        for split in source.dataset.splits:
            if split.records != split.listed_records:
                problems.append(
                    Problem(
                        os.path.join(source.path, DATASET_JSON),
                        f"split {split.name}: {split.records} records, its shards list {split.listed_records}",
                    )
                )
    return problems


def inspect_dataset(
    path: str | os.PathLike, sample_size: int = SAMPLE_SIZE, on_progress: OnProgress = no_progress
) -> Inspection:
    """Decode every chip or record under ``path`` (see `open_dataset`) and gather its figures.

    Bad files do not stop the inspection: each becomes a `Problem` naming it
    (unpaired or corrupt chips, chips the manifest does not list or misses, missing
    or corrupt shards, shards whose record count or SHA-256 differs from dataset.json,
    records whose encoding, shape, dtype or bands differ from dataset.json's). A
    dataset.json that cannot be read raises `RecordError` naming it and the field.
    ``on_progress`` hears of each chip or record read (step ``"inspect"``).
    """
    source = open_dataset(path)
    if isinstance(source, ChipSource):
        counts = {"chips": len(source.folder.pairs), "unpaired": len(source.folder.unpaired)}
        return summarize(source, _folder_figures(source, sample_size, on_progress), counts, problems=_folder_problems(source), sample_size=sample_size)
    checks: list[ShardCheck] = []
    inspection = summarize(source, _shard_figures(source, checks, sample_size, on_progress), {}, checks, sample_size=sample_size)
    return dataclasses.replace(
        inspection,
        counts={"records": sum(c.records for c in checks), "shards": len(checks), **inspection.counts},
        problems=tuple(_shard_problems(source, checks)) + inspection.problems,
    )
