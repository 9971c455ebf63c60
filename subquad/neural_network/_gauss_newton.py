"""Damped Gauss–Newton step for a shifted-ReLU network (DESIGN.md §5).

Notation: a batch of n samples, C outputs, hidden layers l = 1..L with
activations ``H_l`` (H_0 = X) and the linear output layer on ``H_L``. The
derivative of output k of sample i is

* w.r.t. hidden layer l: ``W_l``: ``h_{i,l-1} ⊗ v_{i,k,l}``, ``c_l``: ``v_{i,k,l}``,
  with ``v_{i,k,L} = W_out[:, k] ⊙ 1[h_{i,L} > 0]`` and
  ``v_{i,k,l-1} = (W_l v_{i,k,l}) ⊙ 1[h_{i,l-1} > 0]`` (ReLU' is 1 exactly on
  the active units, so v lives on the active pattern of sample i);
* w.r.t. the output layer: ``h_{i,L} ⊗ e_k`` and ``e_k``.

The Jacobian J (rows (i, k), ordered ``i * C + k``) is never formed. Its Gram
is ``G = Σ_l (H_{l-1} H_{l-1}ᵀ + 1) ∘ (V_l V_lᵀ) + (H_L H_Lᵀ + 1) ⊗ I_C``
(the ``+ 1`` is the bias), an nC × nC matrix assembled from sparse products.

Losses. Squared loss with residual r = f − y: the step is
``Δθ = −Jᵀ (G + λI)⁻¹ r``. Softmax cross-entropy (generalised Gauss–Newton):
with ``B_i = diag(p_i) − p_i p_iᵀ`` and gradient ``g_i = p_i − y_i`` the
GGN step ``−(JᵀBJ + λI)⁻¹ Jᵀ g`` equals ``−Jᵀ B^{1/2} (G̃ + λI)⁻¹ ĝ`` with
``G̃ = B^{1/2} G B^{1/2}`` (symmetric, so Cholesky and CG apply) and
``ĝ = (B^{1/2})⁺ g`` (g is orthogonal to the null vector 1 of every B_i).
Both are sums of the same form, ``Δθ = −Σ_{i,k} A_{ik} ∂f_{ik}/∂θ``, so the
hidden-layer update is ``ΔW_l = −H_{l-1}ᵀ V'_l`` with ``V'_l`` row i
``Σ_k A_{ik} v_{i,k,l}``: rank ≤ n, sparse on the active pattern, applied in
place by `lowrank_update_` (dividing by the stored scale of the layer).

Damping is Levenberg–Marquardt, relative to the mean diagonal of G̃. A step
that lowers the batch loss is kept, otherwise it is undone and λ grows by 10
(up to a cap). For a kept step, the gain ratio ρ = (actual decrease) /
(decrease predicted by the quadratic model ``gᵀu − ½ uᵀBu``, u = −JΔθ)
steers λ: divided by 3 when ρ > 3/4 (the model is trusted), doubled when
ρ < 1/4. Shrinking λ merely because the loss fell lets it collapse while
activation-pattern flips make the model poor, and steps stall.
"""

import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.special import log_softmax

from .._threads import blas_threads_limited, threads_for_work
from ..linalg import lowrank_update_
from ..sketch import TensorSRHT
from ._gauss_newton_backprop import backprop_active_blocks, sparse_row_gram

LOSSES = ("squared", "cross-entropy")
METHODS = ("auto", "cholesky", "sketch-cg")
# Largest Gram accepted before allocating it: 2 GiB of float64.
MAX_GRAM_BYTES = 2 << 30
_SHRINK = 1.0 / 3.0
_GROW = 10.0
_GROW_POOR_FIT = 2.0
# Dense factorisations (Cholesky, the preconditioner's QR and SVD) and CG's
# products run on one BLAS thread. Measured on 2 busy cores: the first multi-threaded LAPACK call
# after the OpenMP kernels took 20x longer than one thread (n*C = 2000:
# Cholesky 3.0 s vs 0.16 s; preconditioner 29 s vs 6.9 s), later ones at most
# 1.5x less; at n*C = 442 the penalty was 100x. Measured again with the other
# core busy, outside the bench: Cholesky of n*C = 4000 took 6.2 s on two BLAS
# threads and 1.1 s on one. CG's product with the Gram is bound by memory
# bandwidth, so both solvers keep the same one-thread budget.

