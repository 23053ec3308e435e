"""Beam runners and loopback services for tests and benchmarks, each bounded in time.

Every service listens on loopback only (127.0.0.1; Beam's gRPC servers also on ::1) and is stopped by its PID, also when a test fails:

- `job_service`: Beam's Python job service (``local_job_service_main``), for the
  PortableRunner, the path Flink, Spark and Dataflow runners take.
- `s3_server`: moto's S3 server, for ``s3://`` outputs through Beam's S3 filesystem
  (boto3) and GDAL's ``/vsis3/``.

Beam binds its own gRPC servers (the job service's worker control, data, state and logging
servers, the LOOPBACK worker pool, multi-processing workers' logging) to ``[::]``, every
interface, with no option to change it; `loopback_grpc` rebinds them to localhost in this
process, and the job service runs under it too: ``python tests/beam_runners.py MODULE ARGS``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

LOOPBACK = "127.0.0.1"
RUNNERS = ("direct", "multi_processing", "portable")
# Seconds a service may take to start (Beam's imports take most of it on a busy 2-core machine).
START_SECONDS = 90
STOP_SECONDS = 10


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Service:
    """A started service: its process and the 127.0.0.1 port it answers on."""

    process: subprocess.Popen
    port: int
    log: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


def _wait_for_port(process: subprocess.Popen, port: int, log: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode} before listening: {_tail(log)}")
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"service did not listen on {LOOPBACK}:{port} within {seconds} s: {_tail(log)}")


def _tail(log: str, characters: int = 2000) -> str:
    with open(log, errors="replace") as stream:
        return stream.read()[-characters:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_SECONDS)


@contextlib.contextmanager
def service(argv: list[str], port: int, log: str, env: dict | None = None) -> Iterator[Service]:
    """Run ``argv`` until the block ends; it must listen on 127.0.0.1:``port`` within `START_SECONDS`."""
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_for_port(process, port, log, START_SECONDS)
        yield Service(process, port, log)
    finally:
        _stop(process)


@contextlib.contextmanager
def job_service(folder: str, scheduled: bool = False) -> Iterator[Service]:
    """Beam's Python job service on loopback, its gRPC servers rebound by `loopback_grpc`.

    The job service runs every job on one SDK worker whatever the options say; ``scheduled``
    makes it honour ``--direct_num_workers`` (`_scheduled_workers`), as runners that schedule
    workers (Flink, Spark, Dataflow) honour theirs: for benchmarks, not a runner of the project.
    """
    port = free_port()
    module = "apache_beam.runners.portability.local_job_service_main"
    flags = [_SCHEDULED] if scheduled else []
    argv = [sys.executable, os.path.abspath(__file__), *flags, module, "--port", str(port), "--staging_dir", folder]
    with service(argv, port, os.path.join(folder, "job_service.log")) as started:
        yield started


@dataclasses.dataclass(frozen=True)
class S3:
    """A loopback S3 server: the endpoint and keys, as Beam options and as environment variables."""

    service: Service
    bucket: str
    region: str = "us-east-1"
    key_id: str = "testing"
    secret: str = "testing"

    @property
    def endpoint(self) -> str:
        return f"http://{self.service.address}"

    def beam_args(self) -> list[str]:
        return [f"--s3_endpoint_url={self.endpoint}", f"--s3_access_key_id={self.key_id}",
                f"--s3_secret_access_key={self.secret}", f"--s3_region_name={self.region}"]

    def environment(self) -> dict[str, str]:
        """boto3 (Beam's S3 client outside a pipeline) and GDAL's /vsis3/ pointed at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_S3_ENDPOINT": self.service.address, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_NO_SIGN_REQUEST": "NO",
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)


