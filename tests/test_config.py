import io

import subquad
from subquad._config import config_info
from subquad._openmp import openmp_enabled


def test_show_config_reports_version_openmp_blas_and_compiler():
    buffer = io.StringIO()
    subquad.show_config(file=buffer)
    text = buffer.getvalue()
    assert text.startswith(f"subquad {subquad.__version__}")
    assert ("OpenMP: enabled" in text) == openmp_enabled()
    assert "BLAS:" in text and "openblas" in text.lower() or "mkl" in text.lower()
    assert "Compiler:" in text and "flags:" in text


def test_show_config_prints_to_stdout(capsys):
    subquad.show_config()
    assert "OpenMP:" in capsys.readouterr().out


def test_config_info_thread_count_matches_resolution():
    info = config_info()
    assert info["n_threads"] == subquad.effective_n_threads(None)
    assert info["openmp"] == openmp_enabled()
    assert all(blas["num_threads"] >= 1 for blas in info["blas"])
