"""solver='gauss-newton': the factored Jacobian, its Gram, the damped
directions, the solvers and the estimator integration."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from subquad import SparseMLPClassifier, SparseMLPRegressor
from subquad.neural_network import DivergenceError
from subquad.neural_network import _gauss_newton as gn
from subquad.neural_network._gauss_newton_backprop import backprop_active_blocks
from subquad.neural_network._network import DenseNetwork, SparseNetwork


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def tiny_network(n_outputs, network_class=SparseNetwork, seed=0):
    """d=3, widths (8, 6), float64, with a non-unit stored scale on layer 2.

    Thresholds are chosen so that no pre-activation lies within 1e-3 of its
    threshold, so finite differences never flip the activation pattern.
    """
    rng = np.random.default_rng(seed)
    sizes = [3, 8, 6, n_outputs]
    X = rng.standard_normal((5, 3))
    for _ in range(100):
        coefs = [rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
        intercepts = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
        network = network_class(coefs, intercepts, [0.2, 0.2], 1)
        if network_class is SparseNetwork:
            network.scales[1] = 2.0
            network.hidden_W[1] /= 2.0
        if _margin(network, X) > 1e-3 and all(
                (sp.csr_matrix(H).nnz > 0) for H in network.forward(X)[0][1:]):
            return network, X
    raise AssertionError("no tiny network with a clear activation pattern")


def _margin(network, X):
    H, margin = X, np.inf
    for W, c, b, s in zip(network.hidden_W, network.hidden_c, network.thresholds,
                          network.scales):
        Z = H @ (W * s) + c - b
        margin = min(margin, np.abs(Z).min())
        H = np.maximum(Z, 0)
    return margin


def parameters(network):
    """(array, scale) of every parameter in a fixed order: W_1, c_1, ..., W_out, c_out."""
    listed = []
    for W, c, s in zip(network.hidden_W, network.hidden_c, network.scales):
        listed += [(W, s), (c, 1.0)]
    return listed + [(network.W_out, 1.0), (network.c_out, 1.0)]


def true_parameters(network):
    return np.concatenate([(array * scale).ravel() for array, scale in parameters(network)])


def finite_difference_jacobian(network, X, eps=1e-6):
    """d(outputs, rows i*C + k) / d(true parameters), by central differences."""
    columns = []
    for array, scale in parameters(network):
        flat = array.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps / scale
            up = network.forward(X)[1].ravel()
            flat[j] = old - eps / scale
            down = network.forward(X)[1].ravel()
            flat[j] = old
            columns.append((up - down) / (2 * eps))
    return np.array(columns).T


def analytic_jacobian(network, factors):
    """The rows of J formed explicitly from the factors (kron of h and v)."""
    n, C = factors.n_samples, factors.n_outputs
    rows = []
    for i in range(n):
        for k in range(C):
            blocks = []
            for layer, H_in in enumerate(factors.inputs):
                h = sp.csr_matrix(H_in).toarray()[i]
                v = factors.backprop_csr(layer).toarray()[i * C + k]
                blocks += [np.kron(h, v), v]
            h_last = factors.patterns[-1].toarray()[i]
            blocks += [np.kron(h_last, np.eye(C)[k]), np.eye(C)[k]]
            rows.append(np.concatenate(blocks))
    return np.array(rows)


def explicit_direction(J, output, Y, loss, damping):
    """The damped (generalised) Gauss–Newton direction in parameter space."""
    if loss == "squared":
        residual = (output - Y).ravel()
        return -J.T @ np.linalg.solve(J @ J.T + damping * np.eye(len(J)), residual)
    p = softmax(output, axis=1)
    n, C = p.shape
    B = np.zeros((n * C, n * C))
    for i in range(n):
        B[i * C:(i + 1) * C, i * C:(i + 1) * C] = np.diag(p[i]) - np.outer(p[i], p[i])
    gradient = J.T @ (p - Y).ravel()
    return -np.linalg.solve(J.T @ B @ J + damping * np.eye(J.shape[1]), gradient)


def gauss_newton_coefficients(factors, output, Y, loss, damping):
    """A with Δθ = −Σ A_ik ∂f_ik/∂θ, through the module's solve."""
    rhs, root = gn.curvature(output, Y, loss)
    gram = gn.jacobian_gram(factors)
    if root is not None:
        gram = gn._mix_samples(root, gn._mix_samples(root, gram).T)
    alpha, _ = gn.solve_cholesky(gram, rhs.ravel(), damping)
    A = alpha.reshape(output.shape)
    return A if root is None else np.einsum("iab,ib->ia", root, A)


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("n_threads", [1, 2])
def test_backprop_kernel_matches_numpy(dtype, n_threads):
    rng = np.random.default_rng(0)
    n, m_in, m_out, C, scale = 30, 200, 150, 3, 0.7
    inner = sp.random(n, m_in, density=0.1, format="csr", random_state=1)
    outer = sp.random(n, m_out, density=0.1, format="csr", random_state=2)
    W = rng.standard_normal((m_in, m_out)).astype(dtype)
    upper = rng.standard_normal((outer.nnz, C))
    positions = sp.csr_matrix((np.arange(inner.nnz, dtype=np.int64), inner.indices,
                               inner.indptr), shape=inner.shape).tocsc()
    out = np.empty((inner.nnz, C))
    backprop_active_blocks(
        W, scale, positions.indptr.astype(np.int64), positions.indices.astype(np.int32),
        positions.data.astype(np.int64), outer.indices.astype(np.int32),
        outer.indptr.astype(np.int64), upper, out, n_threads)
    # Dense reference: V_outer[i, j, k] on the outer pattern, pushed through W.
    V_outer = np.zeros((n, m_out, C))
    outer_rows = np.repeat(np.arange(n), np.diff(outer.indptr))
    V_outer[outer_rows, outer.indices] = upper
    pushed = scale * np.einsum("aj,ijk->iak", W.astype(np.float64), V_outer)
    inner_rows = np.repeat(np.arange(n), np.diff(inner.indptr))
    np.testing.assert_allclose(out, pushed[inner_rows, inner.indices], rtol=1e-5 if dtype ==
                               np.float32 else 1e-12, atol=1e-12)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_row_gram_matches_numpy(dtype, sparse, n_threads):
    # Enough entries per column that threads_for_work grants two threads.
    A = sp.random(400, 2000, density=0.1, format="csr", random_state=0, dtype=dtype)
    assert gn.threads_for_work(2, A.nnz * A.nnz / A.shape[1]) == 2
    expected = (A.astype(np.float64) @ A.T.astype(np.float64)).toarray()
    gram = gn._row_gram(A if sparse else A.toarray(), n_threads)
    assert gram.dtype == np.float64
    np.testing.assert_allclose(gram, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-10)


