"""The wheel holds the whole package and its command runs from a fresh virtual environment.

Installing the dependencies (TensorFlow, Beam, GDAL) into a clean environment takes
minutes and a package index; what can break in *our* packaging is the wheel's own
content: a subpackage left out, a module missing, a wrong entry point or requirement.
So the wheel is built from a copy of the sources without build isolation, installed
with ``--no-deps`` into a new environment whose only other path is this environment's
site-packages (added by a plain ``.pth`` line, which does not run the editable-install
hook that would otherwise import tfchips from the source tree), and then every module
of the wheel is imported and ``tfchips --help`` runs from there, outside the sources.
"""

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tfchips", "beam_pipelines")
BUILD_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def sources() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def run(*args, cwd, env=None):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", root / "dist", source, cwd=root)
    (path,) = (root / "dist").glob("tfchips-*.whl")
    return path


@pytest.fixture(scope="module")
def environment(wheel, tmp_path_factory):
    venv = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=venv.parent)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv.parent).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, site


def test_wheel_holds_every_module_entry_point_and_requirement(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert sources() <= names, sorted(sources() - names)
    assert "tfchips = tfchips.cli.main:cli" in entry_points
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = [r.strip() for r in config["options"]["install_requires"].splitlines() if r.strip()]
    declared = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    for requirement in requirements:
        assert any(d.replace(" ", "").startswith(requirement.replace(" ", "")) for d in declared), requirement


def test_installed_wheel_imports_every_module_and_runs_the_command(environment, tmp_path):
    venv, site = environment
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    modules = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in sources()
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
        "print(len(sys.modules))\n"
    )
    run(venv / "bin" / "python", "-c", script, cwd=tmp_path, env=env)
    output = run(venv / "bin" / "tfchips", "--help", cwd=tmp_path, env=env)
    assert output.startswith("Usage: tfchips [OPTIONS] COMMAND [ARGS]...")
    from tfchips import __version__
    from tfchips.cli.main import COMMANDS

    for name in COMMANDS:
        assert f"  {name} " in output
    assert run(venv / "bin" / "tfchips", "--version", cwd=tmp_path, env=env) == f"tfchips, version {__version__}\n"


def test_dataflow_stages_the_wheel_as_an_extra_package(wheel, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.stager import Stager

    options = PipelineOptions([f"--extra_package={wheel}", f"--temp_location={tmp_path}"])
    (tmp_path / "staging").mkdir()
    resources = Stager.create_job_resources(options, str(tmp_path / "staging"), log_submission_env_dependencies=False)
    # Workers pip-install what extra_packages.txt lists, from the staged copies.
    assert len(resources) == 2
    listed = (tmp_path / "staging" / "extra_packages.txt").read_text().split()
    assert listed == [wheel.name]
