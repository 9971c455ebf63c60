import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits, make_blobs, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from subquad import SparseMLPClassifier, SparseMLPRegressor
from subquad.neural_network import DivergenceError
from subquad.neural_network._init import (
    active_probability,
    auto_threshold,
    hidden_std,
    shifted_relu_second_moment,
)
from subquad.neural_network._network import _squared_norm
from subquad.neural_network._sphere import lift_to_sphere, sphere_offset

SMALL = dict(hidden_layer_sizes=(64,), max_iter=30, learning_rate_init=0.01)


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# Every scikit-learn estimator check runs and passes; we skip none. (scikit-learn
# itself skips its pandas checks when pandas is absent and its array-API checks
# unless SCIPY_ARRAY_API is set; neither is a subquad dependency.) Small, short
# networks keep the suite fast: the checks exercise the API, not accuracy.
@parametrize_with_checks([SparseMLPClassifier(**SMALL), SparseMLPRegressor(**SMALL)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def digits_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


# ------------------------------------------------------------- the mathematics


def test_threshold_schedule_and_moments_match_design():
    # DESIGN.md §1: active fraction ~4.8% / 3.4% / 2.4% / 1.8% at 1k/4k/16k/64k.
    for width, expected in [(1024, 0.048), (4096, 0.034), (16384, 0.024), (65536, 0.018)]:
        assert active_probability(auto_threshold(width)) == pytest.approx(expected, abs=0.002)
    rng = np.random.default_rng(0)
    z = rng.standard_normal(2_000_000)
    for b in (0.0, 1.0, 1.97):
        empirical = np.mean(np.maximum(z - b, 0) ** 2)
        assert shifted_relu_second_moment(b) == pytest.approx(empirical, rel=0.02)


def test_sparsity_aware_variance_gives_unit_preactivations():
    """DESIGN.md §1: with shifted-ReLU inputs of unit-scale pre-activations,
    weights of variance 1 / (fan_in E[(Z-b)_+^2]) give unit variance again
    (He's scale would not)."""
    rng = np.random.default_rng(0)
    b, fan_in = auto_threshold(4096), 4096
    H = np.maximum(rng.standard_normal((300, fan_in)) - b, 0)
    Z = H @ (rng.standard_normal((fan_in, 500)) * hidden_std(fan_in, b))
    assert np.std(Z) == pytest.approx(1.0, rel=0.05)
    he = H @ (rng.standard_normal((fan_in, 500)) * np.sqrt(2 / fan_in))
    assert np.std(he) < 0.2


def test_initialisation_keeps_every_layer_at_unit_scale_on_the_data():
    # Inputs with very different norms: the analytic scale alone lets deeper
    # layers grow; the data-scaled initialisation keeps each at unit scale,
    # also on samples it did not see.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 20)) * rng.uniform(0.2, 3, (2000, 1)) + 1
    clf = SparseMLPClassifier(hidden_layer_sizes=(1024,) * 4, dtype=np.float64,
                              input_normalization=None)
    network = clf._new_network(clf._as_network_input(X[:1000]), [1024] * 4, 2, rng)
    H = X[1000:]
    for layer, (W, c, b) in enumerate(zip(network.hidden_W, network.hidden_c,
                                           network.thresholds)):
        Z = np.asarray(H @ W) + c
        assert np.std(Z) == pytest.approx(1.0, rel=0.1), f"layer {layer}"
        assert abs(np.mean(Z)) < 0.1, f"layer {layer}"
        H = np.maximum(Z - b, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sphere_lift_is_one_to_one_onto_one_sphere(dtype):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((50, 6)) * rng.uniform(0, 5, (50, 1))).astype(dtype)
    X[3] = 0
    X[7] = 2 * X[8]  # same direction, different norm: must stay apart
    offset = sphere_offset(X)
    assert offset == pytest.approx(np.sqrt(np.mean(np.sum(X.astype(float) ** 2, axis=1))))
    lifted = lift_to_sphere(X, offset)
    assert lifted.dtype == dtype and lifted.shape == (50, 7)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.linalg.norm(lifted, axis=1), np.sqrt(7), rtol=tol)
    np.testing.assert_allclose(lifted[3], [0] * 6 + [np.sqrt(7)], rtol=tol)
    recovered = lifted[:, :6] / lifted[:, 6:] * dtype(offset)
    np.testing.assert_allclose(recovered, X, rtol=10 * tol, atol=10 * tol)
    as_csr = lift_to_sphere(sp.csr_matrix(X), offset)
    assert sp.issparse(as_csr) and as_csr.format == "csr" and as_csr.has_sorted_indices
    assert as_csr.dtype == dtype and as_csr.nnz == np.count_nonzero(X) + 50
    np.testing.assert_allclose(as_csr.toarray(), lifted, rtol=tol)
    assert sphere_offset(np.zeros((4, 3), dtype=dtype)) == 1.0


def test_sphere_lift_gives_every_sample_active_units_in_every_layer():
    """Norms spread over two decades: with the lift and the paper's
    initialisation every sample keeps a good part of the expected number of
    active units in every layer (the first layer's exactly standard normal
    pre-activations, the second's nearly so); data-scaled layers leave
    samples of small norm without any."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 10)) * np.geomspace(0.05, 5, 400)[:, None]
    width = 2048
    expected = width * active_probability(auto_threshold(width))
    fewest = {}
    for normalization in ("sphere", None):
        clf = SparseMLPRegressor(hidden_layer_sizes=(width, width), dtype=np.float64,
                                 input_normalization=normalization)
        Xn = clf._as_network_input(X)
        if normalization == "sphere":
            Xn = lift_to_sphere(Xn, sphere_offset(Xn))
        network = clf._new_network(Xn, [width, width], 1, np.random.default_rng(0))
        activations, _ = network.forward(Xn)
        fewest[normalization] = [np.diff(A.indptr).min() for A in activations[1:]]
    assert fewest["sphere"][0] > 0.5 * expected
    assert fewest["sphere"][1] > 0.25 * expected
    assert min(fewest[None]) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_optimizer_state_never_holds_denormals(dtype, n_threads):
    """Adam's second moment decaying below the smallest normal number is
    flushed to zero (denormal arithmetic is ~100x slower), and the weights
    and moments of normal size are updated as NumPy would."""
    from subquad.neural_network._sparse_backprop import OPTIMIZER_ADAM, backward_update

    tiny = np.finfo(dtype).tiny
    W = np.array([[0.5, -0.25]], dtype=dtype)
    state = np.zeros((1, 2, 2), dtype=dtype)
    state[0, :, 1] = [1.5 * tiny, 0.04]  # beta_2 = 0.5 takes the first below tiny
    one = np.ones(1, dtype=dtype)
    backward_update(np.array([0, 1], np.int64), np.zeros(1, np.int32), one,
                    np.zeros(1, np.int64), np.array([0.0, 0.2], dtype=dtype),
                    np.array([0, 1], np.int32), np.array([0, 2], np.int64), W, state,
                    np.zeros(1, dtype=dtype), False, OPTIMIZER_ADAM, 1.0, 1e-3, 0.0, False,
                    0.9, 0.5, 1e-8, n_threads)
    assert state[0, 0, 1] == 0 and W[0, 0] == dtype(0.5)
    m = 0.1 * 0.2
    v = 0.5 * 0.04 + 0.5 * 0.2**2
    np.testing.assert_allclose(state[0, 1], [m, v], rtol=1e-6)
    np.testing.assert_allclose(W[0, 1], -0.25 - 1e-3 * m / (np.sqrt(v) + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_output_deltas_match_numpy(dtype, n_threads, n_outputs):
    """The last hidden layer's deltas, error[i] . W_out[c] on each active
    entry (i, c), against NumPy: rows of any length (empty ones too), columns
    in any order within a row, as the first-layer index leaves them."""
    from subquad.neural_network._sparse_backprop import output_deltas

    rng = np.random.default_rng(n_outputs)
    n, width = 40, 300
    lengths = rng.integers(0, 60, n)
    lengths[[0, 7, 39]] = 0
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([rng.permutation(width)[:k] for k in lengths]).astype(np.int32)
    error = rng.standard_normal((n, n_outputs)).astype(dtype)
    W_out = rng.standard_normal((width, n_outputs)).astype(dtype)
    delta = np.full(indptr[-1], np.nan, dtype=dtype)
    output_deltas(indptr, indices, error, W_out, delta, n_threads)
    rows = np.repeat(np.arange(n), lengths)
    expected = np.einsum("ij,ij->i", error[rows].astype(np.float64),
                         W_out[indices].astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(delta, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_step_of_a_narrow_first_layer_does_not_depend_on_threads(dtype):
    """A first layer of 3 input units shares its rows between 2 threads; each
    row is still updated by one thread, so the weights come out bit for bit
    as on one thread."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 3))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    weights = {}
    for n_threads in (1, 2):
        clf = SparseMLPClassifier(hidden_layer_sizes=(20000,), batch_size=256, max_iter=3,
                                  random_state=0, dtype=dtype, n_threads=n_threads,
                                  first_layer_index=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        weights[n_threads] = clf.coefs_ + clf.intercepts_
    for one, two in zip(weights[1], weights[2]):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sparse_input", [False, True], ids=["dense-X", "csr-X"])
def test_sparse_step_equals_dense_step(dtype, n_threads, sparse_input):
    """From the same weights, one sparse training step (fused backward, lazy
    optimizer) gives the same weights as the dense NumPy step: on the first
    step lazy and dense Adam/SGD coincide."""
    X, y = make_blobs(n_samples=60, centers=3, n_features=8, random_state=1)
    X = np.abs(X) * (np.abs(X) > 3)  # zeros, so the CSR input is really sparse
    data = sp.csr_matrix(X) if sparse_input else X
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for solver in ("adam", "sgd"):
        models = {}
        for engine in ("sparse", "dense"):
            clf = SparseMLPClassifier(hidden_layer_sizes=(300, 200), solver=solver,
                                      batch_size=60, random_state=3, dtype=dtype,
                                      engine=engine, alpha=0.01, learning_rate_init=0.05,
                                      n_threads=n_threads)
            models[engine] = clf.partial_fit(data, y, classes=[0, 1, 2])
        sparse, dense = models["sparse"], models["dense"]
        for a, b in zip(sparse.coefs_ + sparse.intercepts_, dense.coefs_ + dense.intercepts_):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, **tol)


def test_weight_norm_of_the_loss_is_summed_in_float64():
    """The penalty's squared norm: float32 weights whose squares overflow
    float32 still give the float64 sum, for any memory layout."""
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((70, 40)) * 1e25).astype(np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(W * W))
    for view in (W, W.T, W[::3, 1::2]):
        reference = float(np.sum(view.astype(np.float64) ** 2))
        assert _squared_norm(view) == pytest.approx(reference, rel=1e-12)
    assert _squared_norm(np.zeros((0, 5), np.float32)) == 0.0


