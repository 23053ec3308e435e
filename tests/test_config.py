"""``--config``: paths relative to the file, both key styles, the annotated example, config.yaml."""

import os
import re
import shutil
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from tfchips.config_file import config_key
from tfchips.cli.create_samples import command as create_samples
from tfchips.cli.main import cli
from tfchips.job import with_area_from_command_line

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "job.example.yaml"
ONE_TILE = "64:0:10.0:13:-132:6170"


def parsed(args: list[str]) -> dict:
    """Option values of ``create-samples ARGS`` as the command would get them (nothing runs)."""
    with create_samples.make_context("create-samples", [str(a) for a in args]) as ctx:
        return ctx.params


def test_config_paths_resolve_against_its_folder_command_line_paths_against_the_working_directory(tmp_path, monkeypatch):
    job = tmp_path / "p" / "demo" / "job.yaml"
    job.parent.mkdir(parents=True)
    job.write_text(yaml.safe_dump({
        "catalog": "catalog.json", "labels": "truth/labels.gpkg", "extent": "../extent.gpkg", "aoi": "aoi.geojson",
        "out": "samples", "bands": "red",
        "merge": [{"catalog": "landsat/catalog.json", "bands": ["red"]}, {"collection": "x"}],
        "stack": ["catalog=dem/catalog.json bands=elevation", "catalog=https://h/dem.json bands=z"],
    }, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    values = parsed(["--config", "p/demo/job.yaml"])
    folder = os.path.join("p", "demo")
    assert values["catalog"] == os.path.join(folder, "catalog.json")
    assert values["labels"] == os.path.join(folder, "truth", "labels.gpkg")
    assert values["extent"] == os.path.join("p", "extent.gpkg")
    assert values["aoi_path"] == os.path.join(folder, "aoi.geojson")
    assert values["out"] == os.path.join(folder, "samples")
    assert values["merge"] == (f"catalog={folder}/landsat/catalog.json bands=red", "collection=x")
    assert values["stack"] == (f"catalog={folder}/dem/catalog.json bands=elevation", "catalog=https://h/dem.json bands=z")
    values = parsed(["--config", "p/demo/job.yaml", "--labels", "mine.gpkg", "--out", "chips", "--tiles", "t.txt"])
    assert (values["labels"], values["out"], values["tiles_path"]) == ("mine.gpkg", "chips", "t.txt")


@pytest.mark.parametrize("catalog", [
    "https://user:pw@example.com/catalog.json", "earthone:esa:sentinel-2:l2a:v1", "/data/stac/catalog.json", "/vsis3/b/c.json",
])
def test_urls_products_and_absolute_paths_in_a_config_are_taken_as_they_are(tmp_path, catalog):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"catalog": catalog, "labels": "/abs/l.gpkg", "out": "gs://b/chips"}))
    values = parsed(["--config", tmp_path / "job.yaml"])
    assert (values["catalog"], values["labels"], values["out"]) == (catalog, "/abs/l.gpkg", "gs://b/chips")


def test_snake_case_and_kebab_case_keys_mean_the_same(tmp_path):
    snake = {"max_cloud": 20, "mask_values": [3, 8], "reference_date": "2023-06-15", "min_valid": 0.5, "all_touched": True,
             "labels": "l.gpkg", "out": "o"}
    (tmp_path / "snake.yaml").write_text(yaml.safe_dump(snake))
    (tmp_path / "kebab.yaml").write_text(yaml.safe_dump({k.replace("_", "-"): v for k, v in snake.items()}))
    from_snake, from_kebab = parsed(["--config", tmp_path / "snake.yaml"]), parsed(["--config", tmp_path / "kebab.yaml"])
    assert from_snake == from_kebab
    assert (from_snake["max_cloud"], from_snake["mask_values"], from_snake["min_valid"], from_snake["all_touched"]) == (
        20.0, "3,8", 0.5, True)


def _example_keys() -> tuple[list[str], list[str]]:
    """Keys the example sets, and keys it shows commented out (``# key: value``)."""
    text = EXAMPLE.read_text()
    commented = re.findall(r"^#\s*([a-z_]+):", text, flags=re.MULTILINE)
    return list(yaml.safe_load(text)), commented


def test_the_example_config_names_every_create_samples_option_once_in_snake_case():
    active, commented = _example_keys()
    keys = active + commented
    documented = {config_key(p) for p in create_samples.params if p.name != "config"}
    assert sorted(keys) == sorted(set(keys)), "a key appears twice"
    assert set(keys) - documented == set(), "not an option of create-samples"
    assert documented - set(keys) == set(), "options the example leaves out"


