import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import rtol_for

from subquad.linalg import threshold as threshold_module
from subquad.linalg import (
    LowRankWeight,
    blocked_gemm,
    lowrank_update_,
    sparse_matmul,
    threshold_matmul,
)

THREADS = [1, 2]


def threshold_reference(H, W, threshold, bias=None):
    """max(H @ W + bias - threshold, 0) in float64, dense."""
    H = H.toarray() if sp.issparse(H) else np.asarray(H)
    Z = H.astype(np.float64) @ np.asarray(W, dtype=np.float64)
    if bias is not None:
        Z = Z + bias
    return np.maximum(Z - threshold, 0)


def random_csr(rng, n, m, density, dtype):
    return sp.random(n, m, density=density, format="csr", random_state=rng, dtype=dtype)


def assert_csr_matches(A, expected, dtype):
    assert sp.issparse(A) and A.format == "csr"
    assert A.dtype == dtype
    assert A.shape == expected.shape
    assert A.has_sorted_indices
    assert np.all(A.data > 0), "only strictly positive entries may be stored"
    tol = 50 * rtol_for(dtype)
    np.testing.assert_allclose(A.toarray(), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------- threshold_matmul


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("n,m_in,m_out", [(1, 1, 1), (13, 70, 300), (300, 50, 5000), (600, 90, 70)])
def test_threshold_matmul_matches_numpy(dtype, sparse, n_threads, n, m_in, m_out):
    rng = np.random.default_rng(n + m_in)
    H = random_csr(rng, n, m_in, 0.2, dtype)
    W = rng.standard_normal((m_in, m_out)).astype(dtype)
    bias = rng.standard_normal(m_out).astype(dtype)
    threshold = 0.7
    A = threshold_matmul(H if sparse else H.toarray(), W, threshold, bias=bias, n_threads=n_threads)
    assert_csr_matches(A, threshold_reference(H, W, threshold, bias), dtype)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
def test_threshold_matmul_per_column_threshold_and_fortran_w(dtype, sparse):
    rng = np.random.default_rng(1)
    H = random_csr(rng, 40, 30, 0.3, dtype)
    W = np.asfortranarray(rng.standard_normal((30, 200)).astype(dtype))
    threshold = rng.uniform(-1, 1, 200).astype(dtype)
    A = threshold_matmul(H if sparse else H.toarray(), W, threshold)
    assert_csr_matches(A, threshold_reference(H, W, threshold), dtype)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
def test_ties_at_threshold_are_inactive(dtype, sparse):
    # Small integers make every product exact, so ties are real ties.
    rng = np.random.default_rng(2)
    H = sp.csr_matrix(rng.integers(-2, 3, (20, 8)).astype(dtype) * (rng.random((20, 8)) < 0.5))
    W = rng.integers(-3, 4, (8, 50)).astype(dtype)
    Z = H.toarray() @ W
    threshold = 2.0
    assert np.any(Z == threshold)
    A = threshold_matmul(H if sparse else H.toarray(), W, threshold)
    dense = A.toarray()
    assert np.all(dense[Z == threshold] == 0)
    np.testing.assert_array_equal(dense, np.maximum(Z - threshold, 0))


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
def test_nothing_or_everything_active(dtype, sparse):
    rng = np.random.default_rng(3)
    H = random_csr(rng, 30, 20, 0.5, dtype)
    W = rng.standard_normal((20, 40)).astype(dtype)
    Hin = H if sparse else H.toarray()
    assert threshold_matmul(Hin, W, 1e9).nnz == 0
    Z = H.toarray().astype(np.float64) @ W
    everything = threshold_matmul(Hin, W, Z.min() - 1.0)
    assert everything.nnz == 30 * 40
    assert_csr_matches(everything, threshold_reference(H, W, Z.min() - 1.0), dtype)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
def test_empty_rows_zero_input_and_empty_shapes(dtype, sparse):
    rng = np.random.default_rng(4)
    H = random_csr(rng, 10, 15, 0.3, dtype).tolil()
    H[[0, 4, 9]] = 0
    H = H.tocsr()
    W = rng.standard_normal((15, 25)).astype(dtype)
    A = threshold_matmul(H if sparse else H.toarray(), W, -0.1)
    assert_csr_matches(A, threshold_reference(H, W, -0.1), dtype)
    zeros = sp.csr_matrix((7, 15), dtype=dtype)
    assert threshold_matmul(zeros if sparse else zeros.toarray(), W, 0.0).nnz == 0
    for n, m_in, m_out in [(0, 15, 25), (5, 0, 25), (5, 15, 0)]:
        Hs = sp.csr_matrix((n, m_in), dtype=dtype)
        A = threshold_matmul(Hs if sparse else Hs.toarray(), np.ones((m_in, m_out), dtype), -1.0)
        assert_csr_matches(A, threshold_reference(Hs, np.ones((m_in, m_out)), -1.0), dtype)


def test_non_canonical_csr_and_other_formats(dtype):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6, 30)).astype(dtype)
    # Duplicate and unsorted column indices: duplicates add up, as in scipy.
    H = sp.csr_matrix(
        (np.array([1.0, 2.0, 0.5, -1.0], dtype), np.array([3, 1, 3, 0]), np.array([0, 3, 4])),
        shape=(2, 6))
    assert_csr_matches(threshold_matmul(H, W, 0.1), threshold_reference(H, W, 0.1), dtype)
    for fmt in ("coo", "csc", "lil"):
        A = threshold_matmul(H.asformat(fmt), W, 0.1)
        assert_csr_matches(A, threshold_reference(H, W, 0.1), dtype)


