"""A chip folder read through Apache Beam's FileSystems: a local path or any URL Beam knows.

The Beam pipeline lists ``images/*`` and ``labels/*`` with `FileSystems.match`
in its workers and pairs the files by stem, one stem at a time, by the rules of
`tfchips.chips.find_chip_pairs`: only files with a suffix in `CHIP_SUFFIXES`
are chips, hidden files are not, and an ``.aux.xml`` beside a chip is noted,
as GDAL would read it. Nothing here calls ``os``: every path goes through
FileSystems, whose paths use ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from tfchips.chips import (
    CHIP_SUFFIXES,
    ESRI_STATS_MAX_BYTES,
    ESRI_STATS_NAME,
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_NAME,
    NOT_UTF8,
    ChipManifest,
    ChipPair,
    check_esri_statistics,
    chip_key,
    parse_manifest,
    printable_path,
)
from tfchips.errors import ChipError
from tfchips.records.dataset_info import BadChip
from tfchips.records.encoder import ChipFile, ChipFiles

_AUX = ".aux.xml"
# A manifest is kilobytes to a few megabytes; this bounds what a hostile one costs.
_MANIFEST_MAX_BYTES = 256 * 1024 * 1024


def _file_systems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A file under ``images/`` or ``labels/``: its side, path, size in bytes; ``aux`` for a GDAL sidecar."""

    side: str
    path: str
    size: int
    aux: bool = False


@dataclass(frozen=True, slots=True)
class ListedPair:
    """A chip pair as listed: its paths, their bytes together, and which have an ``.aux.xml``."""

    pair: ChipPair
    size: int
    image_aux: bool
    label_aux: bool

    @property
    def name(self) -> str:
        return self.pair.name


def chip_globs(root: str) -> list[str]:
    """The two patterns that list a chip folder's files."""
    join = _file_systems().join
    return [join(root, IMAGES_DIR, "*"), join(root, LABELS_DIR, "*")]


def _stem_and_suffix(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if dot and stem else (name, "")


def listed_file(path: str, size: int) -> Iterator:
    """(stem, `ListedFile`) of a chip or sidecar file a match found, a `BadChip` for a name not UTF-8, or nothing.

    (The return hint is plain: Beam checks hints, and the two kinds are told apart downstream.)
    """
    split = _file_systems().split
    folder, name = split(path)
    side = split(folder)[1]
    aux = name.lower().endswith(_AUX)
    stem, suffix = _stem_and_suffix(name[: -len(_AUX)] if aux else name)
    # Hidden files are temporary chips of a running job, or macOS "._" resource forks.
    if suffix.lower() not in CHIP_SUFFIXES or name.startswith(".") or side not in (IMAGES_DIR, LABELS_DIR):
        return
    if printable_path(path) != path:
        yield BadChip(f"{side}/{printable_path(name)}", NOT_UTF8)
        return
    yield stem, ListedFile(side, path, size, aux)


def pair_files(stem: str, files: Iterable[ListedFile]) -> Iterator:
    """The `ListedPair` of the files of one stem, or a `BadChip` for a file without a twin.

    Raises `ChipError` when two chips of one side share the stem.
    """
    files = list(files)
    chips = {}
    for file in sorted((f for f in files if not f.aux), key=lambda f: f.path):
        if file.side in chips:
            raise ChipError(
                f"{file.path}: two chips share the name {stem!r} "
                f"({_file_systems().split(chips[file.side].path)[1]} and {_file_systems().split(file.path)[1]})"
            )
        chips[file.side] = file
    if len(chips) == 1:
        (file,) = chips.values()
        yield BadChip(f"{file.side}/{_file_systems().split(file.path)[1]}", "unpaired: no chip of the same name on the other side")
        return
    if not chips:
        return  # a sidecar without its chip
    image, label = chips[IMAGES_DIR], chips[LABELS_DIR]
    auxes = {f.path for f in files if f.aux}
    yield ListedPair(
        ChipPair(stem, chip_key(stem), image.path, label.path),
        image.size + label.size,
        image.path + _AUX in auxes,
        label.path + _AUX in auxes,
    )


def read_listed_pair(listed: ListedPair) -> ChipFiles:
    """The two files of a listed pair, read through FileSystems; `ChipError` naming a file that cannot be."""
    pair = listed.pair
    return ChipFiles(
        pair, ChipFile(pair.image_path, _read(pair.image_path), listed.image_aux),
        ChipFile(pair.label_path, _read(pair.label_path), listed.label_aux),
    )


def _read(path: str, limit: int | None = None) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes

    try:
        with _file_systems().open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            return stream.read() if limit is None else stream.read(limit)
    except (OSError, IOError) as error:
        raise ChipError(f"{path}: cannot read chip file ({first_line(error)})") from None


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _existing(pattern: str) -> list[str]:
    """Paths matching ``pattern``, sorted; none where the folder does not exist."""
    try:
        found = _file_systems().match([pattern])[0].metadata_list
    except Exception:  # Beam raises BeamIOError for a pattern matching nothing on some file systems
        return []
    return sorted(m.path for m in found)


def read_folder_metadata(root: str) -> ChipManifest:
    """`check_esri_statistics` and the `ChipManifest` of a chip folder at a path or URL (three small reads)."""
    join = _file_systems().join
    for path in _existing(join(root, ESRI_STATS_NAME)):
        check_esri_statistics(_read(path, ESRI_STATS_MAX_BYTES + 1), path)
    # An object store lists every object under the prefix to match "*.emd": only without a manifest.json.
    manifests = _existing(join(root, MANIFEST_NAME)) or [
        p for p in _existing(join(root, "*")) if p.lower().endswith(".emd")
    ]
    if not manifests:
        return ChipManifest(statistics=None, class_names=None)
    content = _read(manifests[0], _MANIFEST_MAX_BYTES + 1)
    if len(content) > _MANIFEST_MAX_BYTES:
        raise ChipError(f"{manifests[0]}: chip manifest over {_MANIFEST_MAX_BYTES // 2**20} MiB")
    return parse_manifest(content, manifests[0])