# ------------------------------------------------------- the mathematics


@pytest.mark.parametrize("network_class", [SparseNetwork, DenseNetwork])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_jacobian_and_gram_match_finite_differences(n_outputs, network_class):
    network, X = tiny_network(n_outputs, network_class)
    activations, _ = network.forward(X)
    factors = gn.jacobian_factors(network, activations)
    J_fd = finite_difference_jacobian(network, X)
    J = analytic_jacobian(network, factors)
    np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gn.jacobian_gram(factors), J @ J.T, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("loss,n_outputs", [("squared", 1), ("squared", 3),
                                            ("cross-entropy", 3)])
def test_direction_of_every_layer_equals_the_explicit_one(loss, n_outputs):
    """The update applied through lowrank_update_ (and the dense output and
    bias updates) moves every true parameter by the explicit damped
    (generalised) Gauss–Newton direction built from the finite-difference J."""
    network, X = tiny_network(n_outputs)
    rng = np.random.default_rng(1)
    Y = (rng.standard_normal((5, n_outputs)) if loss == "squared"
         else np.eye(n_outputs)[rng.integers(0, n_outputs, 5)])
    activations, output = network.forward(X)
    J = finite_difference_jacobian(network, X)
    damping = 0.3
    expected = explicit_direction(J, output, Y, loss, damping)
    factors = gn.jacobian_factors(network, activations)
    before = true_parameters(network)
    gn.apply_direction(network, factors,
                       gauss_newton_coefficients(factors, output, Y, loss, damping))
    step = true_parameters(network) - before
    scale = np.abs(expected).max()
    np.testing.assert_allclose(step, expected, rtol=1e-6, atol=1e-6 * scale)
    offsets = np.cumsum([0] + [a.size for a, _ in parameters(network)])
    for begin, end in zip(offsets[:-1], offsets[1:]):  # each layer moves, not only some
        if np.abs(expected[begin:end]).max() > 1e-8 * scale:
            assert np.abs(step[begin:end]).max() > 0