def test_dtype_follows_w_and_inputs_are_converted():
    rng = np.random.default_rng(6)
    H = rng.random((5, 8))  # float64
    W32 = rng.standard_normal((8, 9)).astype(np.float32)
    assert threshold_matmul(H, W32, 0.0).dtype == np.float32
    W_int = rng.integers(-3, 3, (8, 9))
    assert threshold_matmul(H, W_int, 0.0).dtype == np.float64
    # Non-contiguous H and a list are converted.
    H_strided = rng.random((5, 16))[:, ::2]
    assert_csr_matches(threshold_matmul(H_strided, W32, 0.0),
                       threshold_reference(H_strided, W32, 0.0), np.float32)
    assert threshold_matmul(H.tolist(), W32, 0.0).shape == (5, 9)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
@pytest.mark.parametrize("n_threads", THREADS)
def test_non_finite_w_shows_in_the_output_as_numpy_has_it(dtype, sparse, n_threads):
    # W is not checked (a check would read all of it), so what it does to a
    # pre-activation must show: NaN and +inf stored, -inf inactive. The
    # reference is scipy's product for CSR H (a stored zero of H never meets
    # W) and NumPy's for dense H (0 * NaN is NaN).
    rng = np.random.default_rng(7)
    H = random_csr(rng, 40, 30, 0.3, dtype)
    H.data = np.abs(H.data) + 1
    H_in = H if sparse else H.toarray()
    W = rng.standard_normal((30, 100)).astype(dtype)
    W[3, :10] = np.nan
    W[4, 10:20] = np.inf
    W[5, 20:30] = -np.inf
    with np.errstate(invalid="ignore"):
        Z = H_in.astype(np.float64) @ W.astype(np.float64)
        expected = np.maximum(Z - 0.5, 0)
    A = threshold_matmul(H_in, W, 0.5, n_threads=n_threads)
    assert A.has_sorted_indices
    assert np.isnan(expected).any() and np.isinf(expected).any()
    result = A.toarray()
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(result), np.isposinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(result[finite], expected[finite],
                               rtol=50 * rtol_for(dtype), atol=50 * rtol_for(dtype))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(H=np.ones((3, 4)), W=np.ones((5, 6))), ValueError, "H must have 5 columns"),
        (dict(H=sp.csr_matrix(np.ones((3, 4))), W=np.ones((5, 6))), ValueError, "H must have 5"),
        (dict(H=np.ones((3, 5)), W=np.ones((5, 6, 1))), ValueError, "W must be 2-D"),
        (dict(H=np.ones(5), W=np.ones((5, 6))), ValueError, "H must be 2-D"),
        (dict(H=np.ones((3, 5)), W=np.array([["a"] * 6] * 5)), TypeError, "W must hold real"),
        (dict(H=np.array([["a"] * 5] * 3), W=np.ones((5, 6))), TypeError, "H must hold real"),
        (dict(H=np.ones((3, 5)), W=np.ones((5, 6)), threshold=np.ones(5)), ValueError,
         r"threshold must be a scalar or have shape \(6,\)"),
        (dict(H=np.ones((3, 5)), W=np.ones((5, 6)), bias=np.ones((6, 1))), ValueError,
         r"bias must be a scalar or have shape \(6,\)"),
        (dict(H=np.full((3, 5), np.nan), W=np.ones((5, 6))), ValueError, "H contains NaN"),
        (dict(H=np.ones((3, 5)), W=np.ones((5, 6)), threshold=np.nan), ValueError,
         "threshold contains NaN"),
        (dict(H=np.ones((3, 5)), W=sp.csr_matrix(np.ones((5, 6)))), TypeError, "W must be a dense"),
        (dict(H=np.ones((3, 5)), W=np.ones((5, 6)), n_threads=0), ValueError, "n_threads"),
    ],
)
def test_threshold_matmul_rejects_bad_input(kwargs, error, match):
    kwargs.setdefault("threshold", 0.5)
    with pytest.raises(error, match=match):
        threshold_matmul(**kwargs)


