"""Oblivious linear sketches and degree-q tensor sketches (DESIGN §6)."""

import numbers

import numpy as np
import scipy.fft
import scipy.sparse as sp
from sklearn.utils import check_random_state

from .._threads import effective_n_threads
from . import _kernels
from ._base import (SparseTable, SRHTFactor, check_input, check_positive_int, osnap_table,
                    row_chunks, threads_for, unit_scale)

__all__ = ["CountSketch", "OSNAP", "SRHT", "TensorSketch", "TensorSRHT"]


class _Sketch:
    """Random tables are drawn once, in the constructor; ``transform`` is a
    deterministic function of them."""

    def __init__(self, n_features, n_components, random_state, n_threads):
        self.n_features = check_positive_int(n_features, "n_features")
        self.n_components = check_positive_int(n_components, "n_components")
        effective_n_threads(n_threads)  # reject a bad value now, not at transform
        self.n_threads = n_threads
        self.random_state = random_state

    def transform(self, X):
        """Sketch each row of `X`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Dense or CSR input. float32 input gives float32 output; any
            other dtype is converted to float64.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        X = check_input(X, self.n_features)
        return self._transform(X, unit_scale(X.shape[0], X.dtype), 0.0,
                               effective_n_threads(self.n_threads))

    def _out(self, n_rows, dtype):
        return np.empty((n_rows, self.n_components), dtype=dtype)


class OSNAP(_Sketch):
    """Sparse sketch with `density` nonzeros ``±1/sqrt(density)`` per column.

    Each column of the ``(n_components, n_features)`` sketch matrix ``S`` has
    one nonzero in each of `density` contiguous row blocks (Nelson and
    Nguyễn's block construction), so ``E[SᵀS] = I`` and inner products are
    unbiased. Applying it costs ``density · nnz(X)``.

    Parameters
    ----------
    n_features : int
        Input dimension.
    n_components : int
        Output dimension.
    random_state : int, RandomState instance or None, default=None
        Seeds the hash and sign tables.
    density : int, default=4
        Nonzeros per column (``s`` in the literature), ``1 <= density <=
        n_components``. Higher density gives tighter tail bounds at a
        proportional cost; ``density=1`` is a CountSketch.
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.

    Examples
    --------
    >>> import numpy as np
    >>> from subquad.sketch import OSNAP
    >>> X = np.random.default_rng(0).standard_normal((5, 1000))
    >>> OSNAP(1000, 64, random_state=0).transform(X).shape
    (5, 64)
    """

    def __init__(self, n_features, n_components, random_state=None, density=4,
                 n_threads=None):
        super().__init__(n_features, n_components, random_state, n_threads)
        density = check_positive_int(density, "density")
        if density > self.n_components:
            raise ValueError(f"density must be at most n_components={self.n_components}, "
                             f"got {density}")
        self.density = density
        self._table = osnap_table(self.n_features, self.n_components, density,
                                  check_random_state(random_state))

    def _transform(self, X, row_scale, bias, n_threads):
        out = self._out(X.shape[0], X.dtype)
        self._table.apply(X, row_scale, bias, out, n_threads)
        return out


class CountSketch(OSNAP):
    """CountSketch: each input coordinate goes to one random output
    coordinate with a random sign (Charikar, Chen and Farach-Colton).

    ``E[<Sx, Sy>] = <x, y>``; applying it costs ``nnz(X)``.

    Parameters
    ----------
    n_features : int
        Input dimension.
    n_components : int
        Output dimension.
    random_state : int, RandomState instance or None, default=None
        Seeds the hash and sign tables.
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.
    """

    def __init__(self, n_features, n_components, random_state=None, n_threads=None):
        super().__init__(n_features, n_components, random_state, density=1,
                         n_threads=n_threads)


class SRHT(_Sketch):
    """Subsampled randomised Hadamard transform ``(1/sqrt(s)) · P H D``.

    ``D`` flips signs at random, ``H`` is the unnormalised Walsh–Hadamard
    transform of size ``2^⌈log2 n_features⌉`` (input zero-padded) computed by
    a compiled fast transform, ``P`` keeps ``s = n_components`` coordinates
    (without replacement when ``s`` does not exceed the padded size).
    Inner products are unbiased; applying it costs ``O(d log d)`` per row
    whatever the sparsity of the input.

    Parameters
    ----------
    n_features : int
        Input dimension.
    n_components : int
        Output dimension.
    random_state : int, RandomState instance or None, default=None
        Seeds the signs and the sampled coordinates.
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.
    """

    def __init__(self, n_features, n_components, random_state=None, n_threads=None):
        super().__init__(n_features, n_components, random_state, n_threads)
        rng = check_random_state(random_state)
        m = self.n_components
        self._factor = SRHTFactor(
            self.n_features, lambda size: rng.choice(size, m, replace=m > size), rng)

    def _transform(self, X, row_scale, bias, n_threads):
        out = self._out(X.shape[0], X.dtype)
        self._factor.apply(X, row_scale, bias, 1.0 / np.sqrt(self.n_components), out,
                           False, n_threads)
        return out


def _factor_dims(n_features, degree):
    degree = check_positive_int(degree, "degree")
    if isinstance(n_features, numbers.Integral) and not isinstance(n_features, bool):
        dims = (check_positive_int(n_features, "n_features"),) * degree
    else:
        dims = tuple(check_positive_int(d, "n_features") for d in n_features)
        if len(dims) != degree:
            raise ValueError(f"n_features must be an int or a tuple of degree={degree} "
                             f"ints, got {n_features!r}")
    return degree, dims


class _TensorSketchBase(_Sketch):
    """Common part of the degree-q sketches of ``x_1 ⊗ ... ⊗ x_q``."""

    def __init__(self, n_features, n_components, random_state, n_threads, degree):
        self.degree, self._dims = _factor_dims(n_features, degree)
        super().__init__(self._dims[0], n_components, random_state, n_threads)
        self.n_features = n_features if len(set(self._dims)) > 1 else self._dims[0]

    def transform(self, X):
        """Sketch ``x_i^{⊗degree}`` for each row ``x_i`` of `X`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Dense or CSR input; float32 stays float32.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        if len(set(self._dims)) > 1:
            raise ValueError(f"transform needs equal factor dimensions, got n_features="
                             f"{self.n_features}; use transform_pair")
        X = check_input(X, self._dims[0])
        scale = unit_scale(X.shape[0], X.dtype)
        return self._transform_factors([X] * self.degree, scale, 0.0,
                                       effective_n_threads(self.n_threads))

    def _transform(self, X, row_scale, bias, n_threads):
        return self._transform_factors([X] * self.degree, row_scale, bias, n_threads)

    def transform_pair(self, X, Y):
        """Sketch ``x_i ⊗ y_i`` for each row pair without forming it.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features[0])
        Y : {array-like, sparse matrix} of shape (n_samples, n_features[1])
            Dense or CSR. The output is float32 only if both are float32.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            Row ``i`` is the sketch of ``np.kron(X[i], Y[i])``.
        """
        if self.degree != 2:
            raise ValueError(f"transform_pair needs degree=2, this sketch has degree="
                             f"{self.degree}")
        X = check_input(X, self._dims[0], "X")
        Y = check_input(Y, self._dims[1], "Y")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y must have the same number of rows, got "
                             f"{X.shape[0]} and {Y.shape[0]}")
        dtype = np.result_type(X.dtype, Y.dtype)
        X, Y = X.astype(dtype, copy=False), Y.astype(dtype, copy=False)
        return self._transform_factors([X, Y], unit_scale(X.shape[0], dtype), 0.0,
                                       effective_n_threads(self.n_threads))


