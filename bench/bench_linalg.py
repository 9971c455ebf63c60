"""pytest-benchmark cases for the sparse engine (`pytest bench/bench_linalg.py`).

`bench/sparse_engine.py` prints the same comparisons as ratios in one run.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sparse_engine import sparse_rows

from subquad import effective_n_threads
from subquad.linalg import blocked_gemm, lowrank_update_, threshold_matmul

WIDTHS = [4096, 8192]


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda m: f"m{m}")
def layer(request):
    m = request.param
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, m)).astype(np.float32)
    H = sparse_rows(rng, 128, m, 0.02)
    threshold = float(np.quantile(H[:8] @ W, 0.98))
    return m, W, H, threshold


@pytest.mark.parametrize("impl", ["subquad", "scipy", "dense"])
def test_threshold_matmul(record, layer, impl):
    m, W, H, b = layer
    bench = record(f"threshold_matmul m={m}", dtype=np.float32, n_threads=effective_n_threads(),
                   n=128, m_in=m, m_out=m, nnz_per_row=H.nnz // 128, impl=impl)
    if impl == "subquad":
        bench(threshold_matmul, H, W, b)
    elif impl == "scipy":
        bench(lambda: np.maximum(H @ W - b, 0))
    else:
        H_dense = H.toarray()
        bench(lambda: np.maximum(H_dense @ W - b, 0))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_threshold_matmul_threads(record, layer, n_threads):
    m, W, H, b = layer
    bench = record(f"threshold_matmul threads m={m}", dtype=np.float32, n_threads=n_threads,
                   n=128, m_in=m, m_out=m)
    bench(threshold_matmul, H, W, b, n_threads=n_threads)


@pytest.mark.parametrize("impl", ["subquad", "numpy"])
@pytest.mark.parametrize("indexed", [False, True], ids=["full", "index10pct"])
def test_blocked_gemm(record, impl, indexed):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, 512)).astype(np.float32)
    B = rng.standard_normal((512, 4096)).astype(np.float32)
    C = np.empty((4096, 4096), np.float32)
    idx = np.sort(rng.choice(512, 51, replace=False)) if indexed else None
    bench = record(f"blocked_gemm 4096x4096x512 {'10% index' if indexed else 'full'}",
                   dtype=np.float32, n_threads=effective_n_threads(), m=4096, n=4096, k=512,
                   impl=impl)
    if impl == "subquad":
        bench(blocked_gemm, A, B, C, index=idx)
    elif indexed:
        bench(lambda: np.matmul(A[:, idx], B[idx], out=C))
    else:
        bench(np.matmul, A, B, out=C)


@pytest.mark.parametrize("impl", ["subquad", "dense"])
def test_lowrank_update(record, impl):
    m, rank = 8192, 128
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, m)).astype(np.float32)
    U = sp.random(m, rank, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    V = sp.random(rank, m, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    bench = record("lowrank_update_ m=8192 rank=128 2%", dtype=np.float32,
                   n_threads=effective_n_threads(), m=m, rank=rank, impl=impl)
    if impl == "subquad":
        bench(lowrank_update_, W, U, V)
    else:
        U_dense, V_dense = U.toarray(), V.toarray()
        bench(lambda: W.__iadd__(U_dense @ V_dense))