@pytest.mark.parametrize("n_threads", THREADS)
def test_sparse_matmul_matches_numpy(dtype, n_threads):
    rng = np.random.default_rng(7)
    H = random_csr(rng, 300, 80, 0.1, dtype)
    W = rng.standard_normal((80, 700)).astype(dtype)
    out = sparse_matmul(H, W, n_threads=n_threads)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, H.toarray().astype(float) @ W, rtol=rtol_for(dtype) * 10,
                               atol=rtol_for(dtype) * 10)
    np.testing.assert_allclose(sparse_matmul(H.toarray(), W), out, rtol=rtol_for(dtype) * 10,
                               atol=rtol_for(dtype) * 10)


def test_thread_counts_agree(dtype):
    rng = np.random.default_rng(8)
    H = random_csr(rng, 257, 400, 0.05, dtype)
    W = rng.standard_normal((400, 3000)).astype(dtype)
    one, two = (threshold_matmul(H, W, 0.2, n_threads=t) for t in THREADS)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_array_equal(one.indptr, two.indptr)
    np.testing.assert_allclose(one.data, two.data, rtol=rtol_for(dtype))


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("density", [0.00005, 0.3], ids=["few_w_rows", "most_w_rows"])
def test_csr_block_uses_few_or_most_rows_of_w(dtype, n_threads, density):
    # Few distinct W rows per row block are sorted; when they are a large
    # share of W's rows they are read off in order instead. Both must list
    # every row of W the block uses, each with its samples. Indices are
    # shuffled within rows, as CSR allows.
    rng = np.random.default_rng(11)
    H = random_csr(rng, 300, 6000, density, dtype)
    for r in range(H.shape[0]):
        rng.shuffle(H.indices[H.indptr[r]:H.indptr[r + 1]])
    H.has_sorted_indices = False
    W = rng.standard_normal((6000, 70)).astype(dtype)
    A = threshold_matmul(H, W, 0.1, n_threads=n_threads)
    assert_csr_matches(A, threshold_reference(H, W, 0.1), dtype)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
