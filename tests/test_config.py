import io

import pytest

import subquad
from subquad import _cpu_caches
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


@pytest.mark.parametrize("text, size", [("2048K\n", 2 << 20), ("1M", 1 << 20), ("524288", 524288)])
def test_cache_sizes_parse_as_sysfs_writes_them(text, size):
    assert _cpu_caches._parse_size(text) == size


def test_l2_size_comes_from_sysfs_level_2_or_the_default(tmp_path, monkeypatch):
    for name, level, kind, size in [("index0", 1, "Data", "48K"), ("index1", 1, "Instruction", "64K"),
                                    ("index2", 2, "Unified", "2048K"), ("index3", 3, "Unified", "480M")]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    read = _cpu_caches.l2_cache_bytes.__wrapped__
    monkeypatch.setattr(_cpu_caches.glob, "glob", lambda pattern: [str(tmp_path / f"index{i}")
                                                                    for i in range(4)])
    assert read() == 2 << 20
    (tmp_path / "index2" / "size").write_text("garbage")
    assert read() == _cpu_caches.DEFAULT_L2_BYTES
    monkeypatch.setattr(_cpu_caches.glob, "glob", lambda pattern: [])
    assert read() == _cpu_caches.DEFAULT_L2_BYTES


def test_show_config_reports_the_l2_size():
    buffer = io.StringIO()
    subquad.show_config(file=buffer)
    assert f"L2 cache: {config_info()['l2_cache_bytes'] // 1024} KiB" in buffer.getvalue()
