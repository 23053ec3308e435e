"""beam_pipelines/ is Beam wiring over the library: job building comes from `tfchips.job`, not the CLI.

What it still takes from `tfchips.cli` is the option parsing of the commands whose options
the pipelines take (and ``--config``, which lives in `tfchips.cli.config`); the ratchet below
lists it, so that nothing more can come from the CLI, and what moves out is struck off.
"""

import ast
from pathlib import Path

BEAM = Path(__file__).resolve().parent.parent / "beam_pipelines"
JOB_BUILDING = {"job_from_values", "writer_options", "recorded_options", "parse_class_names", "trust_boundary"}
# (module, imported from tfchips.cli) still needed for option parsing; strike entries off as they move.
STILL_FROM_CLI = {
    ("create_training_samples", "tfchips.cli.config.save_effective_config"),
    ("create_training_samples", "tfchips.cli.create_samples.command"),
    ("create_training_samples", "tfchips.cli.create_samples.options_from_config"),
    ("create_training_samples", "tfchips.cli.main.command_flags"),
    ("create_training_samples", "tfchips.cli.to_tfrecords.command"),
}


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


def test_no_beam_module_takes_job_building_from_the_cli():
    taken = {(module, name) for module, name in cli_imports() if name.rsplit(".", 1)[-1] in JOB_BUILDING}
    assert taken == set()


def test_beam_takes_nothing_more_from_the_cli_than_option_parsing():
    assert cli_imports() == STILL_FROM_CLI


def test_the_scan_sees_every_form_of_import_even_inside_a_function(tmp_path):
    (tmp_path / "wiring.py").write_text(
        "import tfchips.cli\nimport tfchips.cli.main as m\nimport tfchips.job\n"
        "def f():\n    from tfchips.cli.create_samples import job_from_values\n"
    )
    assert cli_imports(tmp_path) == {
        ("wiring", "tfchips.cli"), ("wiring", "tfchips.cli.main"), ("wiring", "tfchips.cli.create_samples.job_from_values"),
    }