@pytest.mark.parametrize("n", [128, 100])
def test_layer_narrower_than_a_tile_is_split_between_threads(dtype, sparse, n):
    # A layer as wide as one default tile is cut, with 2 threads, into one
    # tile per thread, each emitting its own columns of every row.
    itemsize = np.dtype(dtype).itemsize
    m_out = threshold_module._tiling(n, 4096, itemsize, 1)[1]
    narrowed = threshold_module._tiling(n, m_out, itemsize, 2)[1]
    assert narrowed <= m_out // 2 + 16 and narrowed % 16 == 0
    rng = np.random.default_rng(9)
    H = random_csr(rng, n, 1000, 0.05, dtype)
    W = rng.standard_normal((1000, m_out)).astype(dtype)
    Hin = H if sparse else H.toarray()
    one, two = (threshold_matmul(Hin, W, 1.0, n_threads=t) for t in THREADS)
    assert_csr_matches(two, threshold_reference(H, W, 1.0), dtype)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_array_equal(one.indptr, two.indptr)


def test_inputs_sharing_w_rows_get_smaller_tiles(dtype):
    """The more samples of a row block use each row of W, the smaller the Z
    tiles (more column tiles per row block); dense H takes the middle size;
    the product is the same."""
    itemsize = np.dtype(dtype).itemsize
    widths = [threshold_module._tiling(256, 8192, itemsize, threads, uses_per_w_row=uses)[1]
              for threads, uses in ((2, None), (2, 2.6), (1, 2.6), (2, 9.0), (2, 25.6))]
    tile_bytes = [threshold_module._TILE_BYTES, threshold_module._TILE_BYTES_FEW_USES,
                  threshold_module._TILE_BYTES, threshold_module._TILE_BYTES,
                  threshold_module._TILE_BYTES_MANY_USES]
    assert widths == [size // (256 * itemsize) for size in tile_bytes]
    assert widths[1] >= widths[3] > widths[4]
    rng = np.random.default_rng(10)
    # ~26 samples of a block per row of W, then ~2.6 (the half-of-L2 tile
    # on 2 threads, wider than 512 KiB where L2 exceeds 1 MiB).
    for n, density, m_out in ((300, 0.1, 2100), (128, 0.02, 4200)):
        H = random_csr(rng, n, 500, density, dtype)
        W = rng.standard_normal((500, m_out)).astype(dtype)
        one, two = (threshold_matmul(H, W, 1.0, n_threads=t) for t in THREADS)
        assert_csr_matches(two, threshold_reference(H, W, 1.0), dtype)
        np.testing.assert_array_equal(one.indices, two.indices)
        np.testing.assert_allclose(sparse_matmul(H, W), H.toarray().astype(float) @ W,
                                   rtol=rtol_for(dtype) * 10, atol=rtol_for(dtype) * 100)


def test_threshold_matmul_memory_stays_near_output_size():
    """At m = 16384 with CSR input, the extra peak memory is the output and
    per-thread tiles, never a dense (n, m_out) buffer."""
    script = textwrap.dedent(
        """
        import numpy as np, scipy.sparse as sp
        from subquad.linalg import threshold_matmul

        def peak_rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

        n, m = 512, 16384
        rng = np.random.default_rng(0)
        W = np.tile(rng.standard_normal((128, m)).astype(np.float32), (m // 128, 1))
        H = sp.random(n, m, density=0.02, format="csr", random_state=rng, dtype=np.float32)
        threshold = np.quantile(H[:8] @ W, 0.98)     # ~2% active outputs
        threshold_matmul(H[:8], W, threshold)        # load libraries, warm up
        before = peak_rss()
        A = threshold_matmul(H, W, threshold)
        extra = peak_rss() - before
        output = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
        print(extra, output, n * m * 4, A.nnz / (n * m))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=os.path.expanduser("~")).stdout.split()
    extra, output, dense_buffer, active = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    assert 0.005 < active < 0.1
    # Output, staging (~1.5x output), transposed H and two 512 KiB tiles.
    budget = 4 * output + 24 * 512 * 328 + 4 * 2**20
    assert extra <= budget < dense_buffer, (extra, budget, dense_buffer)


# ------------------------------------------------------------------- blocked_gemm


def gemm_reference(A, B, C, alpha, beta, index):
    idx = slice(None) if index is None else index
    result = alpha * (A[:, idx].astype(np.float64) @ B[idx].astype(np.float64))
    return result if C is None else result + beta * C


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (70, 90, 33), (1500, 130, 20), (3, 2000, 7)])
@pytest.mark.parametrize("with_index", [False, True])
@pytest.mark.parametrize("alpha,beta", [(0.5, -2.0), (1.0, 0.0)], ids=["scaled", "plain"])
def test_blocked_gemm_matches_numpy(dtype, n_threads, m, n, k, with_index, alpha, beta):
    rng = np.random.default_rng(m * n + k)
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    index = rng.choice(k, size=max(1, k // 3), replace=False) if with_index else None
    expected = gemm_reference(A, B, C, alpha, beta, index)
    out = blocked_gemm(A, B, C, alpha=alpha, beta=beta, index=index, n_threads=n_threads)
    assert out is C and out.dtype == dtype
    tol = 10 * rtol_for(dtype) * np.sqrt(k)
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol)


def misaligned(shape, dtype, offset, rng):
    """C-contiguous random array whose data starts `offset` elements past a
    64-byte boundary."""
    size = int(np.prod(shape))
    buffer = np.empty(size + 64, dtype)
    start = (-buffer.ctypes.data % 64) // buffer.itemsize + offset
    out = buffer[start:start + size].reshape(shape)
    out[...] = rng.standard_normal(shape)
    return out


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("beta", [0.0, 0.75])
@pytest.mark.parametrize("offset", [0, 1, 5, 12])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 33, 5), (50, 64, 40), (29, 256, 3)])
def test_blocked_gemm_index_any_alignment_of_C(dtype, n_threads, beta, offset, m, n, k):
    # Row strides of 64 and 256 elements keep every row at the same offset
    # from a cache line (streamed in whole lines after a head); 1 and 33 do not.
    rng = np.random.default_rng(m + n + offset)
    A = rng.standard_normal((m, k + 3)).astype(dtype)
    B = rng.standard_normal((k + 3, n)).astype(dtype)
    C = misaligned((m, n), dtype, offset, rng)
    index = rng.permutation(k + 3)[:k]
    expected = gemm_reference(A, B, C, -1.5, beta, index)
    out = blocked_gemm(A, B, C, alpha=-1.5, beta=beta, index=index, n_threads=n_threads)
    assert out is C
    tol = 10 * rtol_for(dtype) * np.sqrt(k)
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("m,n", [(1, 1), (17, 33), (40, 128)])
def test_blocked_gemm_index_of_length_one(dtype, n_threads, m, n):
    rng = np.random.default_rng(m * n)
    A = rng.standard_normal((m, 6)).astype(dtype)
    B = rng.standard_normal((6, n)).astype(dtype)
    out = blocked_gemm(A, B, index=[4], n_threads=n_threads)
    np.testing.assert_allclose(out, np.outer(A[:, 4], B[4]), rtol=rtol_for(dtype))


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("n", [33, 64])
def test_blocked_gemm_index_beta_zero_ignores_nan_in_C(dtype, n_threads, n):
    rng = np.random.default_rng(n)
    A = rng.standard_normal((30, 10)).astype(dtype)
    B = rng.standard_normal((10, n)).astype(dtype)
    index = [7, 1, 1, 4]
    C = np.full((30, n), np.nan, dtype)
    blocked_gemm(A, B, C, index=index, n_threads=n_threads)
    expected = gemm_reference(A, B, None, 1.0, 0.0, np.array(index))
    np.testing.assert_allclose(C, expected, rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype))


@pytest.mark.parametrize("n_threads", THREADS)
def test_blocked_gemm_index_empty_or_alpha_zero_scales_C(dtype, n_threads):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((20, 8)).astype(dtype)
    B = rng.standard_normal((8, 70)).astype(dtype)
    C0 = rng.standard_normal((20, 70)).astype(dtype)
    C = C0.copy()
    blocked_gemm(A, B, C, beta=3.0, index=[], n_threads=n_threads)
    np.testing.assert_allclose(C, 3.0 * C0, rtol=rtol_for(dtype))
    # As in BLAS, alpha = 0 reads neither A nor B.
    A[0, 2] = np.nan
    C = C0.copy()
    blocked_gemm(A, B, C, alpha=0.0, beta=-1.0, index=[2, 5], n_threads=n_threads)
    np.testing.assert_allclose(C, -C0, rtol=rtol_for(dtype))


@pytest.mark.parametrize("n_threads", THREADS)
def test_blocked_gemm_index_spans_several_tiles(dtype, n_threads):
    # Several row and column tiles, row blocks and a shared dimension longer
    # than one L1 panel.
    rng = np.random.default_rng(12)
    A = rng.standard_normal((1100, 700)).astype(dtype)
    B = rng.standard_normal((700, 2600)).astype(dtype)
    index = np.sort(rng.choice(700, 300, replace=False))
    C = rng.standard_normal((1100, 2600)).astype(dtype)
    expected = gemm_reference(A, B, C, 0.5, 0.0, index)
    blocked_gemm(A, B, C, alpha=0.5, index=index, n_threads=n_threads)
    tol = 10 * rtol_for(dtype) * np.sqrt(300)
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol)


def test_blocked_gemm_index_forms(dtype):
    rng = np.random.default_rng(9)
    A = rng.standard_normal((40, 12)).astype(dtype)
    B = rng.standard_normal((12, 30)).astype(dtype)
    tol = 10 * rtol_for(dtype)
    for index in ([0, 0, 5], [-1, 3], np.arange(12) % 2 == 0, np.array([], dtype=int)):
        expected = gemm_reference(A, B, None, 1.0, 0.0, np.asarray(index))
        np.testing.assert_allclose(blocked_gemm(A, B, index=index), expected, rtol=tol, atol=tol)


def test_blocked_gemm_empty_dimensions(dtype):
    for m, n, k in [(0, 5, 3), (5, 0, 3), (5, 4, 0)]:
        A, B = np.ones((m, k), dtype), np.ones((k, n), dtype)
        np.testing.assert_array_equal(blocked_gemm(A, B), np.zeros((m, n)))
        C = np.ones((m, n), dtype)
        blocked_gemm(A, B, C, beta=3.0)
        np.testing.assert_array_equal(C, np.full((m, n), 3.0))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(B=np.ones((4, 2))), ValueError, "A's columns must equal B's rows"),
        (dict(C=np.ones((3, 2), np.float32)), ValueError, "C must be a writeable C-contiguous float64"),
        (dict(C=np.ones((2, 3))), ValueError, r"of shape \(3, 2\)"),
        (dict(C=np.asfortranarray(np.ones((3, 2)))), ValueError, "C-contiguous"),
        (dict(beta=1.0), ValueError, "beta must be 0 when C is not given"),
        (dict(alpha=np.inf), ValueError, "alpha must be a finite real number"),
        (dict(index=[5]), ValueError, r"index must hold positions in \[-5, 5\)"),
        (dict(index=[[0]]), TypeError, "index must be a 1-D array of integers"),
        (dict(index=[0.5]), TypeError, "index must be a 1-D array of integers"),
        (dict(index=np.ones(4, bool)), ValueError, "boolean mask must have shape"),
    ],
)
def test_blocked_gemm_rejects_bad_input(kwargs, error, match):
    args = dict(A=np.ones((3, 5)), B=np.ones((5, 2)))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        blocked_gemm(args.pop("A"), args.pop("B"), **args)


# ---------------------------------------------------------------- lowrank_update_


@pytest.mark.parametrize("u_sparse", [False, True], ids=["U-dense", "U-csr"])
@pytest.mark.parametrize("v_sparse", [False, True], ids=["V-dense", "V-csr"])
@pytest.mark.parametrize("n_threads", THREADS)
def test_lowrank_update_matches_numpy(dtype, u_sparse, v_sparse, n_threads):
    rng = np.random.default_rng(10)
    W = rng.standard_normal((300, 400)).astype(dtype)
    U = random_csr(rng, 300, 24, 0.05, dtype)
    V = random_csr(rng, 24, 400, 0.05, dtype)
    expected = W.astype(np.float64) - 1.5 * (U.toarray().astype(np.float64) @ V.toarray())
    lowrank_update_(W, U if u_sparse else U.toarray(), V if v_sparse else V.toarray(),
                    alpha=-1.5, n_threads=n_threads)
    tol = 10 * rtol_for(dtype)
    np.testing.assert_allclose(W, expected, rtol=tol, atol=tol)


def test_sparse_update_writes_only_the_product_pattern(dtype):
    rng = np.random.default_rng(11)
    U = random_csr(rng, 200, 16, 0.03, dtype)
    V = random_csr(rng, 16, 300, 0.03, dtype)
    pattern = (abs(U).astype(bool).astype(int) @ abs(V).astype(bool).astype(int)).toarray() > 0
    W = np.full((200, 300), np.nan, dtype)
    W[pattern] = 1.0
    lowrank_update_(W, U, V)
    assert np.all(np.isnan(W[~pattern])), "an entry outside U @ V's pattern was written"
    expected = 1.0 + (U @ V).toarray()
    np.testing.assert_allclose(W[pattern], expected[pattern], rtol=rtol_for(dtype))


@pytest.mark.parametrize("n_rows", [1, 2, 3])
@pytest.mark.parametrize("n_threads", THREADS)
def test_sparse_update_of_a_few_rows_some_without_writes(dtype, n_rows, n_threads):
    # Each row's writes request the next row's: the last row has none after
    # it, and a row without writes sits between rows with them.
    rng = np.random.default_rng(13)
    W = rng.standard_normal((n_rows, 40)).astype(dtype)
    U = sp.csr_matrix(np.array([[1.5, 0.0, -2.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]],
                               dtype=dtype)[:n_rows])
    V = random_csr(rng, 3, 40, 0.3, dtype)
    expected = W.astype(np.float64) + U.toarray().astype(np.float64) @ V.toarray()
    lowrank_update_(W, U, V, n_threads=n_threads)
    np.testing.assert_allclose(W, expected, rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype))


@pytest.mark.parametrize("empty", ["U", "V"])
def test_sparse_update_with_an_all_zero_factor_leaves_w_unchanged(dtype, empty):
    rng = np.random.default_rng(12)
    W = rng.standard_normal((50, 60)).astype(dtype)
    U = random_csr(rng, 50, 8, 0.1, dtype)
    V = random_csr(rng, 8, 60, 0.1, dtype)
    if empty == "U":
        U = sp.csr_matrix(U.shape, dtype=dtype)
    else:
        V = sp.csr_matrix(V.shape, dtype=dtype)
    before = W.copy()
    lowrank_update_(W, U, V)
    np.testing.assert_array_equal(W, before)


@pytest.mark.parametrize(
    "W,U,V,error,match",
    [
        (np.ones((3, 4), np.int64), np.ones((3, 1)), np.ones((1, 4)), TypeError, "W must be a writeable"),
        (np.asfortranarray(np.ones((3, 4))), np.ones((3, 1)), np.ones((1, 4)), TypeError, "C-contiguous"),
        (np.ones((3, 4)), np.ones((2, 1)), np.ones((1, 4)), ValueError, r"U must have shape \(3, r\)"),
        (np.ones((3, 4)), np.ones((3, 2)), np.ones((1, 4)), ValueError, r"V must have shape \(2, 4\)"),
        (np.ones((3, 4)), np.full((3, 1), np.inf), np.ones((1, 4)), ValueError, "U contains NaN"),
    ],
)
def test_lowrank_update_rejects_bad_input(W, U, V, error, match):
    with pytest.raises(error, match=match):
        lowrank_update_(W, U, V)


def test_lowrank_update_rejects_read_only_w():
    W = np.ones((3, 4))
    W.setflags(write=False)
    with pytest.raises(TypeError, match="writeable"):
        lowrank_update_(W, np.ones((3, 1)), np.ones((1, 4)))


# ------------------------------------------------------------------ LowRankWeight


def test_lowrank_weight_products_match_the_merged_matrix(dtype):
    rng = np.random.default_rng(12)
    W0 = rng.standard_normal((120, 500)).astype(dtype)
    lr = LowRankWeight(W0, max_rank=40)
    dense = W0.astype(np.float64)
    for step in range(3):
        U = random_csr(rng, 120, 8, 0.1, dtype)
        V = random_csr(rng, 8, 500, 0.1, dtype)
        lr.add(U, V, alpha=0.5)
        dense += 0.5 * (U @ V).toarray()
    assert lr.rank == 24 and lr.n_merges == 0
    np.testing.assert_array_equal(lr.base, W0)  # nothing merged yet
    tol = 20 * rtol_for(dtype)
    np.testing.assert_allclose(lr.toarray(), dense, rtol=tol, atol=tol)
    H = random_csr(rng, 70, 120, 0.1, dtype)
    for H_in in (H, H.toarray()):
        np.testing.assert_allclose(lr.matmul(H_in), H.toarray() @ dense, rtol=tol, atol=tol)
        bias = rng.standard_normal(500)
        A = lr.threshold_matmul(H_in, 0.1, bias=bias)
        assert_csr_matches(A, threshold_reference(H, dense, 0.1, bias), dtype)


def test_lowrank_weight_merges_when_rank_would_exceed_max(dtype):
    rng = np.random.default_rng(13)
    W0 = rng.standard_normal((50, 60)).astype(dtype)
    original = W0.copy()
    lr = LowRankWeight(W0, max_rank=10)
    expected = W0.astype(np.float64)
    for _ in range(4):
        U, V = rng.standard_normal((50, 4)), rng.standard_normal((4, 60))
        lr.add(U, V)
        expected += U @ V
    assert lr.n_merges == 1 and lr.rank == 8
    wide_U, wide_V = rng.standard_normal((50, 12)), rng.standard_normal((12, 60))
    lr.add(wide_U, wide_V)  # wider than max_rank: applied to the base directly
    expected += wide_U @ wide_V
    assert lr.rank == 8
    lr.materialize()
    assert lr.rank == 0 and lr.n_merges == 2
    tol = 50 * rtol_for(dtype)
    np.testing.assert_allclose(lr.base, expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(W0, original)  # copy=True leaves the input alone


def test_lowrank_weight_copy_semantics_and_errors():
    W = np.zeros((4, 5))
    LowRankWeight(W).add(np.ones((4, 1)), np.ones((1, 5)))
    shared = LowRankWeight(W, max_rank=1, copy=False)
    shared.add(np.ones((4, 1)), np.ones((1, 5)))
    shared.materialize()
    assert np.all(W == 1.0), "copy=False must merge into the caller's array"
    with pytest.raises(ValueError, match="max_rank must be a positive integer"):
        LowRankWeight(W, max_rank=0)
    with pytest.raises(ValueError, match=r"U must have shape \(4, r\)"):
        shared.add(np.ones((3, 1)), np.ones((1, 5)))
    with pytest.raises(ValueError, match="H must have 4 columns"):
        shared.matmul(np.ones((2, 3)))
    assert "rank=0" in repr(shared)


def test_row_pointers_of_csr_outputs_reject_more_than_int32_entries():
    from subquad._csr_output import row_pointers

    np.testing.assert_array_equal(row_pointers(np.array([2, 0, 3]), "f", "retry"),
                                  [0, 2, 2, 5])
    with pytest.raises(ValueError, match=r"threshold_matmul: the output has 2147483648 "
                                         r"nonzeros.*pass H in row batches"):
        row_pointers(np.array([2**30, 2**30]), "threshold_matmul", "pass H in row batches")
