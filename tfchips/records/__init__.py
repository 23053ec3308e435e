"""Chip folders to sharded TFRecords: schema, encoders, decoders, shard plan, writer.

- `schema`: the feature keys of a record (``tfchips`` and ``legacy`` schemas),
  `build_record`, `decode_example`, `feature_spec`.
- `codecs`: the ``bytes`` / ``png`` / ``array`` encodings and the TensorFlow and
  GDAL chip decoders.
- `geotiff`: GeoTIFF headers parsed from the file's bytes, and pixels of lossless
  GeoTIFFs decoded by libtiff, both without GDAL.
- `encoder`: `encode_chip_pair`, one chip pair to one serialized record (pure,
  picklable: the unit a Beam pipeline maps).
- `tfrecord`: TFRecord files framed, compressed and hashed without TensorFlow.
- `plan`: which split and shard each chip goes to, from its name and the seed (`split_of`,
  `shard_of`, `plan_shards`), and which chips the statistics sample.
- `options`: `WriterOptions` (the click options are `tfchips.options.record_options`).
- `shards`: `write_shard` and `finish_dataset`, the one shard writer of the local job and Beam.
- `chip_listing`: a chip folder listed, paired and read through Beam's FileSystems (any URL).
- `record_plan`: the worker steps of a chips-to-records pipeline, and its `RecordPlan`.
- `pool`: the local writer's ordered, memory-bounded worker pool.
- `raster_spec`: `RasterSpec`, the record format of one raster: encode, decode (numpy),
  decode in-graph (`graph_decoder`) and JSON both ways.
- `graph_decoder`: `decode_tensor`, one side of a record decoded in the TensorFlow graph.
- `dataset_info`: `DatasetInfo`, dataset.json read (checked) and written in one place.
- `json_fields`: typed reading of untrusted JSON, errors naming the file and field.
- `tfds_metadata`: ``features.json`` and ``dataset_info.json``, so TensorFlow Datasets reads the shards.
- `writer`: `write_tfrecords`, the local parallel writer of a chip folder.
"""

from tfchips.records.codecs import DECODERS, ENCODINGS, EncodedRaster, encode_png, png_channels
from tfchips.records.dataset_info import DatasetInfo, ShardInfo, SplitInfo, read_dataset_info
from tfchips.records.encoder import EncodedChip, RecordOptions, encode_chip_pair
from tfchips.records.plan import ShardPlan, assign_splits, parse_split_by, parse_splits, plan_shards, shards_for_size
from tfchips.records.raster_spec import RasterSpec
from tfchips.records.schema import (
    SCHEMA_VERSION,
    SCHEMAS,
    ChipExample,
    decode_example,
    feature_spec,
    feature_table,
)
from tfchips.records.tfds_metadata import tfds_unreadable, write_tfds_metadata
from tfchips.statistics import ChipStatistics, chip_statistics, statistics_json
from tfchips.records.writer import (
    COMPRESSIONS,
    DATASET_JSON,
    BadChip,
    WriterOptions,
    dataset_description,
    ordered_map,
    read_dataset_json,
    shard_file_name,
    shard_paths,
    worker_pool,
    write_dataset_json,
    write_tfrecords,
)

__all__ = [
    "COMPRESSIONS",
    "DATASET_JSON",
    "DECODERS",
    "ENCODINGS",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "BadChip",
    "ChipExample",
    "ChipStatistics",
    "DatasetInfo",
    "EncodedChip",
    "EncodedRaster",
    "RasterSpec",
    "RecordOptions",
    "ShardInfo",
    "ShardPlan",
    "SplitInfo",
    "WriterOptions",
    "assign_splits",
    "chip_statistics",
    "dataset_description",
    "decode_example",
    "encode_chip_pair",
    "encode_png",
    "feature_spec",
    "feature_table",
    "ordered_map",
    "parse_split_by",
    "parse_splits",
    "plan_shards",
    "png_channels",
    "read_dataset_info",
    "read_dataset_json",
    "shard_file_name",
    "shard_paths",
    "shards_for_size",
    "statistics_json",
    "tfds_unreadable",
    "worker_pool",
    "write_dataset_json",
    "write_tfds_metadata",
    "write_tfrecords",
]
