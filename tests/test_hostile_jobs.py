"""Jobs meeting each other and dying: resume safety, the output lock, worker processes.

Each case of issue #15's "jobs" part is one test: a rerun with other pixel options,
Beam ``--tfrecords`` into a complete dataset, two jobs on one ``--out``, a stale lock,
the job's process SIGKILLed, one worker SIGKILLed (as the out-of-memory killer would).
Jobs that must be killed run as real ``python -m tfchips`` processes in their own session.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import tfchips.cli.create_samples  # noqa: F401 - loaded up front: a job's time below is its own
from tfchips.aoi import bbox_geometry
from tfchips.cli.main import cli
from tfchips.errors import ConfigError, OutputError
from tfchips.fingerprint import check_fingerprint
from tfchips.grid import key_to_filename, tiles_for_shape
from tfchips.lock import LOCK_NAME, output_lock
from tfchips.processes import process_start
from tfchips.manifest import manifest_rows


def job_args(demo, out: Path, tiles_file: Path, workers: int = 1, *extra: str) -> list[str]:
    return [
        "create-samples", "--tiles", str(tiles_file), "--catalog", demo.catalog, "--bands", ",".join(demo.bands),
        "--start", demo.start, "--end", demo.end, "--mask-asset", demo.mask_asset,
        "--mask-values", ",".join(map(str, demo.mask_values)), "--reference-date", demo.reference_date,
        "--labels", demo.labels, "--attribute", demo.attribute, "--out", str(out), "--workers", str(workers), *extra,
    ]


@pytest.fixture(scope="module")
def tile_files(demo, tmp_path_factory) -> tuple[Path, Path]:
    """(3 tiles, 12 tiles) of the demo area, 32 px at 10 m, as tile-key files."""
    keys = sorted(t.key for t in tiles_for_shape(bbox_geometry(demo.bbox), 10.0, 32, 0))[:12]
    folder = tmp_path_factory.mktemp("tiles")
    (folder / "few.txt").write_text("\n".join(keys[:3]) + "\n")
    (folder / "many.txt").write_text("\n".join(keys) + "\n")
    return folder / "few.txt", folder / "many.txt"


@pytest.fixture(scope="module")
def chips(demo, tile_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chips") / "chips"
    result = CliRunner().invoke(cli, job_args(demo, out, tile_files[0]))
    assert result.exit_code == 0, result.output
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start_job(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tfchips", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def session(sid: int) -> dict[int, int]:
    """{pid: parent pid} of the live (not zombie) processes of session ``sid``."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue  # ended meanwhile
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] != b"Z":
                found[int(name)] = int(fields[1])
    return found


def workers_of(job: int) -> list[int]:
    """The job's pool workers: children of its fork server, itself a child of the job."""
    processes = session(job)
    children = {pid for pid, parent in processes.items() if parent == job}
    return sorted(pid for pid, parent in processes.items() if parent in children)


