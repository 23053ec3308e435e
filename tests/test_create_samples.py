import json
import os
import shutil

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

import tfchips.samples
from tfchips.cli.main import cli
from tfchips.grid import filename_to_key, tiles_for_shape
from tfchips.aoi import bbox_geometry
from tfchips.manifest import manifest_rows

CLASSES = "0=background,1=building,2=water,3=vegetation"


def options(demo, out, *extra):
    return [
        "create-samples", "--bbox", ",".join(map(str, demo.bbox)), "--resolution", "10", "--tilesize", "32",
        "--pad", "4", "--catalog", demo.catalog, "--bands", ",".join(demo.bands), "--start", demo.start,
        "--end", demo.end, "--mask-asset", demo.mask_asset, "--mask-values", ",".join(map(str, demo.mask_values)),
        "--method", "closest", "--reference-date", demo.reference_date, "--labels", demo.labels,
        "--attribute", demo.attribute, "--classes", CLASSES, "--out", str(out), "--workers", "1", *extra,
    ]


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read()


def folder_pixels(out):
    return {
        os.path.join(sub, name): read(os.path.join(out, sub, name))
        for sub in ("images", "labels")
        for name in sorted(os.listdir(os.path.join(out, sub)))
    }


@pytest.fixture(scope="module")
def reference_run(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "chips"
    result = run(options(demo, out))
    assert result.exit_code == 0, result.output
    return out


def test_every_tile_becomes_a_chip_pair_named_by_key(demo, reference_run):
    tiles = tiles_for_shape(bbox_geometry(demo.bbox), 10.0, 32, 4)
    names = sorted(os.listdir(reference_run / "images"))
    assert names == sorted(n for n in os.listdir(reference_run / "labels") if n.endswith(".tif"))  # .vrt: ESRI views
    assert sorted(filename_to_key(n) for n in names) == sorted(t.key for t in tiles)
    with rasterio.open(reference_run / "images" / names[0]) as image:
        assert (image.width, image.height, image.count) == (40, 40, 4)
        assert image.descriptions == demo.bands and image.dtypes[0] == "uint16"
        tile = next(t for t in tiles if t.key == filename_to_key(names[0]))
        assert image.transform == tile.transform and image.crs.to_string() == tile.crs


def test_manifest_statistics_equal_numpy_over_the_chips(reference_run):
    manifest = json.loads((reference_run / "manifest.json").read_text())
    images = [read(reference_run / "images" / n) for n in sorted(os.listdir(reference_run / "images"))]
    labels = [read(reference_run / "labels" / n)[0] for n in sorted(os.listdir(reference_run / "images"))]
    nodata = rasterio.open(next((reference_run / "images").iterdir())).nodata
    valid = [~np.any(image == nodata, axis=0) for image in images]
    for index, band in enumerate(manifest["statistics"]["bands"]):
        values = np.concatenate([im[index][va] for im, va in zip(images, valid)]).astype(float)
        assert band["count"] == values.size
        assert band["mean"] == pytest.approx(values.mean())
        assert band["std"] == pytest.approx(values.std())
        assert (band["min"], band["max"]) == (values.min(), values.max())
    all_labels = np.concatenate([la.ravel() for la in labels])
    # Pixels without imagery hold the ignore value, which class counts leave out.
    assert manifest["ignore_value"] == 255 and (all_labels == 255).any()
    expected = {str(v): int(c) for v, c in zip(*np.unique(all_labels, return_counts=True)) if v != 255}
    assert manifest["statistics"]["class_counts"] == expected
    assert manifest["class_names"] == {"0": "background", "1": "building", "2": "water", "3": "vegetation"}
    assert manifest["counts"]["written"] == len(images)
    for entry in manifest_rows(str(reference_run)):
        assert entry["scenes"] and 0 < entry["valid_fraction"] <= 1
    config = yaml.safe_load((reference_run / "config.yaml").read_text())
    assert config["tilesize"] == 32 and config["catalog"]


def test_resume_after_a_simulated_kill_redoes_only_unfinished_tiles(demo, reference_run, tmp_path, monkeypatch):
    out = tmp_path / "chips"
    shutil.copytree(reference_run, out)
    names = sorted(os.listdir(out / "images"))
    # A kill leaves: finished pairs, an image whose label never came, and a temporary file.
    (out / "labels" / names[0]).unlink()
    (out / "images" / names[1]).unlink()
    (out / "labels" / names[1]).unlink()
    (out / "images" / ".partial-x1y2.tif").write_bytes(b"truncated")
    (out / "manifest.json").unlink()
    calls = []
    original = tfchips.samples.imagery_for_tile
    monkeypatch.setattr(tfchips.samples, "imagery_for_tile", lambda tile, request: calls.append(tile.key) or original(tile, request))
    result = run(options(demo, out))
    assert result.exit_code == 0, result.output
    assert sorted(calls) == sorted(filename_to_key(n) for n in names[:2])
    assert f"{len(names)} written ({len(names) - 2} from an earlier run)" in result.output
    assert not any(name.startswith(".partial-") for name in os.listdir(out / "images"))
    resumed, reference = folder_pixels(out), folder_pixels(reference_run)
    assert resumed.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name])
    assert json.loads((out / "manifest.json").read_text())["statistics"] == json.loads(
        (reference_run / "manifest.json").read_text()
    )["statistics"]