def test_the_example_config_is_the_demo_job_and_loads_through_the_command(demo, tmp_path, monkeypatch):
    folder = tmp_path / "demo"
    shutil.copytree(demo.root, folder, ignore=shutil.ignore_patterns("samples*", "job.yaml"))
    shutil.copy(EXAMPLE, folder)
    monkeypatch.chdir(tmp_path)
    from_example = parsed(["--config", "demo/job.example.yaml"])
    (folder / "job.yaml").write_text(yaml.safe_dump(demo.config_options()))
    assert from_example == parsed(["--config", "demo/job.yaml"])
    assert from_example["catalog"] == os.path.join("demo", "catalog.json")
    # The commented-out values parse too, each with its option.
    _, commented = _example_keys()
    uncommented = re.sub(r"^# ([a-z_]+:)", r"\1", EXAMPLE.read_text(), flags=re.MULTILINE)
    uncommented = re.sub(r"^#(   - )", r"\1", uncommented, flags=re.MULTILINE)
    (folder / "all.yaml").write_text(uncommented)
    every = parsed(["--config", "demo/all.yaml"])
    assert every["stack"] == (f"catalog={os.path.join('demo', 'dem', 'catalog.json')} bands=elevation resampling=bilinear",)
    assert set(yaml.safe_load(uncommented)) == set(_example_keys()[0]) | set(commented)


def test_demo_job_runs_from_elsewhere_after_the_folder_moved_and_its_config_yaml_repeats_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(cli, ["demo-data", "--out", "first"])
    assert made.exit_code == 0, made.output
    assert "/" not in yaml.safe_load(Path("first/job.yaml").read_text())["catalog"]
    os.makedirs("p")
    os.rename("first", "p/demo")
    Path("tiles.txt").write_text(ONE_TILE + "\n")
    result = runner.invoke(cli, ["create-samples", "--config", "p/demo/job.yaml", "--tiles", "tiles.txt", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(os.listdir("p/demo/samples/images")) == 1
    saved = yaml.safe_load(Path("p/demo/samples/config.yaml").read_text())
    assert saved["tiles"] == str(tmp_path / "tiles.txt") and saved["labels"] == str(tmp_path / "p/demo/labels.gpkg")
    assert "max_cloud" in saved and "max-cloud" not in saved
    # --tiles on the command line replaced the demo's bbox: config.yaml names one area, so it runs alone.
    assert "bbox" not in saved
    os.makedirs("elsewhere")
    monkeypatch.chdir("elsewhere")
    again = runner.invoke(cli, ["create-samples", "--config", str(tmp_path / "p/demo/samples/config.yaml")])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("tfchips create-samples: 1 written (1 from an earlier run)"), again.output


@pytest.mark.timeout(30)
def test_a_product_entry_that_is_not_valid_words_is_left_for_the_imagery_options_to_name(tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"stack": ["catalog='unclosed"], "labels": "l", "out": "o"}))
    assert parsed(["--config", tmp_path / "job.yaml"])["stack"] == ("catalog='unclosed",)


@pytest.mark.timeout(30)
def test_one_option_under_both_key_styles_is_refused_naming_the_file(tmp_path):
    (tmp_path / "job.yaml").write_text("max_cloud: 20\nmax-cloud: 30\nlabels: l\nout: o\n")
    result = CliRunner().invoke(cli, ["create-samples", "--config", str(tmp_path / "job.yaml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'job.yaml'}: option 'max-cloud' is given twice" in result.output


@pytest.mark.timeout(30)
def test_a_number_as_a_path_in_a_config_is_a_name_in_its_folder(tmp_path):
    (tmp_path / "job.yaml").write_text("out: 2024\nlabels: 7\n")
    values = parsed(["--config", tmp_path / "job.yaml"])
    assert (values["out"], values["labels"]) == (str(tmp_path / "2024"), str(tmp_path / "7"))


@pytest.mark.parametrize(("config_gives", "command_line_gives"), [
    ({"tiles_path": "t.txt"}, {"bbox": (1.0, 2.0, 3.0, 4.0)}),
    ({"bbox": (1.0, 2.0, 3.0, 4.0)}, {"aoi_path": "area.gpkg"}),
    ({"aoi_path": "area.gpkg", "bbox": (1.0, 2.0, 3.0, 4.0)}, {"tiles_path": "t.txt"}),
])
def test_an_area_on_the_command_line_replaces_every_area_of_the_config(config_gives, command_line_gives):
    values = {"tiles_path": None, "aoi_path": None, "bbox": None, **config_gives, **command_line_gives}
    settled = with_area_from_command_line(values, frozenset(config_gives))
    assert {n: v for n, v in settled.items() if v is not None} == command_line_gives


def test_two_areas_from_the_same_place_are_left_for_the_job_to_refuse():
    both = {"tiles_path": "t.txt", "aoi_path": None, "bbox": (1.0, 2.0, 3.0, 4.0)}
    assert with_area_from_command_line(both, frozenset(both)) == both
    assert with_area_from_command_line(both, frozenset()) == both