def wait_for(condition, process: subprocess.Popen, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the job ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def end_session(process: subprocess.Popen) -> None:
    if session(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.timeout(30)
def test_a_rerun_with_other_pixel_options_is_refused_naming_each_option(demo, chips, tile_files, tmp_path):
    out = tmp_path / "chips"
    shutil.copytree(chips, out)
    before = snapshot(out)
    other = job_args(demo, out, tile_files[0], 1, "--method", "latest")
    other[other.index("--start") + 1] = "2023-06-10"
    refused = CliRunner().invoke(cli, other)
    assert refused.exit_code == 1
    assert refused.output.count("\n") == 1 and refused.output.startswith(f"Error: {out} holds chips made with other")
    assert '--method "closest" there, "latest" now' in refused.output
    assert '--start "2023-06-01T00:00:00+00:00" there, "2023-06-10T00:00:00+00:00" now' in refused.output
    assert "pass --overwrite" in refused.output
    assert snapshot(out) == before  # not even config.yaml changed
    # The library names its parameters, not flags.
    recorded = json.loads((out / "manifest.json").read_text())["fingerprint"]
    with pytest.raises(ConfigError, match=r"\(method \"closest\" there, \"latest\" now\); pass overwrite=True"):
        check_fingerprint(str(out), {**recorded, "method": "latest"})
    redone = CliRunner().invoke(cli, [*other, "--overwrite"])
    assert redone.exit_code == 0, redone.output
    assert "3 written (0 from an earlier run)" in redone.output
    assert json.loads((out / "manifest.json").read_text())["fingerprint"]["method"] == "latest"
    again = CliRunner().invoke(cli, other)  # same options as the folder's now: resumed
    assert again.exit_code == 0 and "3 written (3 from an earlier run)" in again.output


@pytest.mark.timeout(30)
def test_a_manifest_without_or_with_a_hostile_fingerprint_is_refused_in_one_line(demo, chips, tile_files, tmp_path):
    out = tmp_path / "chips"
    shutil.copytree(chips, out)
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = json.dumps(manifest.pop("fingerprint"))  # as an older tfchips, or a hand, wrote it
    (out / "manifest.json").write_text(json.dumps(manifest))
    refused = CliRunner().invoke(cli, job_args(demo, out, tile_files[0]))
    assert refused.exit_code == 1 and "records no options fingerprint" in refused.output
    hostile = {**{f"option{i}": i for i in range(10_000)}, "\x1b[2J": "x" * 10_000}
    (out / "manifest.json").write_text(json.dumps({"fingerprint": {**json.loads(recorded), **hostile}}))
    made_up = CliRunner().invoke(cli, job_args(demo, out, tile_files[0]))
    # 10,001 options differ: eight are listed, the quoted made-up name first.
    assert made_up.exit_code == 1 and made_up.output.count("\n") == 1 and len(made_up.output) < 2000
    assert '"\\u001b[2J" "xxx' in made_up.output and "; 9993 more)" in made_up.output
    (out / "manifest.json").write_text('{"fingerprint": [1, 2]}')
    broken = CliRunner().invoke(cli, job_args(demo, out, tile_files[0]))
    assert broken.exit_code == 1
    assert broken.output == f"Error: {out / 'manifest.json'}: not a valid chip manifest (fingerprint must be an object)\n"


@pytest.mark.timeout(30)
def test_beam_tfrecords_refuses_a_complete_dataset_as_to_tfrecords_does(demo, chips, tile_files, tmp_path):
    from beam_pipelines import create_training_samples

    records = tmp_path / "records"
    assert CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(records), "--shards", "1"]).exit_code == 0
    before = snapshot(records)
    local = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(records), "--shards", "1"])
    assert local.exit_code == 1 and "pass --overwrite to replace them" in local.output
    with pytest.raises(ConfigError) as refused:
        create_training_samples.main(
            [*job_args(demo, tmp_path / "job", tile_files[0])[1:], "--tfrecords", str(records), "--runner=DirectRunner"]
        )
    # The same refusal, the library naming the parameter and the command line its flag.
    from tfchips.console import error_line

    assert f"Error: {error_line(refused.value, {'overwrite': '--overwrite'})}\n" == local.output
    assert snapshot(records) == before


@pytest.mark.timeout(30)
def test_a_second_job_on_the_same_folder_stops_at_once_naming_the_first(demo, tile_files, tmp_path):
    out = tmp_path / "chips"
    first = start_job(job_args(demo, out, tile_files[1]))
    try:
        wait_for(lambda: (out / LOCK_NAME).exists() and (out / LOCK_NAME).stat().st_size > 0, first)
        started = time.monotonic()
        second = CliRunner().invoke(cli, job_args(demo, out, tile_files[0], 1, "--overwrite"))
        took = time.monotonic() - started
        assert first.poll() is None, "the first job ended before the second started"
        assert second.exit_code == 1 and took < 1.0
        assert second.output.startswith(f"Error: {out} is in use by another tfchips job (pid {first.pid} on"
                                        f" {socket.gethostname()} since ")
        assert "running " in second.output and "create-samples" in second.output and second.output.count("\n") == 1
        output, errors = first.communicate(timeout=25)
    finally:
        end_session(first)
    assert first.returncode == 0, errors
    assert "12 written (0 from an earlier run), 0 skipped, 0 failed" in errors
    manifest = json.loads((out / "manifest.json").read_text())
    # The .tif chips: labels/*.vrt beside them are ESRI's view of the ignore value.
    assert manifest["complete"] and len([n for n in os.listdir(out / "labels") if n.endswith(".tif")]) == 12
    assert not (out / LOCK_NAME).exists()


