import importlib
import subprocess
import sys

import pytest
from conftest import SOURCE_DIR


def _extension_modules():
    return sorted(
        ".".join(pyx.relative_to(SOURCE_DIR.parent).with_suffix("").parts)
        for pyx in SOURCE_DIR.rglob("*.pyx")
    )


def test_extensions_are_listed():
    assert "subquad._cython_blas" in _extension_modules()


@pytest.mark.parametrize("name", _extension_modules())
def test_extension_imports(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith((".so", ".pyd")), module.__file__


def test_unbuilt_tree_gives_build_instructions(tmp_path):
    # A copy of the pure-Python sources, as in a fresh clone before building.
    pkg = tmp_path / "subquad"
    pkg.mkdir()
    for py in SOURCE_DIR.glob("*.py"):
        (pkg / py.name).write_text(py.read_text())
    (tmp_path / "setup.py").write_text("")
    # -S: no site-packages, so an editable install's import hook cannot win.
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import sys; sys.path.insert(0, '.'); import subquad"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "has not been built" in result.stderr
    assert "pip install" in result.stderr
