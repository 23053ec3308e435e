"""Chips and shards written to ``s3://`` on a loopback S3 server (moto) and read back.

The pipelines write through Beam's S3 filesystem (``apache-beam[aws]``, boto3); the test
reads objects back by boto3, and GDAL's ``/vsis3/`` reads chips where rasterio opens them.
The CLI's output for the same job, written locally, is what the objects must equal.
"""

import os
import subprocess

import numpy as np
import pytest

from beam_runners import entry_point, s3_server
from datasets import assert_same_chips, assert_same_dataset
from test_beam_create_samples import options
from test_beam_runners import RECORD_OPTIONS, expected  # noqa: F401 (fixture)

pytest.importorskip("boto3", reason="the test extra's apache-beam[aws] brings boto3 for Beam's S3 filesystem")
pytest.importorskip("moto", reason="the test extra's moto[server] is the loopback S3 server")

S3_SECONDS = 240


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(str(tmp_path_factory.mktemp("s3"))) as server:
        yield server


@pytest.fixture
def on_s3(s3, monkeypatch):
    """This process's boto3 and GDAL pointed at the loopback server; Beam's S3 options to pass."""
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    return s3


def download(s3, prefix: str, folder) -> str:
    """Every object under ``s3://bucket/prefix/`` into local ``folder``, by boto3."""
    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}/")
    for page in pages:
        for listed in page.get("Contents", []):
            local = os.path.join(folder, listed["Key"][len(prefix) + 1:])
            os.makedirs(os.path.dirname(local), exist_ok=True)
            client.download_file(s3.bucket, listed["Key"], local)
    return str(folder)


def run(s3, module: str, args: list[str]) -> None:
    """Run a pipeline's entry point as a command, as a person would: a new process knows no FileSystems options."""
    argv, env = entry_point(module, [*args, "--runner=DirectRunner", *s3.beam_args()])
    completed = subprocess.run(argv, env={**env, **s3.environment()}, capture_output=True, text=True, timeout=S3_SECONDS)
    assert completed.returncode == 0, completed.stderr[-3000:]


def upload(s3, folder, prefix: str) -> str:
    """A local folder's files under ``s3://bucket/prefix/``, by boto3."""
    client = s3.client()
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            client.upload_file(path, s3.bucket, f"{prefix}/{os.path.relpath(path, folder)}")
    return f"s3://{s3.bucket}/{prefix}"


@pytest.mark.timeout(S3_SECONDS)
def test_boto3_and_gdal_read_back_what_the_loopback_s3_holds(on_s3, expected, tmp_path):
    import rasterio

    url = upload(on_s3, expected.chips, "uploaded")
    back = download(on_s3, "uploaded", tmp_path / "back")
    assert_same_chips(str(expected.chips), back)
    name = sorted(os.listdir(expected.chips / "images"))[0]
    with rasterio.open(f"/vsis3/{url.removeprefix('s3://')}/images/{name}") as remote:
        with rasterio.open(expected.chips / "images" / name) as local:
            np.testing.assert_array_equal(remote.read(), local.read())
            assert (remote.transform, remote.crs) == (local.transform, local.crs)


@pytest.mark.timeout(S3_SECONDS)
def test_chip_folder_pipeline_writes_the_cli_chips_to_s3(demo, on_s3, expected, tmp_path):
    out = f"s3://{on_s3.bucket}/chips"
    run(on_s3, "beam_pipelines.create_training_samples", options(demo, out, expected.good, expected.catalog))
    assert_same_chips(str(expected.chips), download(on_s3, "chips", tmp_path / "back"))


@pytest.mark.timeout(S3_SECONDS)
def test_tiles_to_records_pipeline_writes_the_cli_dataset_to_s3(demo, on_s3, expected, tmp_path):
    bucket = f"s3://{on_s3.bucket}"
    run(on_s3, "beam_pipelines.create_training_samples",
        [*options(demo, f"{bucket}/job", expected.good, expected.catalog), "--tfrecords", f"{bucket}/tiles-records",
         *RECORD_OPTIONS])
    assert_same_dataset(str(expected.records), download(on_s3, "tiles-records", tmp_path / "back"))


@pytest.mark.timeout(S3_SECONDS)
def test_chips_to_tfrecords_pipeline_reads_and_writes_s3(on_s3, expected, tmp_path):
    chips = upload(on_s3, expected.chips, "chip-folder")
    out = f"s3://{on_s3.bucket}/chip-records"
    run(on_s3, "beam_pipelines.chips_to_tfrecords", [chips, "--out", out, *RECORD_OPTIONS])
    assert_same_dataset(str(expected.records), download(on_s3, "chip-records", tmp_path / "back"))
