"""README.md runs as written: every ``sh`` and ``python`` block, in order, after ``make demo``.

The blocks run in a copy of the repository (tracked files only, as a fresh clone has them),
each shell block with ``bash -e`` and each Python block in a fresh interpreter, as a reader
pasting them would. A block that cannot run here says so in an HTML comment on the line
before it, which this test reads:

- ``<!-- readme-test: skip: REASON -->``: not run (it installs, or is the suite itself);
- ``<!-- readme-test: fails-offline: REGEX -->``: needs the network or an account; it must
  fail, and its output must match REGEX (the offline error a reader would see).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK_TIMEOUT = 600
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_DIRECTIVE = re.compile(r"<!-- readme-test: (skip|fails-offline): (.*?) -->\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    directive: str | None = None
    argument: str = ""

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def readme_blocks(text: str) -> list[Block]:
    """The ``sh`` and ``python`` blocks of ``text`` with the directive of the line before each."""
    blocks = []
    for match in _FENCE.finditer(text):
        language = match.group(1)
        if language not in ("sh", "python"):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = _DIRECTIVE.search(before)
        blocks.append(
            Block(
                line=text.count("\n", 0, match.start()) + 1,
                language=language,
                code=match.group(2),
                directive=directive.group(1) if directive else None,
                argument=directive.group(2) if directive else "",
            )
        )
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _tracked_copy(destination: Path) -> None:
    """The files git tracks, modification times kept (so make sees the venv as up to date)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _environment(workspace: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(workspace)
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A fresh copy of the repository in which ``make demo`` has run, with this test's venv."""
    folder = tmp_path_factory.mktemp("readme") / "tfchips"
    _tracked_copy(folder)
    venv = Path(sys.executable).parent.parent
    # -o: the venv is the one this test runs in; make must not reinstall it from the copy.
    subprocess.run(
        ["make", "demo", f"VENV={venv}", "-o", f"{venv}/.installed"],
        cwd=folder, env=_environment(folder), check=True, capture_output=True, timeout=BLOCK_TIMEOUT,
    )
    return folder


def _run(block: Block, folder: Path) -> subprocess.CompletedProcess:
    command = ["bash", "-e", "-o", "pipefail", "-c", block.code] if block.language == "sh" else [sys.executable, "-c", block.code]
    return subprocess.run(
        command, cwd=folder, env=_environment(folder), capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )


def test_readme_has_blocks_and_known_directives():
    assert len(BLOCKS) >= 20
    unknown = [line for line in README.read_text().splitlines() if "readme-test:" in line and not _DIRECTIVE.search(line)]
    assert unknown == []


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_readme_block_runs_as_written(block: Block, workspace: Path):
    if block.directive == "skip":
        pytest.skip(f"{block.name}: {block.argument}")
    result = _run(block, workspace)
    output = result.stdout + result.stderr
    if block.directive == "fails-offline":
        assert result.returncode != 0, f"{block.name} was marked as needing the network but ran"
        assert re.search(block.argument, output), f"{block.name}: offline error not as documented:\n{output[-2000:]}"
    else:
        assert result.returncode == 0, f"{block.name} failed:\n{block.code}\n---\n{output[-3000:]}"
