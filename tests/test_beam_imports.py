"""beam_pipelines/ is Beam wiring over the library: job building comes from `tfchips.job`, option
parsing from `tfchips.options` and `tfchips.config_file`, nothing from the CLI."""

import ast
from pathlib import Path

BEAM = Path(__file__).resolve().parent.parent / "beam_pipelines"


def cli_imports(folder: Path = BEAM) -> set[tuple[str, str]]:
    """(module, dotted name) of every import of a tfchips.cli module or name in ``folder``."""
    found = set()
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {(path.stem, name) for name in names if name == "tfchips.cli" or name.startswith("tfchips.cli.")}
    return found


def test_no_beam_module_imports_the_cli():
    assert cli_imports() == set()


def test_the_scan_sees_every_form_of_import_even_inside_a_function(tmp_path):
    (tmp_path / "wiring.py").write_text(
        "import tfchips.cli\nimport tfchips.cli.main as m\nimport tfchips.job\n"
        "def f():\n    from tfchips.cli.create_samples import job_from_values\n"
    )
    assert cli_imports(tmp_path) == {
        ("wiring", "tfchips.cli"), ("wiring", "tfchips.cli.main"), ("wiring", "tfchips.cli.create_samples.job_from_values"),
    }
