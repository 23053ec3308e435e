"""The three Beam pipelines on every runner the project supports write what the CLI writes.

Runners (`beam_runners.RUNNERS`): DirectRunner in memory, DirectRunner multi-processing with
2 workers, and the PortableRunner on Beam's Python job service (LOOPBACK workers), the path
Flink, Spark and Dataflow take. The job is a few 32-pixel tiles of the demo catalog.
"""

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from beam_runners import (  # noqa: F401 (fixtures)
    LOOPBACK_HEX,
    RUNNERS,
    entry_point,
    job_server,
    listening_hosts,
    runner,
    session_runner_args,
)
from datasets import assert_same_chips, assert_same_dataset, manifest
from test_beam_create_samples import options, with_broken_scene
from tfchips.cli.main import cli

GOOD = [f"32:0:10.0:13:{x}:{y}" for x in (-263, -262) for y in (12340, 12341, 12342)]
FAILING = "32:0:10.0:13:-263:14000"  # only a scene with missing files covers it
RECORD_OPTIONS = ["--encoding", "array", "--split", "train=0.5,val=0.5", "--shards", "2"]
# Seconds for one pipeline run on a busy 2-core machine (Beam's imports and worker start-up included).
RUN_SECONDS = 120


@dataclasses.dataclass(frozen=True)
class Expected:
    """What the CLI writes for the job: chips of the good tiles, their records, and the chips of all tiles."""

    catalog: str
    good: Path
    every: Path
    chips: Path
    records: Path
    failing_chips: Path


def _cli(args: list[str], exit_code: int = 0) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output


@pytest.fixture(scope="module")
def expected(demo, tmp_path_factory) -> Expected:
    root = tmp_path_factory.mktemp("cli")
    catalog = with_broken_scene(demo, root / "catalog", FAILING)
    good, every = root / "good.txt", root / "every.txt"
    good.write_text("\n".join(GOOD) + "\n")
    every.write_text("\n".join([*GOOD, FAILING]) + "\n")
    made = Expected(catalog, good, every, root / "chips", root / "records", root / "failing")
    _cli(["create-samples", *options(demo, made.chips, good, catalog), "--workers", "1"])
    _cli(["to-tfrecords", str(made.chips), "--out", str(made.records), *RECORD_OPTIONS])
    _cli(["create-samples", *options(demo, made.failing_chips, every, catalog), "--workers", "1"], exit_code=1)
    return made


@pytest.mark.timeout(RUN_SECONDS)
def test_chip_folder_pipeline_writes_the_cli_chips_and_manifest(demo, expected, runner, tmp_path):
    from beam_pipelines import create_training_samples

    create_training_samples.main([*options(demo, tmp_path / "beam", expected.good, expected.catalog), *runner])
    assert_same_chips(str(expected.chips), str(tmp_path / "beam"))
    assert manifest(str(tmp_path / "beam")) == manifest(str(expected.chips))


@pytest.mark.timeout(RUN_SECONDS)
def test_tiles_to_records_pipeline_writes_the_cli_dataset(demo, expected, runner, tmp_path):
    from beam_pipelines import create_training_samples

    create_training_samples.main(
        [*options(demo, tmp_path / "job", expected.good, expected.catalog), "--tfrecords", str(tmp_path / "records"),
         *RECORD_OPTIONS, *runner]
    )
    assert_same_dataset(str(expected.records), str(tmp_path / "records"))


@pytest.mark.timeout(RUN_SECONDS)
def test_chips_to_tfrecords_pipeline_writes_the_cli_dataset(expected, runner, tmp_path):
    from beam_pipelines import chips_to_tfrecords

    chips_to_tfrecords.main([str(expected.chips), "--out", str(tmp_path / "records"), *RECORD_OPTIONS, *runner])
    assert_same_dataset(str(expected.records), str(tmp_path / "records"))


@dataclasses.dataclass(frozen=True)
class FailedRun:
    completed: subprocess.CompletedProcess
    out: Path


@pytest.fixture(scope="module", params=RUNNERS)
def failed_run(request, demo, expected, tmp_path_factory) -> FailedRun:
    """The chip-folder entry point, as a command, on the good tiles and the failing one."""
    out = tmp_path_factory.mktemp(f"failed-{request.param}") / "chips"
    args = [*options(demo, out, expected.every, expected.catalog), *session_runner_args(request, request.param)]
    argv, env = entry_point("beam_pipelines.create_training_samples", args)
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_SECONDS)
    return FailedRun(completed, out)


def _dead_letters(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((out / "dead_letter").iterdir()) for line in f.read_text().splitlines()]


@pytest.mark.timeout(RUN_SECONDS)
def test_a_failing_tile_is_a_dead_letter_and_nowhere_else(failed_run, expected):
    assert "Traceback" not in failed_run.completed.stderr, failed_run.completed.stderr
    dead = _dead_letters(failed_run.out)
    assert [d["key"] for d in dead] == [FAILING] and dead[0]["error"]
    assert_same_chips(str(expected.chips), str(failed_run.out))
    written = [t["key"] for t in manifest(str(failed_run.out))["tiles"] if t["status"] == "written"]
    assert written == sorted(GOOD)


@pytest.mark.timeout(RUN_SECONDS)
def test_a_failing_tile_is_counted_in_the_manifest_and_fails_the_run_as_the_cli(failed_run, expected):
    assert manifest(str(failed_run.out)) == manifest(str(expected.failing_chips))
    assert failed_run.completed.returncode == 1, failed_run.completed.stderr


def _listening(pids: list[int], path: str) -> None:
    """Record, from inside a running pipeline, the addresses these processes and this worker listen on."""
    hosts = set().union(*(listening_hosts(pid) for pid in [*pids, os.getpid()]))
    with open(os.path.join(path, f"{os.getpid()}.json"), "w") as stream:
        json.dump(sorted(hosts), stream)


@pytest.mark.timeout(RUN_SECONDS)
def test_every_runner_listens_on_loopback_only(request, runner, tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    # Multi-processing workers import this module to run `_listening`.
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    pids = [os.getpid()]
    if "--runner=PortableRunner" in runner:
        pids.append(request.getfixturevalue("job_server").pid)
    with beam.Pipeline(options=PipelineOptions(runner)) as pipeline:
        _ = pipeline | beam.Create([None]) | beam.Map(lambda _: _listening(pids, str(tmp_path)))
    seen = set().union(*(json.loads(p.read_text()) for p in tmp_path.iterdir()))
    assert seen and seen <= LOOPBACK_HEX