class TensorSketch(_TensorSketchBase):
    """TensorSketch of Pham and Pagh: ``degree`` independent CountSketches
    multiplied in the Fourier domain.

    The sketch of ``x_1 ⊗ ... ⊗ x_q`` is the circular convolution of the
    CountSketches ``C_k x_k``, i.e. ``irfft(Π_k rfft(C_k x_k))``; its inner
    products are unbiased for ``Π_k <x_k, y_k>``. Cost per row:
    ``q · nnz(x) + O(q · s log s)``.

    Parameters
    ----------
    n_features : int or tuple of int
        Input dimension, or one per factor (for ``transform_pair`` of
        vectors of different lengths).
    n_components : int
        Output dimension ``s``.
    random_state : int, RandomState instance or None, default=None
        Seeds the hash and sign tables.
    n_threads : int or None, default=None
        Threads for the CountSketches and the FFTs.
    degree : int, default=2
        Tensor power sketched by ``transform``.
    """

    def __init__(self, n_features, n_components, random_state=None, n_threads=None,
                 degree=2):
        super().__init__(n_features, n_components, random_state, n_threads, degree)
        rng = check_random_state(random_state)
        m = self.n_components
        if len(set(self._dims)) == 1:
            # Stacked side by side, one pass over X fills every factor.
            self._stacked = osnap_table(self._dims[0], m, 1, rng, n_copies=self.degree)
            values = self._stacked.values(np.float64)
            self._tables = [SparseTable(self._stacked.indices[:, k:k + 1] - k * m,
                                        values[:, k:k + 1]) for k in range(self.degree)]
        else:
            self._tables = [osnap_table(d, m, 1, rng) for d in self._dims]

    def _transform_factors(self, factors, row_scale, bias, n_threads):
        n, m, q = factors[0].shape[0], self.n_components, self.degree
        out = self._out(n, factors[0].dtype)
        shared = all(f is factors[0] for f in factors)
        cost = _direct_cost(factors[0], factors[-1], q, m, bias)
        if cost < _fft_cost(q, m):
            return self._transform_direct(factors[0], factors[-1], shared, row_scale, bias,
                                          out, cost, n_threads)
        for chunk in row_chunks(n, 3 * q * m):
            parts = np.empty((chunk.stop - chunk.start, q * m), dtype=out.dtype)
            if shared:
                self._stacked.apply(factors[0][chunk], row_scale[chunk], bias, parts,
                                    n_threads)
            else:
                for k, (table, X) in enumerate(zip(self._tables, factors)):
                    table.apply(X[chunk], row_scale[chunk], bias,
                                parts[:, k * m:(k + 1) * m], n_threads)
            spectra = scipy.fft.rfft(parts.reshape(-1, q, m), axis=-1, workers=n_threads)
            product = spectra[:, 0]
            for k in range(1, q):
                product *= spectra[:, k]
            out[chunk] = scipy.fft.irfft(product, n=m, axis=-1, workers=n_threads)
        return out

    def _transform_direct(self, A, B, shared, row_scale, bias, out, cost, n_threads):
        """Convolve in the bucket domain (see ``tensor_sketch_direct``); the
        result equals the FFT path up to rounding. `cost`: operations per row."""
        m, dtype = self.n_components, out.dtype
        if shared:
            buckets = self._stacked.indices - np.arange(self.degree) * m
            signs = self._stacked.values(dtype)
            h_a, v_a = buckets[:, 0], signs[:, 0]
            h_b, v_b = buckets[:, 1:], signs[:, 1:]
        else:
            (first, second) = self._tables
            h_a, v_a = first.indices[:, 0], first.values(dtype)[:, 0]
            h_b, v_b = second.indices, second.values(dtype)
        A, B = (_csr64(A, dtype),) * 2 if A is B else (_csr64(A, dtype), _csr64(B, dtype))
        n_threads = threads_for(n_threads, A.shape[0], cost)
        _kernels.tensor_sketch_direct(
            A.data, A.indices, A.indptr, A.shape[1], B.data, B.indices, B.indptr, B.shape[1],
            row_scale, dtype.type(bias), np.ascontiguousarray(h_a, dtype=np.int32),
            np.ascontiguousarray(v_a), np.ascontiguousarray(h_b, dtype=np.int32),
            np.ascontiguousarray(v_b), out, n_threads)
        return out


