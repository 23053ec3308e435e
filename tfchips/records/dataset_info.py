"""dataset.json both ways: `DatasetInfo`, the one validated, frozen reading of it, and its JSON form.

dataset.json is untrusted input (a folder from someone else, a file edited by hand):
`DatasetInfo.from_json` bounds its size before parsing it and its nesting as it
parses, then checks every field's type and range, and that every shard file lies
inside the dataset folder (`DatasetInfo.shard_paths` resolves symbolic links too). Each error is one `RecordError` line naming the file and the field
(``splits.train.shards[0].file``). ``format``, ``nodata``, ``parts``, ``features``
and ``legacy_payload`` may be left out: the last three follow from the rest, and
are refused when given and different. `DatasetInfo.as_json` is what the writer
publishes, so what is written is what is read.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from tfchips import storage
from tfchips.errors import RecordError
from tfchips.records.json_fields import JsonFields, deeper_than, frozen_json, show, thawed_json
from tfchips.records.raster_spec import MAX_BANDS, MAX_SIDE, RasterSpec
from tfchips.records.schema import SCHEMA_VERSION, SCHEMAS, feature_table, legacy_payload

DATASET_JSON = "dataset.json"
# Compression -> (TFRecordDataset compression type, shard file suffix).
COMPRESSIONS = {"none": ("", ".tfrecord"), "gzip": ("GZIP", ".tfrecord.gz"), "zlib": ("ZLIB", ".tfrecord.zz")}
# A dataset.json of 100,000 shards and 10,000 skipped chips is under 30 MB; nesting is 5 deep.
MAX_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_SHARDS = 99_999  # per split: shard names count them in five digits
MAX_RECORDS = 2**40
STATISTICS_SOURCES = ("manifest", "computed", "sample")


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A finished shard: file name (relative to the dataset folder), record count, SHA-256 of its bytes."""

    file: str
    records: int
    sha256: str | None

    def as_json(self) -> dict:
        return {"file": self.file, "records": self.records, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class SplitInfo:
    """One split: its name, the record count dataset.json states, and its shards in order."""

    name: str
    records: int
    shards: tuple[ShardInfo, ...]

    @property
    def listed_records(self) -> int:
        """Records its shards list (inspect reports a ``records`` that differs)."""
        return sum(shard.records for shard in self.shards)


@dataclass(frozen=True, slots=True)
class BadChip:
    """A chip that could not be turned into a record, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a TFRecord folder holds, as its dataset.json says (see `tfchips.records.writer`).

    ``class_names``, ``statistics`` and ``split`` are read-only mappings (tuples for
    JSON lists); ``splits`` keeps dataset.json's order.
    """

    schema: str
    image: RasterSpec
    label: RasterSpec
    splits: tuple[SplitInfo, ...] = ()
    compression: str = "none"
    schema_version: int = SCHEMA_VERSION
    tfchips_version: str | None = None
    class_names: Mapping[str, str] | None = None
    statistics: Mapping | None = None
    statistics_source: str | None = None
    split: Mapping | None = None
    skipped: tuple[BadChip, ...] = ()

    @property
    def features(self) -> dict[str, dict]:
        """dataset.json's ``features`` table (`tfchips.records.schema.feature_table`)."""
        return feature_table(self.schema, self.image, self.label)

    def split_named(self, name: str) -> SplitInfo | None:
        return next((split for split in self.splits if split.name == name), None)

    def shard_paths(self, folder: str | os.PathLike, split: str | None = None) -> list[str]:
        """Paths of the shards of ``split`` (or of all) in ``folder``, in order.

        `RecordError` for a split dataset.json does not have, or a shard whose path
        resolves (through a symbolic link) outside ``folder``.
        """
        folder = os.fspath(folder)
        chosen = self.splits if split is None else [self.split_named(split)]
        if None in chosen:
            raise RecordError(f"{folder}: no split {split!r}; it has {', '.join(s.name for s in self.splits)}")
        where = storage.join(folder, DATASET_JSON)
        root = None if storage.is_url(folder) else os.path.realpath(folder)
        paths = []
        for info in chosen:
            for index, shard in enumerate(info.shards):
                path = storage.join(folder, shard.file)
                if root is not None and os.path.commonpath([root, os.path.realpath(path)]) != root:
                    raise RecordError(
                        f"{where}: splits.{info.name}.shards[{index}].file: {show(shard.file)} resolves outside "
                        "the dataset folder (a symbolic link); shard files must lie inside it"
                    )
                paths.append(path)
        return paths

    def as_json(self) -> dict:
        """The dataset.json content, as the writer publishes it."""
        description = {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "tfchips_version": self.tfchips_version,
            "compression": self.compression,
            "image": self.image.as_json(),
            "label": self.label.as_json(),
            "features": self.features,
            "class_names": thawed_json(self.class_names),
            "statistics": thawed_json(self.statistics),
            "statistics_source": self.statistics_source,
            "split": thawed_json(self.split),
            "splits": {
                s.name: {"records": s.records, "shards": [shard.as_json() for shard in s.shards]} for s in self.splits
            },
            "skipped": [{"name": bad.name, "reason": bad.reason} for bad in self.skipped],
        }
        if self.schema == "legacy":
            description["legacy_payload"] = legacy_payload(self.image, self.label)
        return description

    @classmethod
    def from_json(cls, text: str | bytes, path: str = DATASET_JSON) -> DatasetInfo:
        """Parse and check dataset.json ``text``; ``path`` names it in errors.

        Raises `RecordError` for text over `MAX_BYTES`, not JSON, nested deeper
        than `MAX_DEPTH`, or not a dataset.json this version reads.
        """
        if len(text) > MAX_BYTES:
            raise RecordError(_too_large(path, len(text)))
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise RecordError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        too_deep = RecordError(f"{path}: JSON nested more than {MAX_DEPTH} deep")
        try:
            # Python's JSON parser raises RecursionError long before the stack is at risk.
            value = json.loads(text)
        except RecursionError:
            raise too_deep from None
        except ValueError as error:
            raise RecordError(f"{path}: not valid JSON ({str(error).splitlines()[0][:200]})") from None
        if deeper_than(value, MAX_DEPTH):
            raise too_deep
        return cls.from_mapping(value, path)

    @classmethod
    def from_mapping(cls, value, path: str = DATASET_JSON) -> DatasetInfo:
        """Check parsed dataset.json content (a dict, as `json.load` gives it); ``path`` names it in errors."""
        root = JsonFields(value, "", path)
        schema = root.choice("schema", SCHEMAS)
        version = root.integer("schema_version", 0, 2**31)
        if version != SCHEMA_VERSION:
            raise RecordError(f"{path}: schema_version: {version} is not the {SCHEMA_VERSION} this version reads")
        known = {"schema", "schema_version", "tfchips_version", "compression", "image", "label", "features"}
        known |= {"class_names", "statistics", "statistics_source", "split", "splits", "skipped", "legacy_payload"}
        unknown = sorted(set(root.value) - known)
        if unknown:
            raise RecordError(f"{path}: unknown field {show(unknown[0])}")
        info = cls(
            schema=schema,
            schema_version=version,
            tfchips_version=root.text("tfchips_version", optional=True),
            compression=root.choice("compression", tuple(COMPRESSIONS), optional=True, default="none"),
            image=RasterSpec.from_json(root.child("image")),
            label=RasterSpec.from_json(root.child("label")),
            class_names=_class_names(root.child("class_names", optional=True)),
            statistics=_statistics(root.child("statistics", optional=True)),
            statistics_source=root.choice("statistics_source", STATISTICS_SOURCES, optional=True),
            split=_split_rule(root.child("split", optional=True)),
            splits=tuple(_split(name, fields) for name, fields in root.child("splits").items()),
            skipped=tuple(_bad_chip(fields) for fields in root.child("skipped", optional=True, default=[]).elements()),
        )
        _check_derived(root, "features", info.features)
        if schema == "legacy":
            try:
                payload = legacy_payload(info.image, info.label)
            except RecordError as error:
                raise RecordError(f"{path}: image, label: {error}") from None
            _check_derived(root, "legacy_payload", payload)
        return info

    def __reduce__(self):
        # Its mappings are read-only proxies, which pickle cannot copy; the JSON form can.
        return DatasetInfo.from_mapping, (self.as_json(),)

    @classmethod
    def of(cls, value: DatasetInfo | Mapping, path: str = DATASET_JSON) -> DatasetInfo:
        """``value`` itself, or the dataset.json content ``value`` checked (`from_mapping`)."""
        return value if isinstance(value, DatasetInfo) else cls.from_mapping(value, path)


def read_dataset_info(folder: str | os.PathLike) -> DatasetInfo:
    """The checked dataset.json of a local TFRecord folder (see `DatasetInfo.from_json`).

    A dataset.json that is no regular file (a FIFO, a device) or is over
    `MAX_BYTES` is refused before it is read.
    """
    path = os.path.join(os.fspath(folder), DATASET_JSON)
    try:
        # Non-blocking, so that a FIFO named dataset.json is refused instead of waited on.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise RecordError(f"{path}: not a regular file")
            if status.st_size > MAX_BYTES:
                raise RecordError(_too_large(path, status.st_size))
            text = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise RecordError(f"{path}: cannot read dataset description ({error.strerror})") from None
    return DatasetInfo.from_json(text, path)


def shard_compression(name: str) -> str | None:
    """The compression (``none``, ``gzip``, ``zlib``) a shard file name's suffix says; None for no shard name."""
    return next((kind for kind, (_, suffix) in COMPRESSIONS.items() if name.endswith(suffix)), None)


def raster_specs(dataset: DatasetInfo | Mapping, path: str = DATASET_JSON) -> tuple[RasterSpec, RasterSpec]:
    """(image, label) specs of a `DatasetInfo`, or of a mapping that holds at least dataset.json's two."""
    if isinstance(dataset, DatasetInfo):
        return dataset.image, dataset.label
    root = JsonFields(dataset, "", path)
    return RasterSpec.from_json(root.child("image")), RasterSpec.from_json(root.child("label"))


# ---------------------------------------------------------------------------
# Checking fields
# ---------------------------------------------------------------------------


def _too_large(path: str, size: int) -> str:
    return f"{path}: {size:,} bytes, more than the {MAX_BYTES:,} a dataset.json may hold"


def _check_derived(root: JsonFields, key: str, expected) -> None:
    """A field that follows from the others: absent, or equal to ``expected``; the first entry that differs is named."""
    given = root.get(key, optional=True)
    if given is None or given == expected:
        return
    field = key
    if isinstance(given, dict) and isinstance(expected, dict):
        entry = next(k for k in [*expected, *given] if given.get(k) != expected.get(k))
        field, given, expected = f"{key}.{entry}", given.get(entry), expected.get(entry)
    message = f"{show(given)} does not follow from schema, image and label, which give {show(expected)}"
    raise root.error(message, field)


def _split(name: str, fields: JsonFields) -> SplitInfo:
    if not name.isidentifier():
        raise fields.error("split names are words (letters, digits, _)")
    shards = []
    for shard in fields.child("shards").elements(MAX_SHARDS):
        sha256 = shard.get("sha256", optional=True)
        if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise shard.error(f"{show(sha256)} is not a SHA-256 (64 hex digits)", f"{shard.field}.sha256")
        file = shard.child("file")
        shards.append(ShardInfo(_shard_file(file), shard.integer("records", 0, MAX_RECORDS), sha256))
    return SplitInfo(name, fields.integer("records", 0, MAX_RECORDS), tuple(shards))


def _shard_file(fields: JsonFields) -> str:
    """A shard path relative to the dataset folder, that cannot name anything outside it."""
    name = fields.as_text()
    if not name or "\0" in name or "\\" in name:
        raise fields.error(f"{show(name)} is not a file name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or storage.is_url(name):
        raise fields.error(f"{show(name)} is an absolute path; shard files must lie inside the dataset folder")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise fields.error(f"{show(name)} steps out of or around the dataset folder ('..', '.', '//')")
    return name


def _bad_chip(fields: JsonFields) -> BadChip:
    return BadChip(fields.text("name"), fields.text("reason"))


def _class_names(fields: JsonFields | None) -> Mapping[str, str] | None:
    if fields is None:
        return None
    entries = fields.items()
    if len(entries) > MAX_SIDE:
        raise fields.error(f"{len(entries):,} classes, more than {MAX_SIDE:,}")
    return frozen_json({value: name.as_text() for value, name in entries})


def _statistics(fields: JsonFields | None) -> Mapping | None:
    """Band statistics and class counts; the fields `make_dataset` and inspect use are type-checked."""
    if fields is None:
        return None
    for band in fields.child("bands", optional=True, default=[]).elements(MAX_BANDS):
        band.text("name")
        for key in ("mean", "std", "min", "max"):
            band.number(key)
    for _, count in fields.child("class_counts", optional=True, default={}).items():
        count.as_integer(0, 2**63)
    return frozen_json(fields.value)


def _split_rule(fields: JsonFields | None) -> Mapping | None:
    if fields is None:
        return None
    for _, fraction in fields.child("fractions").items():
        if not 0 < fraction.as_number() <= 1:
            raise fraction.error(f"{fraction.value} is not a fraction in (0, 1]")
    fields.text("by")
    fields.integer("seed", -(2**63), 2**64)
    return frozen_json(fields.value)