@pytest.mark.parametrize("Estimator", [SparseMLPClassifier, SparseMLPRegressor])
def test_gradient_matches_finite_differences(Estimator):
    """Plain SGD without decay moves each weight by -lr * dLoss/dW: compare
    that step with central differences of the loss."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12) if Estimator is SparseMLPClassifier else rng.standard_normal((12, 2))
    lr = 1e-3
    est = Estimator(hidden_layer_sizes=(40, 30), solver="sgd", momentum=0.0, alpha=0.0,
                    learning_rate_init=lr, batch_size=12, shuffle=False, random_state=0,
                    dtype=np.float64, adapt_threshold=False, threshold=0.3)
    kwargs = {"classes": [0, 1, 2]} if Estimator is SparseMLPClassifier else {}
    est.partial_fit(X, y, **kwargs)
    network = est._network
    before = network.snapshot()
    est.partial_fit(X, y)
    after = [W.copy() for W in network.hidden_W + [network.W_out]]
    network.restore(before)
    Xn = est._network_input(X)
    Y = est._prepare_targets(y, True)

    def loss():
        return est._loss_and_error(network.forward(Xn)[1], Y)[0]

    for layer, target in enumerate(network.hidden_W + [network.W_out]):
        grad_from_step = (target - after[layer]) / lr
        rows, cols = np.nonzero(np.abs(grad_from_step) > 1e-6)
        assert len(rows) > 0
        for pick in rng.choice(len(rows), size=min(6, len(rows)), replace=False):
            r, c = rows[pick], cols[pick]
            eps = 1e-6
            target[r, c] += eps
            up = loss()
            target[r, c] -= 2 * eps
            down = loss()
            target[r, c] += eps
            assert (up - down) / (2 * eps) == pytest.approx(grad_from_step[r, c], rel=1e-4,
                                                            abs=1e-8)


# ------------------------------------------------------------------- accuracy


def test_digits_accuracy_with_wide_sparse_layers():
    X_train, X_test, y_train, y_test = digits_split()
    clf = SparseMLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=30, batch_size=128,
                              learning_rate_init=0.01, random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95
    assert np.all(clf.active_fraction_ < 0.1)


def test_regression_fits():
    X, y = make_regression(n_samples=300, n_features=10, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    reg = SparseMLPRegressor(hidden_layer_sizes=(512,), max_iter=60, learning_rate_init=0.01,
                             random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.9
    Y = np.column_stack([y, -y])
    multi = SparseMLPRegressor(hidden_layer_sizes=(512,), max_iter=60, learning_rate_init=0.01,
                               random_state=0).fit(X, Y)
    assert multi.predict(X).shape == (300, 2)
    assert multi.score(X, Y) > 0.9


def test_binary_string_labels_and_sparse_input():
    X, y = make_blobs(n_samples=200, centers=2, n_features=30, random_state=0)
    X = MinMaxScaler().fit_transform(X)
    labels = np.where(y == 0, "cat", "dog")
    X_sparse = sp.csr_matrix(X * (X > 0.5))
    for data in (X, X_sparse):
        clf = SparseMLPClassifier(**SMALL, random_state=0).fit(data, labels)
        assert clf.classes_.tolist() == ["cat", "dog"]
        assert clf.predict_proba(data).shape == (200, 2)
        np.testing.assert_allclose(np.exp(clf.predict_log_proba(data)), clf.predict_proba(data),
                                   rtol=1e-6)
        assert clf.score(data, labels) > 0.9


def test_dense_and_csr_input_train_the_same_model():
    X, y = make_blobs(n_samples=150, centers=3, n_features=12, random_state=2)
    X = np.abs(X) * (np.abs(X) > 2)
    dense = SparseMLPClassifier(**SMALL, random_state=0, dtype=np.float64).fit(X, y)
    csr = SparseMLPClassifier(**SMALL, random_state=0, dtype=np.float64).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(dense.predict_proba(X), csr.predict_proba(X), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    X, y = make_blobs(n_samples=80, random_state=0)
    clf = SparseMLPClassifier(**SMALL, dtype=dtype, random_state=0).fit(X, y)
    assert all(W.dtype == dtype for W in clf.coefs_ + clf.intercepts_)


# --------------------------------------------------------- sparsity reporting


def test_active_fraction_is_reported_and_controlled():
    X_train, _, y_train, _ = digits_split()
    kwargs = dict(hidden_layer_sizes=(1024, 1024), max_iter=8, batch_size=64,
                  learning_rate_init=0.01, random_state=0)
    adapted = SparseMLPClassifier(**kwargs).fit(X_train, y_train)
    free = SparseMLPClassifier(**kwargs, adapt_threshold=False).fit(X_train, y_train)
    target = active_probability(auto_threshold(1024))
    assert len(adapted.active_fraction_history_) == adapted.n_iter_ == 8
    assert adapted.active_fraction_.shape == (2,)
    np.testing.assert_array_equal(adapted.active_fraction_, adapted.active_fraction_history_[-1])
    # The control keeps every layer near its target; without it they drift.
    assert np.all(np.abs(adapted.active_fraction_ - target) < 0.3 * target)
    assert np.max(np.abs(free.active_fraction_ - target)) > np.max(
        np.abs(adapted.active_fraction_ - target))
    np.testing.assert_array_equal(free.thresholds_, [auto_threshold(1024)] * 2)


def test_verbose_prints_loss_active_fraction_and_time(capsys):
    X, y = make_blobs(n_samples=100, random_state=0)
    SparseMLPClassifier(**{**SMALL, "max_iter": 2}, early_stopping=True, verbose=True,
                        random_state=0).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "loss =" in out[0] and "active = [" in out[0] and "validation score" in out[0]
    assert out[0].rstrip().endswith("s")


# ---------------------------------------------------- API: state and continuation


def test_pickle_round_trip_gives_identical_predictions():
    X, y = make_blobs(n_samples=100, random_state=0)
    clf = SparseMLPClassifier(**SMALL, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clone.partial_fit(X, y)  # the optimizer state travels too
    assert clone.n_iter_ == clf.n_iter_ + 1


@pytest.mark.parametrize("n_threads", [1, 2])
def test_fixed_seed_and_threads_reproduce_the_model(n_threads):
    X, y = make_blobs(n_samples=120, random_state=0)
    a, b = (SparseMLPClassifier(**SMALL, random_state=7, n_threads=n_threads).fit(X, y)
            for _ in range(2))
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)


def test_warm_start_and_partial_fit_continue_training():
    X, y = make_blobs(n_samples=100, random_state=0)
    clf = SparseMLPClassifier(**{**SMALL, "max_iter": 3}, warm_start=True, random_state=0,
                              n_iter_no_change=10).fit(X, y)
    first = clf.coefs_[0].copy()
    clf.fit(X, y)
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6
    assert not np.array_equal(first, clf.coefs_[0])
    inc = SparseMLPClassifier(**SMALL, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        inc.partial_fit(X, y)
    inc.partial_fit(X[:50], y[:50], classes=np.unique(y))
    inc.partial_fit(X[50:], y[50:])
    assert inc.n_iter_ == 2 and inc.t_ == 100
    with pytest.raises(ValueError, match="not in classes_"):
        inc.partial_fit(X[:5], np.full(5, 99))
    offset = inc.input_offset_
    inc.partial_fit(2 * X[:50], y[:50])
    assert inc.input_offset_ == offset  # the lift is the network's first map
    inc.set_params(input_normalization=None)
    with pytest.raises(ValueError, match="input_normalization changed"):
        inc.partial_fit(X, y)
    assert inc.input_offset_ == offset and inc.n_iter_ == 3


def test_pipeline_and_grid_search():
    X_train, X_test, y_train, y_test = digits_split()
    pipe = make_pipeline(StandardScaler(), SparseMLPClassifier(**SMALL, random_state=0))
    search = GridSearchCV(pipe, {"sparsemlpclassifier__hidden_layer_sizes": [(64,), (256,)]},
                          cv=2).fit(X_train[:400], y_train[:400])
    assert search.best_params_["sparsemlpclassifier__hidden_layer_sizes"] in [(64,), (256,)]
    assert search.score(X_test, y_test) > 0.8


def test_early_stopping_keeps_the_best_validation_model():
    X_train, _, y_train, _ = digits_split()
    clf = SparseMLPClassifier(**{**SMALL, "max_iter": 40}, early_stopping=True,
                              n_iter_no_change=3, random_state=0).fit(X_train, y_train)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(hidden_layer_sizes=()), "hidden_layer_sizes"),
        (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
        (dict(hidden_layer_sizes="wide"), "hidden_layer_sizes"),
        (dict(threshold="high"), "threshold"),
        (dict(target_active_fraction=1.5), "target_active_fraction"),
        (dict(solver="lbfgs"), "solver must be 'sgd', 'adam' or 'gauss-newton'"),
        (dict(alpha=-1.0), "alpha must be >= 0"),
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate_init=0.0), "learning_rate_init must be > 0"),
        (dict(max_iter=0), "max_iter"),
        (dict(momentum=2.0), "momentum must be <= 1"),
        (dict(validation_fraction=1.0), "validation_fraction must be < 1"),
        (dict(beta_2=1.0), "beta_2 must be < 1"),
        (dict(epsilon=0.0), "epsilon must be > 0"),
        (dict(n_iter_no_change=0), "n_iter_no_change"),
        (dict(shuffle="yes"), "shuffle must be a bool"),
        (dict(dtype=np.int32), "dtype must be numpy.float32 or numpy.float64"),
        (dict(engine="gpu"), "engine must be 'sparse' or 'dense'"),
        (dict(input_normalization="l2"), "input_normalization must be 'sphere' or None"),
        (dict(n_threads=0), "n_threads"),
    ],
)
def test_bad_parameters_raise_at_fit(params, match):
    X, y = make_blobs(n_samples=20, random_state=0)
    with pytest.raises(ValueError, match=match):
        SparseMLPClassifier(**{**SMALL, **params}).fit(X, y)


@pytest.mark.parametrize("name", ["shuffle", "warm_start", "nesterovs_momentum",
                                  "early_stopping", "adapt_threshold", "first_layer_index"])
def test_non_bool_flags_raise_an_error_that_is_both_value_and_type_error(name):
    # As check_bool does for the index and the sketches, and scikit-learn
    # for its own parameters: callers catching either class see it.
    X, y = make_blobs(n_samples=20, random_state=0)
    for expected in (ValueError, TypeError):
        with pytest.raises(expected, match=name):
            SparseMLPClassifier(**{**SMALL, name: "yes"}).fit(X, y)


def test_bad_data_raises_clear_errors():
    X, y = make_blobs(n_samples=20, random_state=0)
    clf = SparseMLPClassifier(**SMALL)
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.where(X > 5, np.nan, X), y)
    with pytest.raises(ValueError, match="infinity|inf"):
        clf.fit(np.where(X > 5, np.inf, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="0 sample"):
        clf.fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="NaN"):
        SparseMLPRegressor(**SMALL).fit(X, np.where(y > 0, np.nan, 1.0))
    clf.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :1])


def test_divergence_stops_and_keeps_previous_model():
    X, y = make_regression(n_samples=50, n_features=5, random_state=0)
    reg = SparseMLPRegressor(**SMALL, random_state=0).fit(X, y)
    before = reg.predict(X)
    bad = SparseMLPRegressor(**{**SMALL, "learning_rate_init": 1e6}, solver="sgd",
                             random_state=0)
    with pytest.raises(DivergenceError, match="non-finite"):
        bad.fit(X * 1e18, y * 1e18)
    assert not hasattr(bad, "coefs_")
    reg.set_params(solver="sgd", learning_rate_init=1e6, momentum=0.0)
    with pytest.raises(DivergenceError):
        reg.fit(X * 1e18, y * 1e18)  # a new fit: the fitted model is kept as it was
    np.testing.assert_array_equal(reg.predict(X), before)
    reg.set_params(warm_start=True)
    with pytest.raises(DivergenceError):
        reg.fit(X * 1e18, y * 1e18)
    assert all(np.all(np.isfinite(W)) for W in reg.coefs_ + reg.intercepts_)
