"""The record sink's unit: a `tfchips.samples.Sample` encoded as a TFRecord, in memory.

The record holds what ``tfchips to-tfrecords`` makes of the chip pair the chip-folder
sink would write for the same sample: the same GeoTIFF bytes
(`tfchips.chip_folder.sample_geotiffs`) go through the same encoder, so the records
are byte-identical, with no chip written and read back.
"""

from __future__ import annotations

import dataclasses

from tfchips.chip_folder import chip_paths, sample_geotiffs
from tfchips.chips import ChipPair
from tfchips.errors import ChipError
from tfchips.grid import key_to_filename
from tfchips.manifest import ChipRecord
from tfchips.records.encoder import ChipFile, ChipFiles, EncodedChip, RecordOptions, encode_chip_files
from tfchips.redaction import redact_text
from tfchips.samples import Sample


def encode_sample(sample: Sample, options: RecordOptions, out: str = "") -> EncodedChip:
    """The record of a written ``sample``, per ``options``.

    ``out`` is the chip folder the pair would lie in; it only names the chips in errors.
    Raises `tfchips.errors.ChipError` when the chips cannot be encoded.
    """
    key = sample.tile.key
    image_path, label_path = chip_paths(out, key)
    image, label = sample_geotiffs(sample)
    pair = ChipPair(key_to_filename(key), key, image_path, label_path)
    # A chip folder's GeoTIFFs carry no .aux.xml beside them: neither do these.
    return encode_chip_files(ChipFiles(pair, ChipFile(image_path, image, False), ChipFile(label_path, label, False)), options)


def sample_record(sample: Sample, options: RecordOptions, out: str = "") -> tuple[ChipRecord, EncodedChip | None]:
    """The manifest row of ``sample`` and, when it was written, its record (`encode_sample`).

    A sample whose chips cannot be encoded comes back ``failed`` with the (redacted) reason
    and no record: one bad tile fails only itself.
    """
    if sample.record.status != "written":
        return sample.record, None
    try:
        return sample.record, encode_sample(sample, options, out)
    except ChipError as error:
        return dataclasses.replace(sample.record, status="failed", reason=redact_text(str(error))), None