@pytest.mark.timeout(30)
def test_a_stale_lock_of_a_dead_process_is_taken_over(demo, tile_files, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "chips"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    result = CliRunner().invoke(cli, job_args(demo, out, tile_files[0]))
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output and not (out / LOCK_NAME).exists()


@pytest.mark.timeout(30)
def test_without_flock_the_recorded_process_decides(tmp_path, monkeypatch):
    def no_flock(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    try:
        time.sleep(0.1)
        holder = {"pid": alive.pid, "host": socket.gethostname(), "process_start": process_start(alive.pid),
                  "started": "2026-01-01T00:00:00Z", "command": "tfchips create-samples\n--out x\x1b[2J"}
        (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
        with pytest.raises(OutputError, match=rf"in use by another tfchips job \(pid {alive.pid} on .* running tfchips"
                                              r" create-samples --out x\?\[2J\)"):
            with output_lock(str(tmp_path)):
                pass
        # The same PID started at another time is another process: the lock is stale.
        (tmp_path / LOCK_NAME).write_text(json.dumps({**holder, "process_start": holder["process_start"] - 1}))
        with output_lock(str(tmp_path)):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        alive.kill()
        alive.wait()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.timeout(30)
def test_the_workers_end_when_the_job_is_killed(demo, tile_files, tmp_path):
    job = start_job(job_args(demo, tmp_path / "chips", tile_files[1], 2))
    try:
        wait_for(lambda: len(workers_of(job.pid)) == 2, job)
        left = session(job.pid)
        os.kill(job.pid, signal.SIGKILL)  # only the job: no clean-up of its own runs
        job.wait()
        deadline = time.monotonic() + 10
        while session(job.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session(job.pid) == {}, f"still running after 10 s, of {left}"
    finally:
        end_session(job)


@pytest.mark.timeout(30)
def test_a_killed_worker_ends_the_job_with_one_line_and_a_manifest_to_resume_from(demo, tile_files, tmp_path):
    out = tmp_path / "chips"
    job = start_job(job_args(demo, out, tile_files[1], 2))
    try:
        # Three labels: the parent has the results of the first tiles by then (a worker sends one before its next tile).
        wait_for(lambda: (out / "labels").is_dir() and len(os.listdir(out / "labels")) >= 3, job)
        os.kill(workers_of(job.pid)[0], signal.SIGKILL)
        _, errors = job.communicate(timeout=20)
    finally:
        end_session(job)
    assert job.returncode == 1
    assert "Traceback" not in errors
    error = [line for line in errors.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and error[0].startswith("Error: a worker process died (killed, perhaps by the out-of-memory")
    assert error[0].endswith(f"the tiles that finished are in {out / 'manifest.json'}: run the same job again to resume")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = list(manifest_rows(str(out)))
    written = {t["key"] for t in rows if t["status"] == "written"}
    assert not manifest["complete"] and "statistics" not in manifest
    assert manifest["counts"]["unfinished"] == 12 - len(rows) > 0 and len(written) >= 1
    assert all((out / sub / f"{key_to_filename(key)}.tif").exists() for key in written for sub in ("images", "labels"))
    resumed = CliRunner().invoke(cli, job_args(demo, out, tile_files[1]))
    assert resumed.exit_code == 0, resumed.output
    earlier = int(resumed.output.split("(")[1].split()[0])
    assert resumed.output.startswith("tfchips create-samples: 12 written (") and earlier >= len(written)
    final = json.loads((out / "manifest.json").read_text())
    assert final["complete"] and "unfinished" not in final["counts"] and final["statistics"]["class_counts"]


@pytest.mark.timeout(30)
def test_nested_holders_share_the_lock_and_another_thread_is_refused(tmp_path):
    import threading

    refused = []

    def other_job() -> None:
        try:
            with output_lock(str(tmp_path)):
                pass
        except OutputError as error:
            refused.append(str(error))

    with output_lock(str(tmp_path)):
        with output_lock(os.path.join(str(tmp_path), ".")):  # the CLI's lock, then the library's, on one folder
            pass
        assert (tmp_path / LOCK_NAME).exists()
        thread = threading.Thread(target=other_job)
        thread.start()
        thread.join()
    assert len(refused) == 1 and f"in use by another tfchips job (pid {os.getpid()} on" in refused[0]
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.timeout(30)
def test_a_watching_worker_ends_with_its_job_but_not_with_a_job_elsewhere(tmp_path):
    """What Beam's local workers do in `SampleTile.setup`: watch the pipeline's process."""
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    watcher = (
        "import dataclasses, sys, time\n"
        "from tfchips.workers import JobProcess, watch_job\n"
        f"job = dataclasses.replace(JobProcess.current(), pid={job.pid}, start={process_start(job.pid)})\n"
        "watch_job(dataclasses.replace(job, host='another-host'))  # a Dataflow launcher: not watched\n"
        "watch_job(job)\n"
        "print('watching', flush=True)\n"
        "time.sleep(30)\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", watcher.replace("watch_job(job)\n", line)],
                                stdout=subprocess.PIPE, text=True)
               for line in ("watch_job(job)\n", "pass\n")]
    try:
        for worker in workers:
            assert worker.stdout.readline() == "watching\n"
        job.kill()
        job.wait()
        watching, elsewhere = workers
        assert watching.wait(timeout=5) == -signal.SIGKILL
        time.sleep(1)
        assert elsewhere.poll() is None  # only watched another host's process: still working
    finally:
        for process in (job, *workers):
            process.kill()
            process.wait()