# gn_solver='auto' uses 'sketch-cg' from this system size n*C on and Cholesky
# below it. `python bench/gauss_newton.py --sections 3` (2 x 2048 network,
# C = 1, 2 busy cores, four runs) measured sketch-CG at 1.6-3.2x Cholesky's
# time at n*C = 1000, 0.9-1.5x at 1500, 0.6-1.0x at 2000 and 0.26-0.43x from
# 4000 to 12000: it takes 10-45 products with the Gram (2 (n*C)^2 each)
# against Cholesky's (n*C)^3 / 3, but its sketch costs 0.03-0.1 s even at
# n*C = 1000.
SKETCH_CG_MIN_SIZE = 2000
# Sketch columns of gn_sketch_size='auto'. The same bench measured no
# iteration saved by the sketch on top of the diagonal scaling with 8 to 256
# columns, except 1-2 of 30-45 with 256 at n*C >= 8000, and more iterations
# with 64 or more at n*C <= 2000, up to 26 against 10 (a small sketch
# estimates the flat spectrum of the scaled Gram poorly); 16 columns cost
# little.
AUTO_SKETCH_SIZE = 16
_MIN_DAMPING = 1e-12
_MAX_DAMPING = 1e8
# Cholesky factors whose squared diagonal spread is below this are treated as
# singular (the solve falls back to a pseudo-inverse).
_CHOLESKY_RCOND = 1e3 * np.finfo(np.float64).eps


class NonFiniteLossError(ValueError):
    """The loss or residual of the batch is NaN or infinite before the step."""


def objective(output, Y, loss):
    """Mean loss of the batch: ``0.5 ||f − y||²`` or softmax cross-entropy
    (infinite or NaN when it overflows: callers test it)."""
    output = output.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if loss == "squared":
            residual = output - Y
            return 0.5 * float(np.sum(residual * residual)) / len(Y)
        return -float(np.sum(Y * log_softmax(output, axis=1))) / len(Y)


