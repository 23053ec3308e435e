"""The top-level API: every verb importable from `tfchips`, TensorFlow and Beam loaded only on demand."""

import subprocess
import sys

import pytest

import tfchips


def _modules_after(code: str) -> set[str]:
    """Heavy top-level modules loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys; print(' '.join(m for m in ('tensorflow', 'apache_beam') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("name", [n for n in tfchips.__all__ if n != "__version__"])
def test_every_exported_name_resolves_to_its_module_attribute(name):
    module_name, attribute = tfchips._EXPORTS[name]
    module = __import__(module_name, fromlist=[attribute])
    assert getattr(tfchips, name) is getattr(module, attribute)


def test_import_loads_neither_tensorflow_nor_beam():
    assert _modules_after("import tfchips") == set()


def test_writing_verbs_stay_light_and_reading_loads_tensorflow():
    assert _modules_after("import tfchips; tfchips.create_samples; tfchips.tiles_for_shape; tfchips.write_tfrecords") == set()
    assert _modules_after("import tfchips; tfchips.make_dataset") == {"tensorflow"}


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_verb'"):
        tfchips.no_such_verb  # noqa: B018


def test_star_import_and_dir_offer_the_verbs():
    namespace: dict = {}
    exec("from tfchips import *", namespace)  # noqa: S102 - the star import is the behaviour under test
    assert {"create_samples", "read_dataset", "inspect_dataset"} <= set(namespace)
    assert namespace["read_dataset"] is namespace["make_dataset"]
    assert "tiles_for_shape" in dir(tfchips)