def test_undo_restores_the_parameters():
    network, X = tiny_network(3)
    activations, output = network.forward(X)
    factors = gn.jacobian_factors(network, activations)
    before = true_parameters(network)
    A = np.random.default_rng(0).standard_normal((5, 3))
    gn.apply_direction(network, factors, A)
    assert not np.allclose(true_parameters(network), before)
    gn.apply_direction(network, factors, A, sign=1.0)
    np.testing.assert_allclose(true_parameters(network), before, rtol=1e-14, atol=1e-14)


def test_an_update_that_would_overflow_changes_nothing():
    network, X = tiny_network(1)
    network.hidden_W = [W.astype(np.float32) for W in network.hidden_W]
    network.dtype = np.dtype(np.float32)
    activations, _ = network.forward(X.astype(np.float32))
    factors = gn.jacobian_factors(network, activations)
    before = true_parameters(network)
    for bad in (np.full((5, 1), 1e38), np.full((5, 1), np.nan)):
        assert not gn.apply_direction(network, factors, bad)
        np.testing.assert_array_equal(true_parameters(network), before)


# ---------------------------------------------------------------- solvers


def wide_gram(n_samples=200, width=512, seed=0):
    reg = SparseMLPRegressor(hidden_layer_sizes=(width, width), solver="gauss-newton",
                             max_iter=1, dtype=np.float64, random_state=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(8)
    y = rng.standard_normal(n_samples)
    reg.fit(X, y)
    activations, output = reg._network.forward(X)
    factors = gn.jacobian_factors(reg._network, activations)
    return factors, gn.jacobian_gram(factors), (output[:, 0] - y)


def test_sketch_of_jacobian_rows_is_unbiased_for_the_gram():
    factors, gram, _ = wide_gram(n_samples=40, width=128)
    sketches = [gn.jacobian_sketch(factors, 2048, seed) for seed in range(8)]
    estimate = np.mean([Y @ Y.T for Y in sketches], axis=0)
    assert np.linalg.norm(estimate - gram) < 0.1 * np.linalg.norm(gram)


@pytest.mark.parametrize("sketch_size", [16, 800], ids=["s<nC", "s>nC"])
def test_sketch_cg_matches_cholesky(sketch_size):
    factors, gram, residual = wide_gram()
    damping = 1e-3 * np.mean(np.diag(gram))
    exact, method = gn.solve_cholesky(gram, residual, damping)
    assert method == "cholesky"
    preconditioner = gn.SketchPreconditioner(gn.jacobian_sketch(factors, sketch_size, 0),
                                             np.diag(gram))
    tol = 1e-8
    x, _, converged = gn.conjugate_gradient(gram, residual, damping, tol, 2000,
                                            preconditioner)
    assert converged
    assert np.linalg.norm((gram + damping * np.eye(len(gram))) @ x - residual) <= (
        tol * np.linalg.norm(residual))
    np.testing.assert_allclose(x, exact, rtol=1e-5, atol=1e-6 * np.abs(exact).max())


def test_preconditioned_cg_takes_fewer_iterations_than_plain_cg(capsys):
    # The rows of J differ in norm (samples with few active units), which the
    # diagonal of the preconditioner evens out; an identity preconditioner
    # would take as many iterations as plain CG and fail the assertion.
    factors, gram, residual = wide_gram()
    damping = 1e-3 * np.mean(np.diag(gram))
    preconditioner = gn.SketchPreconditioner(
        gn.jacobian_sketch(factors, gn.AUTO_SKETCH_SIZE, 0), np.diag(gram))
    _, preconditioned, converged = gn.conjugate_gradient(gram, residual, damping, 1e-8, 2000,
                                                         preconditioner)
    _, plain, _ = gn.conjugate_gradient(gram, residual, damping, 1e-8, 2000)
    with capsys.disabled():
        print(f"\n  CG iterations to 1e-8 on n=200: sketch-preconditioned {preconditioned}, "
              f"plain {plain}")
    assert converged
    assert preconditioned < 0.5 * plain


def test_preconditioned_cg_solves_every_damping_the_step_tries():
    factors, gram, residual = wide_gram(n_samples=60, width=128)
    preconditioner = gn.SketchPreconditioner(gn.jacobian_sketch(factors, 16, 0),
                                             np.diag(gram))
    scale = np.mean(np.diag(gram))
    for damping in (1e-3 * scale, 10.0 * scale, 1e-3 * scale):
        x, _, converged = gn.conjugate_gradient(gram, residual, damping, 1e-10, 500,
                                                preconditioner)
        assert converged
        np.testing.assert_allclose(x, gn.solve_cholesky(gram, residual, damping)[0],
                                   rtol=1e-6, atol=1e-8 * np.abs(x).max())


@pytest.mark.parametrize(
    "method,size,expected",
    [("auto", 99, "cholesky"), ("auto", 100, "sketch-cg"), ("auto", 5000, "sketch-cg"),
     ("cholesky", 5000, "cholesky"), ("sketch-cg", 10, "sketch-cg")],
)
def test_auto_method_picks_by_system_size(method, size, expected):
    assert gn.method_for_size(method, size, min_sketch_cg_size=100) == expected


def test_auto_solver_of_the_estimator_follows_the_size_threshold(monkeypatch):
    X, y = regression_data()
    for threshold, expected in ((len(y), "sketch-cg"), (len(y) + 1, "cholesky")):
        monkeypatch.setattr(gn, "SKETCH_CG_MIN_SIZE", threshold)
        reg = SparseMLPRegressor(hidden_layer_sizes=(64, 64), solver="gauss-newton",
                                 max_iter=2, tol=0, random_state=0).fit(X, y)
        assert {r["method"] for r in reg.gauss_newton_history_} == {expected}


def test_singular_system_without_damping_falls_back_to_a_pseudo_inverse():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((6, 3))
    gram = J @ J.T  # rank 3
    rhs = gram @ rng.standard_normal(6)  # consistent
    x, method = gn.solve_cholesky(gram, rhs, 0.0)
    assert method == "eigh"
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(gram @ x, rhs, atol=1e-8)


def test_system_too_large_raises_before_allocating(monkeypatch):
    monkeypatch.setattr(gn, "MAX_GRAM_BYTES", 8 * 100 * 100)
    with pytest.raises(ValueError, match="smaller batch_size"):
        gn.check_system_size(101, 1)
    X, y = make_blobs(n_samples=60, random_state=0)
    clf = SparseMLPClassifier(hidden_layer_sizes=(16,), solver="gauss-newton",
                              batch_size=60)
    with pytest.raises(ValueError, match="n_samples \\* n_outputs = 60 \\* 3 = 180"):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")


def test_a_step_that_never_lowers_the_loss_is_undone(monkeypatch):
    network, X = tiny_network(1)
    Y = np.random.default_rng(0).standard_normal((5, 1))
    before = true_parameters(network)
    real_objective = gn.objective
    calls = []

    def no_trial_improves(output, Y, loss):
        calls.append(None)
        return real_objective(output, Y, loss) + 1e9 * (len(calls) > 1)

    monkeypatch.setattr(gn, "objective", no_trial_improves)
    solver = gn.GaussNewton("squared", "cholesky", 1e-3, "auto", 1e-6, 10,
                            np.random.default_rng(0))
    solver.step(network, X, Y)
    record = solver.history[-1]
    assert not record["accepted"] and record["attempts"] > 5
    assert record["damping"] * gn._GROW > gn._MAX_DAMPING
    np.testing.assert_allclose(true_parameters(network), before, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------- estimator


def regression_data(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(d)
    y = np.sin(X @ rng.standard_normal(d))
    return X, y


@pytest.mark.parametrize("gn_solver", ["cholesky", "sketch-cg"])
def test_regression_fit_drives_the_training_loss_down(dtype, gn_solver):
    X, y = regression_data()
    reg = SparseMLPRegressor(hidden_layer_sizes=(256, 256), solver="gauss-newton",
                             gn_solver=gn_solver, max_iter=8, tol=0, random_state=0,
                             dtype=dtype).fit(X, y)
    history = reg.gauss_newton_history_
    assert len(history) == 8
    assert all(r["method"] in ("cholesky", "sketch-cg") for r in history)
    assert history[-1]["loss_after"] < 1e-2 * history[0]["loss_before"]
    assert all(W.dtype == dtype for W in reg.coefs_)
    mse = np.mean((reg.predict(X) - y) ** 2)
    assert mse == pytest.approx(2 * history[-1]["loss_after"], rel=1e-2)
    if gn_solver == "sketch-cg":
        assert all(r["cg_iterations"] > 0 for r in history)


def test_dense_engine_takes_the_same_steps():
    X, y = regression_data()
    histories = [SparseMLPRegressor(hidden_layer_sizes=(128, 128), solver="gauss-newton",
                                    engine=engine, max_iter=4, tol=0, random_state=0,
                                    dtype=np.float64).fit(X, y).gauss_newton_history_
                 for engine in ("sparse", "dense")]
    for sparse_record, dense_record in zip(*histories):
        assert sparse_record["loss_after"] == pytest.approx(dense_record["loss_after"],
                                                            rel=1e-6)


@pytest.mark.parametrize("gn_solver", ["cholesky", "sketch-cg"])
@pytest.mark.parametrize("gn_loss", ["auto", "squared"])
def test_classification_fit_lowers_the_loss(gn_loss, gn_solver):
    # Well separated blobs (3-nearest-neighbours classifies every sample).
    X, y = make_blobs(n_samples=60, centers=3, cluster_std=0.5, random_state=0)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    clf = SparseMLPClassifier(hidden_layer_sizes=(128,), solver="gauss-newton",
                              gn_solver=gn_solver, gn_loss=gn_loss, max_iter=5, tol=0,
                              random_state=0).fit(X, y)
    history = clf.gauss_newton_history_
    assert {r["method"] for r in history} == {gn_solver}
    assert history[-1]["loss_after"] < 0.05 * history[0]["loss_before"]
    assert clf.score(X, y) == 1.0


@pytest.mark.parametrize("input_normalization", ["sphere", None])
def test_rows_of_any_norm_are_fitted_only_after_the_sphere_lift(input_normalization):
    """Rows whose norms spread over a factor 30: without the lift the samples
    of small norm have no active units, no gradient, and the loss stalls."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 8)) * rng.uniform(0.1, 3, (128, 1))
    y = np.sin(X @ rng.standard_normal(8))
    y = (y - y.mean()) / y.std()
    reg = SparseMLPRegressor(hidden_layer_sizes=(1024, 1024), solver="gauss-newton",
                             max_iter=10, tol=0, random_state=0,
                             input_normalization=input_normalization).fit(X, y)
    history = reg.gauss_newton_history_
    reduction = history[-1]["loss_after"] / history[0]["loss_before"]
    if input_normalization == "sphere":
        assert reduction < 1e-4
    else:
        assert reduction > 1e-2


def test_pickle_and_warm_start_keep_the_damping_and_history():
    X, y = regression_data()
    reg = SparseMLPRegressor(hidden_layer_sizes=(64,), solver="gauss-newton", max_iter=3,
                             random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(clone.predict(X), reg.predict(X))
    clone.set_params(warm_start=True, max_iter=2).fit(X, y)
    assert len(clone.gauss_newton_history_) == 5
    assert len(reg.gauss_newton_history_) == 3


def test_non_finite_residuals_raise_and_keep_the_fitted_model():
    X, y = regression_data()
    reg = SparseMLPRegressor(hidden_layer_sizes=(64,), solver="gauss-newton", max_iter=3,
                             random_state=0, dtype=np.float64).fit(X, y)
    before = reg.predict(X)
    with pytest.raises(DivergenceError, match="non-finite"):
        reg.fit(X, np.full_like(y, 1e300))  # the squared residual overflows
    np.testing.assert_array_equal(reg.predict(X), before)
    reg.set_params(warm_start=True)
    with pytest.raises(DivergenceError):
        reg.fit(X, np.full_like(y, np.finfo(np.float64).max))
    assert all(np.all(np.isfinite(W)) for W in reg.coefs_ + reg.intercepts_)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(gn_solver="qr"), "gn_solver must be one of"),
        (dict(gn_damping=0.0), "gn_damping must be > 0"),
        (dict(gn_sketch_size=0), "gn_sketch_size"),
        (dict(gn_cg_tol=0.0), "gn_cg_tol must be > 0"),
        (dict(gn_cg_max_iter=0), "gn_cg_max_iter"),
        (dict(gn_loss="hinge"), "gn_loss must be one of"),
    ],
)
def test_bad_gauss_newton_parameters_raise_at_fit(params, match):
    X, y = make_blobs(n_samples=20, random_state=0)
    with pytest.raises(ValueError, match=match):
        SparseMLPClassifier(hidden_layer_sizes=(8,), solver="gauss-newton", **params).fit(X, y)


def test_regressor_rejects_cross_entropy():
    X, y = regression_data()
    with pytest.raises(ValueError, match="gn_loss must be one of \\('auto', 'squared'\\)"):
        SparseMLPRegressor(solver="gauss-newton", gn_loss="cross-entropy").fit(X, y)