@contextlib.contextmanager
def s3_server(folder: str, bucket: str = "bucket") -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1 with ``bucket`` created."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    with service(argv, port, os.path.join(folder, "moto.log")) as started:
        s3 = S3(started, bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3


def _loopback_address(address: str) -> str:
    # localhost, not 127.0.0.1: Beam's clients dial "localhost:PORT", which tries ::1 first and
    # backs off for seconds when nothing listens there. Both are loopback addresses.
    host, _, port = address.rpartition(":")
    return f"localhost:{port}" if host in ("[::]", "0.0.0.0", "") else address


@contextlib.contextmanager
def loopback_grpc() -> Iterator[None]:
    """gRPC servers started in this process during the block listen on loopback only (127.0.0.1, ::1)."""
    from grpc import _server

    original = _server._Server.add_insecure_port

    def add_insecure_port(self, address: str) -> int:
        return original(self, _loopback_address(address))

    _server._Server.add_insecure_port = add_insecure_port
    try:
        yield
    finally:
        _server._Server.add_insecure_port = original


def runner_args(runner: str, job_endpoint: str | None = None, workers: int = 2) -> list[str]:
    """Beam options for one of `RUNNERS`; ``portable`` needs a `job_service` address."""
    if runner == "direct":
        return ["--runner=DirectRunner"]
    if runner == "multi_processing":
        return ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    if runner == "portable":
        if job_endpoint is None:
            raise ValueError("the portable runner needs `job_endpoint`")
        return ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", "--environment_type=LOOPBACK",
                f"--sdk_worker_parallelism={workers}"]
    raise ValueError(f"`runner` is one of {RUNNERS}, not {runner!r}")


@pytest.fixture(scope="session")
def job_server(tmp_path_factory) -> Iterator[Service]:
    """A `job_service` shared by the session's tests (it takes seconds to start)."""
    with job_service(str(tmp_path_factory.mktemp("job_service"))) as started:
        yield started


def session_runner_args(request, runner: str) -> list[str]:
    """`runner_args` of ``runner``, the portable one on the session's `job_server`."""
    endpoint = request.getfixturevalue("job_server").address if runner == "portable" else None
    return runner_args(runner, endpoint)


@pytest.fixture(params=RUNNERS)
def runner(request) -> Iterator[list[str]]:
    """Beam options for each of `RUNNERS` in turn, run with this process's gRPC servers on loopback."""
    with loopback_grpc():
        yield session_runner_args(request, request.param)


def entry_point(module: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``module`` as ``__main__`` in a new process, on loopback,
    importing this checkout (and so do the Beam workers it starts)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return [sys.executable, os.path.abspath(__file__), module, *args], {**os.environ, "PYTHONPATH": path}


def listening_hosts(pid: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of TCP sockets process ``pid`` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as stream:
            for row in stream.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    hosts.add(fields[1].rsplit(":", 1)[0])
    return hosts


# 127.0.0.1 in /proc/net/tcp, and 127.0.0.1 (IPv4-mapped) and ::1 in /proc/net/tcp6, as the kernel writes them.
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


_SCHEDULED = "--scheduled-workers"


def _scheduled_workers() -> None:
    """Make the FnApiRunner of Beam's job service run each stage on ``--direct_num_workers`` workers.

    Beam 2.77 fixes ``FnApiRunner._num_workers = 1`` and reads the option only in
    ``run_pipeline``, the DirectRunner's entry; the job service calls ``run_via_runner_api``.
    """
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    original = fn_runner.FnApiRunner.run_via_runner_api

    def run_via_runner_api(self, pipeline_proto, options):
        # Options reach the job service as JSON strings.
        self._num_workers = int(options.view_as(DirectOptions).direct_num_workers or 1)
        return original(self, pipeline_proto, options)

    fn_runner.FnApiRunner.run_via_runner_api = run_via_runner_api


def _serve(argv: list[str]) -> None:
    """Run module ``argv[0]`` as ``__main__`` with arguments ``argv[1:]``, its gRPC servers on loopback
    (with `_SCHEDULED` first, `_scheduled_workers` too)."""
    if argv[0] == _SCHEDULED:
        _scheduled_workers()
        argv = argv[1:]
    module, sys.argv = argv[0], argv
    with loopback_grpc():
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve(sys.argv[1:])
