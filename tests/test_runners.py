"""`tfchips.runners.check_runner`: what a Beam entry point refuses before it builds a pipeline."""

import pytest

from tfchips import runners
from tfchips.errors import ConfigError

DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=r"]


@pytest.fixture
def gcp_installed(monkeypatch):
    # The gcp extra is not in the test extra; what follows its check is what is tested here.
    monkeypatch.setattr(runners, "_gcp_installed", lambda: True)


@pytest.mark.parametrize(("name", "path", "advice"), [
    ("labels", "demo/labels.gpkg", "give a gs:// URL"),
    ("catalog", "/data/catalog.json", "give a gs:// URL"),
    ("tiles_path", "tiles.txt", "give the area as `aoi_path` or `bbox`"),
])
def test_dataflow_workers_cannot_read_a_local_input(gcp_installed, name, path, advice):
    inputs = {"labels": "gs://b/labels.gpkg", "catalog": "https://example.com/catalog.json", name: path}
    with pytest.raises(ConfigError) as raised:
        runners.check_runner(DATAFLOW, ("gs://b/out",), inputs)
    assert str(raised.value) == f"`{name}` {path} is a local file, which Dataflow's workers cannot read: {advice}"


def test_urls_vsi_paths_and_earthone_products_are_fine_on_dataflow_and_local_files_elsewhere(gcp_installed):
    remote = {"labels": "/vsigs/b/labels.gpkg", "catalog": "earthone:sentinel-2", "tiles_path": None,
              "extent": "s3://b/extent.gpkg"}
    runners.check_runner(DATAFLOW, ("gs://b/out",), remote)
    runners.check_runner(["--runner=DirectRunner"], ("out",), {"labels": "labels.gpkg", "tiles_path": "t.txt"})
