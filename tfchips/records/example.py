"""``tf.train.Example`` messages serialized without TensorFlow.

Worker processes build records without importing TensorFlow (seconds per
process), and features are written in sorted key order so that a record's bytes
depend only on its content: protobuf's own map serialization order is not
guaranteed. The output parses with ``tf.train.Example.FromString`` and
``tf.io.parse_example``.
"""

from __future__ import annotations

import functools
from typing import Iterable, Mapping, Sequence

import numpy as np

# A serialized message as a list of chunks, joined once at the end so that large
# payloads are copied a single time.
Chunks = list[bytes]


def _encode_varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Tags, lengths and small values repeat in every record: look them up.
_SMALL = [_encode_varint(n) for n in range(1 << 14)]


def _varint(value: int) -> bytes:
    return _SMALL[value] if 0 <= value < 16384 else _encode_varint(value)


def _field(number: int, chunks: Chunks) -> Chunks:
    """Length-delimited field ``number`` holding ``chunks``.

    Small chunks are merged with the field's header; large payloads stay separate
    so that they are copied only once, by the final join.
    """
    header = _varint(number << 3 | 2) + _varint(sum(map(len, chunks)))
    if chunks and len(chunks[0]) < 4096:
        return [header + chunks[0], *chunks[1:]]
    return [header, *chunks]


@functools.lru_cache(maxsize=1024)
def _name_field(name: str) -> bytes:
    return _field(1, [name.encode("utf-8")])[0]


def bytes_feature(values: Sequence[bytes]) -> Chunks:
    """A ``Feature`` with a ``BytesList``."""
    listed: Chunks = []
    for value in values:
        listed += _field(1, [bytes(value)])
    return _field(1, listed)


def int64_feature(values: Iterable[int]) -> Chunks:
    """A ``Feature`` with a packed ``Int64List``."""
    return _field(3, _field(1, [b"".join(_varint(int(v)) for v in values)]))


def float_feature(values: np.ndarray) -> Chunks:
    """A ``Feature`` with a packed ``FloatList`` of float32 values."""
    return _field(2, _field(1, [np.ascontiguousarray(values, dtype="<f4").tobytes()]))


# Features up to this size are serialized once per distinct value: the dtypes,
# shapes and band names of a folder's records repeat from one record to the next.
_MEMO_BYTES = 512


@functools.lru_cache(maxsize=4096)
def _small_entry(name: str, feature: bytes) -> bytes:
    return b"".join(_field(1, [_name_field(name), *_field(2, [feature])]))


def serialize_example(features: Mapping[str, Chunks]) -> bytes:
    """Serialized ``tf.train.Example`` with ``features`` (name -> feature chunks), sorted by name."""
    entries: Chunks = []
    for name in sorted(features):
        feature = features[name]
        if sum(map(len, feature)) <= _MEMO_BYTES:
            entries.append(_small_entry(name, b"".join(feature)))
        else:
            entries += _field(1, [_name_field(name), *_field(2, feature)])
    return b"".join(_field(1, entries))