def curvature(output, Y, loss):
    """Right-hand side and per-sample curvature root of the GN system.

    Returns
    -------
    rhs : ndarray of shape (n, C)
        ``r = f − y`` (squared) or ``ĝ = (B^{1/2})⁺ (p − y)`` (cross-entropy).
    root : ndarray of shape (n, C, C) or None
        ``B_i^{1/2}``; None for the squared loss (B = I).
    """
    output = output.astype(np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if loss == "squared":
        return output - Y, None
    p = np.exp(log_softmax(output, axis=1))
    B = np.einsum("ij,jk->ijk", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
    eigenvalues, Q = np.linalg.eigh(B)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    root_values = np.sqrt(eigenvalues)
    keep = eigenvalues > 1e-12 * np.maximum(eigenvalues.max(axis=1, keepdims=True), 1e-300)
    inverse_root = np.where(keep, 1.0 / np.where(keep, root_values, 1.0), 0.0)
    root = np.einsum("iab,ib,icb->iac", Q, root_values, Q)
    g = p - Y
    rhs = np.einsum("iab,ib,icb,ic->ia", Q, inverse_root, Q, g)
    return rhs, root


class JacobianFactors:
    """The Jacobian of the network outputs on a batch, in factored form.

    Attributes
    ----------
    inputs : list of ndarray or CSR matrix
        ``H_{l-1}`` for every hidden layer l (n rows).
    patterns : list of CSR matrix
        ``H_l`` for every hidden layer; ``v_{i,k,l}`` lives on its pattern.
    backprop : list of ndarray of shape (nnz(H_l), C)
        ``v_{i,k,l}``: row p holds the values at entry p of ``patterns[l]``.
    n_samples, n_outputs : int
    """

    def __init__(self, inputs, patterns, backprop, n_outputs):
        self.inputs = inputs
        self.patterns = patterns
        self.backprop = backprop
        self.n_samples = patterns[-1].shape[0]
        self.n_outputs = n_outputs

    def backprop_csr(self, layer):
        """``V_l`` as CSR of shape (n*C, m_l), row ``i*C + k`` = ``v_{i,k,l}``."""
        pattern, values = self.patterns[layer], self.backprop[layer]
        C = self.n_outputs
        counts = np.diff(pattern.indptr)
        rows = np.repeat(np.arange(pattern.shape[0]), counts)
        offset = np.arange(pattern.nnz) - pattern.indptr[rows]
        start = C * pattern.indptr[rows] + offset
        data = np.empty(C * pattern.nnz, dtype=np.float64)
        indices = np.empty(C * pattern.nnz, dtype=pattern.indices.dtype)
        for k in range(C):
            destination = start + k * counts[rows]
            data[destination] = values[:, k]
            indices[destination] = pattern.indices
        indptr = np.concatenate([[0], np.cumsum(np.repeat(counts, C))])
        return sp.csr_matrix((data, indices, indptr),
                             shape=(pattern.shape[0] * C, pattern.shape[1]))


def _as_csr(H):
    return H if sp.issparse(H) else sp.csr_matrix(H)


def jacobian_factors(network, activations):
    """Back-propagate one vector per output through the active units.

    Parameters
    ----------
    network : SparseNetwork or DenseNetwork
    activations : list
        From ``network.forward(X)``: X, then one activation matrix per hidden
        layer (CSR or dense).

    Returns
    -------
    JacobianFactors
    """
    patterns = [_as_csr(H) for H in activations[1:]]
    n_hidden = len(patterns)
    backprop = [None] * n_hidden
    last = patterns[-1]
    # v_{i,k,L} = W_out[active units of sample i, k]
    backprop[-1] = np.ascontiguousarray(network.W_out[last.indices], dtype=np.float64)
    for layer in range(n_hidden - 1, 0, -1):
        inner, outer = patterns[layer - 1], patterns[layer]
        values = np.empty((inner.nnz, network.W_out.shape[1]))
        positions = sp.csr_matrix((np.arange(inner.nnz, dtype=np.int64), inner.indices,
                                   inner.indptr), shape=inner.shape).tocsc()
        backprop_active_blocks(
            network.hidden_W[layer], float(network.scales[layer]),
            np.ascontiguousarray(positions.indptr, dtype=np.int64),
            np.ascontiguousarray(positions.indices, dtype=np.int32),
            np.ascontiguousarray(positions.data, dtype=np.int64),
            np.ascontiguousarray(outer.indices, dtype=np.int32),
            np.ascontiguousarray(outer.indptr, dtype=np.int64),
            backprop[layer], values,
            threads_for_work(network.n_threads, inner.nnz * outer.nnz / max(outer.shape[0], 1)))
        backprop[layer - 1] = values
    return JacobianFactors([activations[0]] + patterns[:-1], patterns, backprop,
                           network.W_out.shape[1])


def _row_gram(A, n_threads):
    """``A Aᵀ`` as a dense float64 array (A dense, or CSR with few entries
    per column, by `sparse_row_gram`)."""
    if not sp.issparse(A):
        A = np.asarray(A, dtype=np.float64)
        return A @ A.T
    A = sp.csr_matrix(A, dtype=np.float64)
    columns = A.tocsc()
    out = np.empty((A.shape[0], A.shape[0]))
    sparse_row_gram(A.data, np.ascontiguousarray(A.indices, dtype=np.int32),
                    np.ascontiguousarray(A.indptr, dtype=np.int64), columns.data,
                    np.ascontiguousarray(columns.indices, dtype=np.int32),
                    np.ascontiguousarray(columns.indptr, dtype=np.int64), out,
                    threads_for_work(n_threads, A.nnz * A.nnz / max(A.shape[1], 1)))
    return out


def check_system_size(n_samples, n_outputs):
    """Raise before allocating a Gram that would not fit `MAX_GRAM_BYTES`."""
    size = n_samples * n_outputs
    if 8 * size * size > MAX_GRAM_BYTES:
        raise ValueError(
            f"the Gauss-Newton system has n_samples * n_outputs = {n_samples} * "
            f"{n_outputs} = {size} rows; its Gram would need {8 * size * size / 2**30:.1f} "
            f"GiB (limit {MAX_GRAM_BYTES / 2**30:.0f} GiB). Use a smaller batch_size.")


def jacobian_gram(factors, n_threads=1):
    """``J Jᵀ`` (n*C × n*C, float64) from the factors, without forming J."""
    n, C = factors.n_samples, factors.n_outputs
    check_system_size(n, C)
    repeat = np.repeat(np.arange(n), C)
    gram = np.kron(_row_gram(factors.patterns[-1], n_threads) + 1.0, np.eye(C))
    for layer, H_in in enumerate(factors.inputs):
        inputs = _row_gram(H_in, n_threads) + 1.0
        gram += inputs[np.ix_(repeat, repeat)] * _row_gram(factors.backprop_csr(layer), n_threads)
    return gram


def _layer_updates(factors, coefficients):
    """``V'_l`` (CSR, n × m_l) of every hidden layer: row i is
    ``Σ_k A_{ik} v_{i,k,l}``."""
    updates = []
    for pattern, values in zip(factors.patterns, factors.backprop):
        rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
        combined = np.einsum("pk,pk->p", coefficients[rows], values)
        updates.append(sp.csr_matrix((combined, pattern.indices, pattern.indptr),
                                     shape=pattern.shape))
    return updates


def _representable(factors, updates, coefficients, dtype):
    """Whether every change stays finite in `dtype`: a bound on each entry of
    ``H_{l-1}ᵀ V'_l`` (max |h| · n · max |v'|) and of the output layer's."""
    limit = np.finfo(dtype).max / 4
    n = factors.n_samples
    largest_coefficient = np.abs(coefficients).max(initial=0.0)
    pairs = [(H_in, update.data) for H_in, update in zip(factors.inputs, updates)]
    pairs.append((factors.patterns[-1], coefficients))
    for H_in, values in pairs:
        h_max = np.abs(H_in.data if sp.issparse(H_in) else H_in).max(initial=0.0)
        v_max = np.abs(values).max(initial=0.0)
        if not (np.isfinite(v_max) and max(h_max, 1.0) * n * v_max < limit):
            return False
    return bool(np.isfinite(largest_coefficient) and n * largest_coefficient < limit)


def apply_direction(network, factors, coefficients, sign=-1.0):
    """Add ``sign * Σ_{i,k} A_{ik} ∂f_{ik}/∂θ`` to every parameter in place.

    ``sign=-1`` applies the Gauss–Newton step; ``sign=+1`` undoes it (exactly
    up to one rounding per touched weight).

    Returns
    -------
    bool
        False, with nothing changed, if a change would not be finite in the
        network's dtype.
    """
    dtype = network.dtype
    coefficients = np.asarray(coefficients, dtype=np.float64)
    updates = _layer_updates(factors, coefficients)
    if not _representable(factors, updates, coefficients, dtype):
        return False
    for layer, update in enumerate(updates):
        H_in = factors.inputs[layer]
        U = H_in.T.tocsr() if sp.issparse(H_in) else sp.csr_matrix(np.asarray(H_in).T)
        lowrank_update_(network.hidden_W[layer], U, update,
                        alpha=sign / network.scales[layer], n_threads=network.n_threads)
        bias = np.bincount(update.indices, weights=update.data, minlength=update.shape[1])
        network.hidden_c[layer] += (sign * bias).astype(dtype)
    H_last = factors.patterns[-1].astype(np.float64)
    network.W_out += (sign * np.asarray(H_last.T @ coefficients)).astype(dtype)
    network.c_out += (sign * coefficients.sum(axis=0)).astype(dtype)
    return True


# ------------------------------------------------------------------ solvers


def solve_cholesky(gram, rhs, damping):
    """Solve ``(gram + damping I) x = rhs`` by Cholesky, or by a pseudo-inverse
    (eigh) when the matrix is singular or too ill-conditioned.

    Returns
    -------
    x : ndarray
    method : {'cholesky', 'eigh'}
    """
    system = gram + damping * np.eye(len(gram))
    with blas_threads_limited(1):
        return _solve_cholesky(system, rhs)


def _solve_cholesky(system, rhs):
    try:
        factor = scipy.linalg.cho_factor(system, lower=True, check_finite=False)
        diagonal = np.diag(factor[0]) ** 2
        if diagonal.min() > _CHOLESKY_RCOND * diagonal.max():
            return scipy.linalg.cho_solve(factor, rhs, check_finite=False), "cholesky"
    except np.linalg.LinAlgError:
        pass
    eigenvalues, Q = np.linalg.eigh(system)
    cutoff = len(system) * np.finfo(np.float64).eps * max(np.abs(eigenvalues).max(), 1e-300)
    inverse = np.where(eigenvalues > cutoff, 1.0 / np.where(eigenvalues > cutoff,
                                                            eigenvalues, 1.0), 0.0)
    return Q @ (inverse * (Q.T @ rhs)), "eigh"


def jacobian_sketch(factors, sketch_size, random_state):
    """Degree-2 sketch of every Jacobian row, shape (n*C, sketch_size).

    Each layer's rows ``[h_{i,l-1}, 1] ⊗ v_{i,k,l}`` are sketched by its own
    `TensorSRHT` via ``transform_pair`` (never formed); the output layer's
    rows are ``[h_{i,L}, 1] ⊗ e_k``. Sketches of the layers are summed: with
    independent random signs, the sum is an unbiased sketch of the
    concatenated row, so ``E[Y Yᵀ] = J Jᵀ``.
    """
    n, C = factors.n_samples, factors.n_outputs
    repeat = np.repeat(np.arange(n), C)
    rng = np.random.default_rng(random_state)

    def with_ones(H):
        H = _as_csr(H).astype(np.float64)
        return sp.hstack([H, np.ones((H.shape[0], 1))], format="csr")[repeat]

    pairs = [(with_ones(H_in), factors.backprop_csr(layer))
             for layer, H_in in enumerate(factors.inputs)]
    pairs.append((with_ones(factors.patterns[-1]), sp.csr_matrix(np.tile(np.eye(C), (n, 1)))))
    sketch = np.zeros((n * C, sketch_size))
    for left, right in pairs:
        sketcher = TensorSRHT((left.shape[1], right.shape[1]), sketch_size,
                              random_state=int(rng.integers(2**31 - 1)))
        sketch += sketcher.transform_pair(left, right)
    return sketch


def _mix_samples(root, matrix):
    """``blockdiag(root_i) @ matrix`` for matrix with n*C rows."""
    n, C, _ = root.shape
    shaped = matrix.reshape(n, C, -1)
    return np.einsum("iab,ibs->ias", root, shaped).reshape(n * C, -1)


class SketchPreconditioner:
    """``P ≈ D^{1/2} (Ŷ Ŷᵀ + μI) D^{1/2}`` from the sketch Y of the Jacobian
    rows, with ``D = diag(G) + λ`` and ``Ŷ = D^{-1/2} Y``.

    The diagonal does all the measured work: the rows of J differ widely in
    norm (samples with few active units), and bench/gauss_newton.py section 3
    measured plain CG at 62-555 iterations where the diagonally scaled
    system needs 10-45; the sketch saved at most 2 more. It targets the
    largest directions of the scaled Gram: the thin QR of the tall side of Ŷ
    and the SVD of its small R give ``Ŷ Ŷᵀ = Û Σ² Ûᵀ`` (s ≥ nC:
    ``Ŷᵀ = QR``, ``Ŷ Ŷᵀ = RᵀR``, cost s·(nC)²; s < nC: ``Ŷ = QR``, cost
    nC·s²). As in randomised Nyström preconditioning, directions outside
    span(Û) are scaled by the smallest retained eigenvalue:
    ``P̂⁻¹ = (σ_min² + μ) Û (Σ² + μ)⁻¹ Ûᵀ + (I − Û Ûᵀ)``, where μ, the mean of
    ``λ / (diag(G) + λ)``, stands for the damping of the scaled system. When
    s ≥ nC and the diagonal is constant this is ``(Y Yᵀ + λI)⁻¹`` up to a
    constant factor, which CG ignores. λ changes D, so each damping the step
    tries is factored once, on first use (cheap for the default s ≪ nC).

    Parameters
    ----------
    sketch : ndarray of shape (n*C, s)
        From `jacobian_sketch` (times ``B^{1/2}`` for the cross-entropy).
    diagonal : ndarray of shape (n*C,)
        Diagonal of the Gram the CG solves with.
    """

    def __init__(self, sketch, diagonal):
        self.sketch = sketch
        self.diagonal = np.maximum(diagonal, 0.0)
        self._damping = None

    def factor(self, damping):
        """Factor the scaled sketch for the system ``G + damping I``."""
        shifted = self.diagonal + damping
        self._row_scale = 1.0 / np.sqrt(shifted)
        self._shift = float(np.mean(damping / shifted))
        sketch = self._row_scale[:, None] * self.sketch
        with blas_threads_limited(1):
            if sketch.shape[1] >= sketch.shape[0]:
                R = np.linalg.qr(sketch.T, mode="r")
                _, singular, right = np.linalg.svd(R, full_matrices=False)
                basis = right.T
            else:
                Q, R = np.linalg.qr(sketch, mode="reduced")
                left, singular, _ = np.linalg.svd(R, full_matrices=False)
                basis = Q @ left
        keep = singular > 1e-10 * max(singular.max(initial=0.0), 1e-300)
        self._basis = basis[:, keep]
        self._eigenvalues = singular[keep] ** 2
        self._full_rank = self._basis.shape[1] == sketch.shape[0]
        self._damping = damping

    def apply(self, vector, damping):
        """``P⁻¹ vector`` for the system ``G + damping I``."""
        if damping != self._damping:
            self.factor(damping)
        scaled = self._row_scale * vector
        if len(self._eigenvalues):
            floor = 0.0 if self._full_rank else self._eigenvalues.min()
            coefficients = self._basis.T @ scaled
            shrunk = (floor + self._shift) / (self._eigenvalues + self._shift) * coefficients
            scaled = scaled - self._basis @ (coefficients - shrunk)
        return self._row_scale * scaled


def conjugate_gradient(gram, rhs, damping, tol, max_iter, preconditioner=None):
    """Preconditioned CG on ``(gram + damping I) x = rhs`` from x = 0.

    Returns
    -------
    x : ndarray
    iterations : int
    converged : bool
        Whether ``||residual|| <= tol * ||rhs||`` was reached.
    """
    with blas_threads_limited(1):
        return _conjugate_gradient(gram, rhs, damping, tol, max_iter, preconditioner)


def _conjugate_gradient(gram, rhs, damping, tol, max_iter, preconditioner):
    x = np.zeros_like(rhs)
    residual = rhs.copy()
    target = tol * np.linalg.norm(rhs)
    if np.linalg.norm(residual) <= target:
        return x, 0, True
    z = residual if preconditioner is None else preconditioner.apply(residual, damping)
    direction = z.copy()
    rz = residual @ z
    for iteration in range(1, max_iter + 1):
        product = gram @ direction + damping * direction
        curvature_along = direction @ product
        if not curvature_along > 0:
            return x, iteration, False
        step = rz / curvature_along
        x += step * direction
        residual -= step * product
        if np.linalg.norm(residual) <= target:
            return x, iteration, True
        z = residual if preconditioner is None else preconditioner.apply(residual, damping)
        rz_next = residual @ z
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    return x, max_iter, False


# --------------------------------------------------------------------- step


def _predicted_decrease(gram, root, gradient, coefficients):
    """Decrease of the batch loss predicted by the Gauss–Newton model for the
    step ``Δθ = −Jᵀ A``: with ``u = J Jᵀ A``, ``(gᵀu − ½ uᵀ B u) / n``."""
    n = len(gradient)
    u = (gram @ coefficients.ravel()).reshape(gradient.shape)
    curved = u if root is None else np.einsum("iab,ib->ia", root, u)
    return float(np.sum(gradient * u) - 0.5 * np.sum(curved * curved)) / n


def method_for_size(method, size, min_sketch_cg_size):
    """The solver for a system of `size` rows: `method` itself unless it is
    'auto', which is 'sketch-cg' from `min_sketch_cg_size` rows on and
    'cholesky' below."""
    if method != "auto":
        return method
    return "sketch-cg" if size >= min_sketch_cg_size else "cholesky"


class GaussNewton:
    """Levenberg–Marquardt-damped Gauss–Newton steps on batches.

    Parameters
    ----------
    loss : {'squared', 'cross-entropy'}
    method : {'auto', 'cholesky', 'sketch-cg'}
        'auto' picks by the system size: `method_for_size` with
        `SKETCH_CG_MIN_SIZE`.
    damping : float
        Initial λ, relative to the mean diagonal of the (curvature-weighted)
        Gram. Adapted after every step and kept across steps.
    sketch_size : 'auto' or int
        Columns of the Jacobian sketch for 'sketch-cg'; 'auto' is
        `AUTO_SKETCH_SIZE`.
    cg_tol : float
        Relative residual at which CG stops.
    cg_max_iter : int
    rng : numpy.random.Generator
        Draws the sketches.

    Attributes
    ----------
    history : list of dict
        One record per step: ``loss_before``, ``loss_after`` (the batch loss
        after the kept step, or before it if none was kept), ``accepted``,
        ``damping`` (λ of the last attempt), ``gain_ratio`` (actual over
        predicted decrease, for a kept step), ``attempts``, ``method``,
        ``cg_iterations`` (summed over attempts), ``cg_converged``,
        ``system_size`` and ``time`` (seconds).
    """

    def __init__(self, loss, method, damping, sketch_size, cg_tol, cg_max_iter, rng):
        self.loss = loss
        self.method = method
        self.damping = max(float(damping), _MIN_DAMPING)
        self.sketch_size = sketch_size
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.rng = rng
        self.history = []

    def step(self, network, X, Y):
        """One damped step on the batch (X, Y).

        Returns
        -------
        loss : float
            Batch loss before the step.
        activations : list
            The batch's activations before the step.

        Raises
        ------
        NonFiniteLossError
            If the loss or residual is not finite (nothing is changed).
        ValueError
            If the system would not fit in memory (nothing is changed).
        """
        start = time.perf_counter()
        activations, output = network.forward(X)
        loss_before = objective(output, Y, self.loss)
        rhs, root = curvature(output, Y, self.loss)
        if not np.isfinite(loss_before) or not np.all(np.isfinite(rhs)):
            raise NonFiniteLossError("the loss or residual of the batch is not finite")
        factors = jacobian_factors(network, activations)
        raw_gram = jacobian_gram(factors, network.n_threads)
        gram = raw_gram
        if root is not None:
            gram = _mix_samples(root, _mix_samples(root, raw_gram).T)
        size = len(gram)
        scale = float(np.mean(np.diag(gram)))
        scale = scale if scale > 0 else 1.0
        method = method_for_size(self.method, size, SKETCH_CG_MIN_SIZE)
        preconditioner = None
        if method == "sketch-cg":
            sketch_size = (AUTO_SKETCH_SIZE if self.sketch_size == "auto"
                           else int(self.sketch_size))
            sketch = jacobian_sketch(factors, sketch_size, self.rng.integers(2**31 - 1))
            if root is not None:
                sketch = _mix_samples(root, sketch)
            preconditioner = SketchPreconditioner(sketch, np.diag(gram))
        rhs = rhs.ravel()
        gradient = (output.astype(np.float64) - Y if root is None
                    else np.einsum("iab,ib->ia", root, rhs.reshape(output.shape)))
        record = {"loss_before": loss_before, "loss_after": loss_before, "accepted": False,
                  "attempts": 0, "method": method, "cg_iterations": 0, "cg_converged": None,
                  "system_size": size}
        while True:
            record["attempts"] += 1
            damping = self.damping * scale
            if method == "sketch-cg":
                alpha, iterations, converged = conjugate_gradient(
                    gram, rhs, damping, self.cg_tol, self.cg_max_iter, preconditioner)
                record["cg_iterations"] += iterations
                record["cg_converged"] = converged
            else:
                alpha, record["method"] = solve_cholesky(gram, rhs, damping)
            coefficients = alpha.reshape(-1, network.W_out.shape[1])
            if root is not None:
                coefficients = np.einsum("iab,ib->ia", root, coefficients)
            if apply_direction(network, factors, coefficients):
                loss_after = objective(network.forward(X)[1], Y, self.loss)
                if np.isfinite(loss_after) and loss_after < loss_before:
                    predicted = _predicted_decrease(raw_gram, root, gradient, coefficients)
                    gain = (loss_before - loss_after) / max(predicted, 1e-300)
                    record.update(accepted=True, loss_after=loss_after, damping=self.damping,
                                  gain_ratio=gain)
                    if gain > 0.75:
                        self.damping = max(self.damping * _SHRINK, _MIN_DAMPING)
                    elif gain < 0.25:
                        self.damping = min(self.damping * _GROW_POOR_FIT, _MAX_DAMPING)
                    break
                apply_direction(network, factors, coefficients, sign=1.0)
            record["damping"] = self.damping
            if self.damping * _GROW > _MAX_DAMPING:
                break
            self.damping *= _GROW
        record["time"] = time.perf_counter() - start
        self.history.append(record)
        return loss_before, activations