def _csr64(X, dtype):
    X = sp.csr_matrix(X, dtype=dtype)
    X.indices = X.indices.astype(np.int64, copy=False)
    X.indptr = X.indptr.astype(np.int64, copy=False)
    return X


def _mean_nnz(X, bias):
    nnz = X.nnz if sp.issparse(X) else np.count_nonzero(X)
    return nnz / max(1, X.shape[0]) + (bias != 0)


def _direct_cost(A, B, degree, n_components, bias):
    """Operations per row of the bucket-domain convolution: one scattered
    multiply-add per pair of nonzeros of the first two factors, then one
    (vectorised, ~4x cheaper) shifted axpy per nonzero of each further one."""
    nnz_a = _mean_nnz(A, bias)
    nnz_b = nnz_a if B is A else _mean_nnz(B, bias)
    return int(nnz_a * nnz_b + (degree - 2) * n_components * nnz_b / 4) + 1


# Cost of one FFT point (per component, per log2 stage, per transform) in
# units of _direct_cost: 0.4-0.6 single-threaded on digits and on 1%-dense
# CSR rows, degrees 2-4, 256-4096 components (the direct path won or tied
# in all of them, 1.1-6x at degree 2); on 2 threads the direct path, one
# parallel region, gains more than the chunked FFTs (digits, degree 4,
# 256 components: 12 ms direct against 24 ms), hence the higher constant.
FFT_COST_PER_POINT = 1.0


def _fft_cost(degree, n_components):
    """Cost per row of the FFT path, in the units of _direct_cost."""
    return FFT_COST_PER_POINT * (degree + 1) * n_components * max(1, np.log2(n_components))


class TensorSRHT(_TensorSketchBase):
    """TensorSRHT: ``(1/sqrt(s)) · P (H D_1 x_1 ⊗ ... ⊗ H D_q x_q)``.

    Each factor gets its own random signs and Hadamard transform; each of the
    ``s`` output coordinates is the product of one independently sampled
    coordinate per factor, so the ``d^q`` tensor is never formed. Inner
    products are unbiased for ``Π_k <x_k, y_k>``. Cost per row:
    ``Σ_k d_k log d_k + q · s``.

    Parameters
    ----------
    n_features : int or tuple of int
        Input dimension, or one per factor.
    n_components : int
        Output dimension ``s``.
    random_state : int, RandomState instance or None, default=None
        Seeds the signs and the sampled coordinates.
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.
    degree : int, default=2
        Tensor power sketched by ``transform``.
    """

    def __init__(self, n_features, n_components, random_state=None, n_threads=None,
                 degree=2):
        super().__init__(n_features, n_components, random_state, n_threads, degree)
        rng = check_random_state(random_state)
        m = self.n_components
        self._factors = [SRHTFactor(d, lambda size: rng.randint(0, size, size=m), rng)
                         for d in self._dims]

    def _transform_factors(self, factors, row_scale, bias, n_threads):
        out = self._out(factors[0].shape[0], factors[0].dtype)
        scale = 1.0 / np.sqrt(self.n_components)
        for k, (factor, X) in enumerate(zip(self._factors, factors)):
            factor.apply(X, row_scale, bias, scale if k == 0 else 1.0, out, k > 0,
                         n_threads)
        return out
