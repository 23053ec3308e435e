"""The first directory (IFD) of a TIFF file, read from its bytes, and what its tags would cost.

A TIFF's directory lists its tags with the type and count of each one's values, and
where they lie. Readers (tfchips' own GeoTIFF parser, libtiff under GDAL) allocate
those values whole, so the directory alone says how much memory opening the file
takes: 3,000 tags of 2 MB each, all pointing at the same bytes, ask for some 48 GB
as Python tuples, and cost libtiff a minute and 6 GB. `tag_bytes_problem` weighs
them against `tfchips.size_limits.TIFF_TAG_BYTES` before anything is read.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass

from tfchips.size_limits import TIFF_TAG_BYTES

# TIFF field type -> struct code and size in bytes (rationals are never needed).
FIELD_TYPES = {
    1: ("B", 1),
    2: ("s", 1),
    3: ("H", 2),
    4: ("I", 4),
    6: ("b", 1),
    7: ("B", 1),
    8: ("h", 2),
    9: ("i", 4),
    11: ("f", 4),
    12: ("d", 8),
    16: ("Q", 8),
    17: ("q", 8),
    18: ("Q", 8),
}
# Bytes read from the start of a file in search of its first directory before mapping the whole file.
_HEAD_BYTES = 16384


@functools.lru_cache(maxsize=8)
def _entry_struct(layout: str) -> struct.Struct:
    return struct.Struct(layout)


@dataclass(frozen=True)
class Directory:
    """The first IFD of a TIFF: byte order, word size (4, or 8 for BigTIFF), the offset of its
    first entry, the size of an entry, and its entries of the types in `FIELD_TYPES` as
    (position, tag, type, count, value or offset of the values)."""

    endian: str
    word_size: int
    first: int
    entry_size: int
    entries: list[tuple[int, int, int, int, int]]


def read_directory(data) -> Directory | None:
    """The first IFD of the TIFF file ``data`` (bytes, or a memory map); None if not a TIFF.

    Raises `struct.error` when the header or the directory lies past the end of ``data``.
    """
    order = data[:2]
    if order not in (b"II", b"MM"):
        return None
    endian = "<" if order == b"II" else ">"
    version = struct.unpack_from(endian + "H", data, 2)[0]
    # Classic TIFF: 16-bit entry count, 32-bit value counts and offsets; BigTIFF: all 64-bit.
    if version == 42:
        entries_code, word, word_size = "H", "I", 4
    elif version == 43:
        entries_code, word, word_size = "Q", "Q", 8
    else:
        return None
    ifd = struct.unpack_from(endian + word, data, 4 if version == 42 else 8)[0]
    count = struct.unpack_from(endian + entries_code, data, ifd)[0]
    first = ifd + struct.calcsize(entries_code)
    entry = _entry_struct(endian + "HH" + word + word)  # tag, type, count, value or its offset
    table = data[first : first + count * entry.size]
    if len(table) < count * entry.size:
        raise struct.error("short IFD")
    entries = [(index, *fields) for index, fields in enumerate(entry.iter_unpack(table)) if fields[1] in FIELD_TYPES]
    return Directory(endian, word_size, first, entry.size, entries)


def tag_bytes_problem(directory: Directory) -> str | None:
    """Why the directory's tag values are refused (more bytes than `TIFF_TAG_BYTES` allows), or None."""
    excess = TIFF_TAG_BYTES.excess(sum(FIELD_TYPES[kind][1] * count for _, _, kind, count, _ in directory.entries))
    return f"the tags of its first TIFF directory hold {excess}" if excess else None


def tiff_file_problem(path: str) -> str | None:
    """`tag_bytes_problem` of the local file ``path``, for a raster about to be opened by GDAL;
    None for anything else (not a TIFF, unreadable, truncated: GDAL's to report). Only the
    header and the directory are read."""
    try:
        with open(path, "rb") as stream:
            try:
                # GDAL writes the first directory right after the header: one read finds it.
                directory = read_directory(stream.read(_HEAD_BYTES))
            except struct.error:
                with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    directory = read_directory(data)
    except (OSError, ValueError, struct.error):  # unreadable, empty (mmap's ValueError) or truncated
        return None
    return tag_bytes_problem(directory) if directory is not None else None
