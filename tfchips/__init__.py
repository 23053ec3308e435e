"""tfchips: satellite imagery and vector ground truth to TensorFlow training data.

The main verbs are importable from here (``import tfchips; tfchips.create_samples(...)``).
Each loads its module on first use, so ``import tfchips`` loads neither TensorFlow nor Beam:
a job that only tiles or writes chips never pays for them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> (module, attribute). The reading verb is offered as `read_dataset` too:
# it reads shards, while `make_sample` and `create_samples` write.
_EXPORTS: dict[str, tuple[str, str]] = {
    # grid and areas
    "Tile": ("tfchips.grid", "Tile"),
    "tiles_for_shape": ("tfchips.grid", "tiles_for_shape"),
    "read_aoi": ("tfchips.aoi", "read_aoi"),
    # imagery and labels
    "ImageryRequest": ("tfchips.imagery", "ImageryRequest"),
    "imagery_for_tile": ("tfchips.imagery", "imagery_for_tile"),
    "open_source": ("tfchips.sources", "open_source"),
    "LabelRequest": ("tfchips.labels", "LabelRequest"),
    "load_ground_truth": ("tfchips.labels", "load_ground_truth"),
    # chip folders
    "SampleJob": ("tfchips.samples", "SampleJob"),
    "make_sample": ("tfchips.samples", "make_sample"),
    "create_samples": ("tfchips.samples", "create_samples"),
    "find_chip_pairs": ("tfchips.chips", "find_chip_pairs"),
    "read_chip": ("tfchips.chips", "read_chip"),
    # records and training
    "WriterOptions": ("tfchips.records", "WriterOptions"),
    "write_tfrecords": ("tfchips.records", "write_tfrecords"),
    "make_dataset": ("tfchips.parse", "make_dataset"),
    "read_dataset": ("tfchips.parse", "make_dataset"),
    "parse_example": ("tfchips.parse", "parse_example"),
    "write_prediction": ("tfchips.parse", "write_prediction"),
    # looking at the data
    "inspect_dataset": ("tfchips.inspect", "inspect_dataset"),
    "write_preview": ("tfchips.preview", "write_preview"),
    "write_report": ("tfchips.report", "write_report"),
    # demo data and errors
    "generate_demo_data": ("tfchips.demo_data", "generate"),
    "TfchipsError": ("tfchips.errors", "TfchipsError"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tfchips' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
