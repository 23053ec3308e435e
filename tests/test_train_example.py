"""examples/train_unet.py on a tiny demo dataset: it trains, reports, and writes georeferenced predictions."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from tfchips.cli.main import cli
from tfchips.demo_data import generate
from tfchips.records import (
    RecordOptions,
    WriterOptions,
    read_dataset_json,
    write_tfrecords,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "train_unet.py")


def load_example():
    spec = importlib.util.spec_from_file_location("train_unet", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory):
    """The demo's 16 chips of 64 px, the east of the area unsurveyed (labels 255 there), as records."""
    root = tmp_path_factory.mktemp("demo")
    demo = generate(str(root / "data"), seed=0)
    west, south, east, north = demo.bbox
    extent = root / "extent.geojson"
    surveyed = shapely.box(west - 0.01, south - 0.01, west + 0.7 * (east - west), north + 0.01)
    extent.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(surveyed)}]}))
    args = ["create-samples", "--extent", str(extent), "--workers", "1"]
    for name, value in demo.job_options(str(root / "chips")).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    options = WriterOptions(records=RecordOptions("array"), shards=1, splits={"train": 0.75, "val": 0.25}, seed=2, workers=1)
    write_tfrecords(root / "chips", root / "records", options)
    return root


def test_the_example_trains_reports_and_predicts_on_the_chips_grid(demo_records, capsys):
    description = read_dataset_json(demo_records / "records")
    assert description["label"]["nodata"] == 255  # the ignored pixels the example weighs 0
    out = demo_records / "predictions"
    code = load_example().main([str(demo_records / "records"), "--epochs", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    epochs = re.findall(r"^epoch (\d)/3  loss ([\d.]+)  mean_iou ([\d.]+)  val_loss [\d.]+  val_mean_iou [\d.]+$",
                        printed, re.MULTILINE)
    assert [e[0] for e in epochs] == ["1", "2", "3"], printed
    losses = [float(e[1]) for e in epochs]
    assert losses[-1] < losses[0], printed
    assert all(0.0 <= float(e[2]) <= 1.0 for e in epochs)

    names = sorted(os.listdir(out))
    assert len(names) == description["splits"]["val"]["records"] == 4
    for name in names:
        with rasterio.open(out / name) as prediction, rasterio.open(demo_records / "chips" / "labels" / name) as chip:
            assert (prediction.crs, prediction.transform, prediction.shape) == (chip.crs, chip.transform, chip.shape)
            classes = prediction.read(1)
            assert prediction.dtypes[0] == "uint8" and classes.max() < 4
            assert np.isin(classes, [0, 1, 2, 3]).all()