def test_overwrite_redoes_everything(demo, reference_run, tmp_path, monkeypatch):
    out = tmp_path / "chips"
    shutil.copytree(reference_run, out)
    calls = []
    original = tfchips.samples.imagery_for_tile
    monkeypatch.setattr(tfchips.samples, "imagery_for_tile", lambda tile, request: calls.append(1) or original(tile, request))
    assert run(options(demo, out, "--overwrite")).exit_code == 0
    assert len(calls) == len(os.listdir(out / "images"))


def test_min_labelled_skips_tiles_and_records_why(demo, reference_run, tmp_path):
    out = tmp_path / "chips"
    result = run(options(demo, out, "--min-labelled", "0.05"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = [t for t in manifest_rows(str(out)) if t["status"] == "skipped"]
    assert skipped and all("min-labelled" in t["reason"] for t in skipped)
    reference = {t["key"]: t for t in manifest_rows(str(reference_run))}
    assert {t["key"] for t in skipped} == {k for k, t in reference.items() if t["labelled_fraction"] < 0.05}
    assert len(os.listdir(out / "images")) == manifest["counts"]["written"] == len(reference) - len(skipped)
    assert manifest["parameters"]["min_labelled"] == 0.05


def test_tiles_file_rebuilds_the_same_tiles_and_yaml_config_supplies_options(demo, reference_run, tmp_path):
    keys = sorted(filename_to_key(n) for n in os.listdir(reference_run / "images"))[:3]
    (tmp_path / "tiles.txt").write_text("\n".join(keys) + "\n")
    args = options(demo, tmp_path / "chips")
    config = {"catalog": demo.catalog, "bands": list(demo.bands), "mask-asset": demo.mask_asset}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    for flag in ("--catalog", "--bands", "--mask-asset", "--bbox", "--resolution", "--tilesize", "--pad"):
        index = args.index(flag)
        del args[index : index + 2]
    result = run([*args, "--tiles", tmp_path / "tiles.txt", "--config", tmp_path / "job.yaml"])
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(tmp_path / "chips" / "images"))
    assert [filename_to_key(n) for n in names] == keys
    for name in names:
        np.testing.assert_array_equal(read(tmp_path / "chips" / "images" / name), read(reference_run / "images" / name))


def test_a_tile_no_scene_covers_is_skipped_with_its_reason(demo, tmp_path):
    far_away = "256:0:10.0:13:-132:7000"  # no scene covers it
    (tmp_path / "tiles.txt").write_text(far_away + "\n")
    args = options(demo, tmp_path / "chips")
    for flag in ("--bbox", "--resolution", "--tilesize", "--pad"):
        index = args.index(flag)
        del args[index : index + 2]
    result = run([*args, "--tiles", tmp_path / "tiles.txt"])
    assert result.exit_code == 0, result.output
    assert "0 written (0 from an earlier run), 1 skipped, 0 failed" in result.output
    assert next(manifest_rows(str(tmp_path / "chips"))) == {
        "key": far_away, "status": "skipped", "reason": "no scene covers the tile", "valid_fraction": 0.0
    }


def test_two_workers_write_the_same_chips(demo, reference_run, tmp_path):
    out = tmp_path / "chips"
    args = options(demo, out)
    args[args.index("--workers") + 1] = "2"
    result = run(args)
    assert result.exit_code == 0, result.output
    parallel, reference = folder_pixels(out), folder_pixels(reference_run)
    assert parallel.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(parallel[name], reference[name])


def test_unknown_config_key_is_a_clear_error(demo, tmp_path):
    (tmp_path / "job.yaml").write_text("catalogue: x\n")
    result = run([*options(demo, tmp_path / "out"), "--config", tmp_path / "job.yaml"])
    assert result.exit_code == 2 and "unknown option 'catalogue'" in result.output


def test_a_tile_no_longer_written_loses_its_old_chips(demo, reference_run, tmp_path):
    out = tmp_path / "chips"
    shutil.copytree(reference_run, out)
    result = run(options(demo, out, "--min-labelled", "0.9", "--overwrite"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 0
    assert os.listdir(out / "images") == [] and os.listdir(out / "labels") == []
    assert not (out / "map.txt").exists() and not (out / "esri_model_definition.emd").exists()


def test_resumed_chips_are_held_to_the_new_thresholds(demo, reference_run, tmp_path):
    out = tmp_path / "chips"
    shutil.copytree(reference_run, out)
    result = run(options(demo, out, "--min-labelled", "0.05"))
    assert result.exit_code == 0, result.output
    reference = {t["key"]: t for t in manifest_rows(str(reference_run))}
    kept = {k for k, t in reference.items() if t["labelled_fraction"] >= 0.05}
    assert 0 < len(kept) < len(reference)
    assert {filename_to_key(n) for n in os.listdir(out / "images")} == kept
    assert {t["key"] for t in manifest_rows(str(out)) if t["status"] == "written" and t["resumed"]} == kept


def test_chips_made_with_other_bands_are_made_again(demo, reference_run, tmp_path):
    out = tmp_path / "chips"
    shutil.copytree(reference_run, out)
    args = options(demo, out)
    args[args.index("--bands") + 1] = "red,green,blue"
    refused = run(args)  # the folder's manifest records other --bands: only --overwrite remakes its chips
    assert refused.exit_code == 1 and '--bands ["blue", "green", "red", "nir"] there' in refused.output
    result = run([*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "(0 from an earlier run)" in result.output
    for name in os.listdir(out / "images"):
        with rasterio.open(out / "images" / name) as image:
            assert image.descriptions == ("red", "green", "blue")


def test_config_keys_use_option_names_lists_and_mappings(demo, reference_run, tmp_path):
    aoi = tmp_path / "aoi.geojson"
    west, south, east, north = demo.bbox
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]}}]}))
    config = {
        "aoi": str(aoi),
        "classes": {0: "background", 1: "building", 2: "water", 3: "vegetation"},
        "merge": [{"catalog": demo.catalog, "bands": list(demo.bands)}],
        "mask_values": list(demo.mask_values),
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    args = options(demo, tmp_path / "chips")
    for flag in ("--bbox", "--classes", "--mask-values"):
        index = args.index(flag)
        del args[index : index + 2]
    result = run([*args, "--config", tmp_path / "job.yaml"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "chips" / "images")) == sorted(os.listdir(reference_run / "images"))
    manifest = json.loads((tmp_path / "chips" / "manifest.json").read_text())
    assert manifest["class_names"]["2"] == "water"


def test_tiles_on_the_command_line_replace_the_area_of_a_config(demo, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(demo.job_options(str(tmp_path / "chips"))))
    key = "64:0:10.0:13:-132:6170"
    (tmp_path / "tiles.txt").write_text(key + "\n")
    result = run(["create-samples", "--config", config, "--tiles", tmp_path / "tiles.txt", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert [filename_to_key(n) for n in os.listdir(tmp_path / "chips" / "images")] == [key]

