"""SparseMLPClassifier and SparseMLPRegressor: scikit-learn estimators for
wide shifted-ReLU networks trained with sparse steps."""

import numbers
import sys
import time
import warnings
from abc import ABCMeta, abstractmethod

import numpy as np
import scipy.sparse as sp
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._threads import effective_n_threads
from ..linalg._validation import InvalidParameterError, check_bool
from ._init import (active_probability, auto_threshold, data_scaled_layer, gaussian_layers,
                    hidden_std)
from ._gauss_newton import LOSSES as GN_LOSSES
from ._gauss_newton import METHODS as GN_METHODS
from ._gauss_newton import GaussNewton, NonFiniteLossError, check_system_size
from ._network import DenseNetwork, Optimizer, SparseNetwork
from ._sphere import lift_to_sphere, sphere_offset

_PREDICT_CHUNK = 4096
# Rows of the training data used to scale each layer at initialisation.
_INIT_SAMPLE = 1024
# Threshold adaptation: Newton steps on P(Z > b) = target, damped and capped
# so the threshold follows slow drift rather than batch-to-batch noise.
_ADAPT_GAIN = 0.05
_ADAPT_MAX_STEP = 0.05
_PROGRESS_SECONDS = 5.0
# batch_size='auto' with solver='gauss-newton': the whole training set when
# its system n_samples * n_outputs has at most this many rows.
_GN_AUTO_SYSTEM = 4096


def _outputs(network, X):
    """Network outputs for validated X, computed in row chunks."""
    return network.outputs(X, _PREDICT_CHUNK)


def _lifted(X, offset):
    """Network input: X itself, or X lifted onto the sphere (offset not None)."""
    return X if offset is None else lift_to_sphere(X, offset)


def _active_fractions(activations):
    return np.array([
        A.nnz / (A.shape[0] * A.shape[1]) if sp.issparse(A) else np.count_nonzero(A) / A.size
        for A in activations[1:]])


class DivergenceError(ValueError):
    """Training produced a non-finite loss or update and was stopped."""


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_real(value, name, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


class BaseSparseMLP(BaseEstimator, metaclass=ABCMeta):
    """Shared fitting machinery; use SparseMLPClassifier or SparseMLPRegressor."""

    def __init__(
        self,
        hidden_layer_sizes=(4096, 4096),
        *,
        threshold="auto",
        adapt_threshold=True,
        target_active_fraction="auto",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        n_threads=None,
        dtype=np.float32,
        engine="sparse",
        first_layer_index="auto",
        input_normalization="sphere",
        gn_solver="auto",
        gn_damping=1e-3,
        gn_sketch_size="auto",
        gn_cg_tol=1e-6,
        gn_cg_max_iter=200,
        gn_loss="auto",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.threshold = threshold
        self.adapt_threshold = adapt_threshold
        self.target_active_fraction = target_active_fraction
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.n_threads = n_threads
        self.dtype = dtype
        self.engine = engine
        self.first_layer_index = first_layer_index
        self.input_normalization = input_normalization
        self.gn_solver = gn_solver
        self.gn_damping = gn_damping
        self.gn_sketch_size = gn_sketch_size
        self.gn_cg_tol = gn_cg_tol
        self.gn_cg_max_iter = gn_cg_max_iter
        self.gn_loss = gn_loss

    # ------------------------------------------------------------ validation

    def _validate_params(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError(
                f"hidden_layer_sizes must be a positive integer or a non-empty sequence of "
                f"them, got {self.hidden_layer_sizes!r}") from None
        if not sizes or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                            for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be a positive integer or a non-empty sequence of "
                f"them, got {self.hidden_layer_sizes!r}")
        if not (isinstance(self.threshold, str) and self.threshold == "auto"):
            _check_real(self.threshold, "threshold ('auto' or a number)")
        if self.target_active_fraction != "auto":
            _check_real(self.target_active_fraction, "target_active_fraction ('auto' or a number)",
                        low=0, high=1, low_open=True, high_open=True)
        if self.solver not in ("sgd", "adam", "gauss-newton"):
            raise ValueError(
                f"solver must be 'sgd', 'adam' or 'gauss-newton', got {self.solver!r}")
        if self.gn_solver not in GN_METHODS:
            raise ValueError(f"gn_solver must be one of {GN_METHODS}, got {self.gn_solver!r}")
        _check_real(self.gn_damping, "gn_damping", low=0, low_open=True)
        if self.gn_sketch_size != "auto":
            _check_positive_int(self.gn_sketch_size, "gn_sketch_size ('auto' or an integer)")
        _check_real(self.gn_cg_tol, "gn_cg_tol", low=0, high=1, low_open=True, high_open=True)
        _check_positive_int(self.gn_cg_max_iter, "gn_cg_max_iter")
        allowed_losses = ("auto",) + (GN_LOSSES if is_classifier(self) else ("squared",))
        if self.gn_loss not in allowed_losses:
            raise ValueError(f"gn_loss must be one of {allowed_losses}, got {self.gn_loss!r}")
        if self.engine not in ("sparse", "dense"):
            raise ValueError(f"engine must be 'sparse' or 'dense', got {self.engine!r}")
        if not (isinstance(self.first_layer_index, (bool, np.bool_))
                or isinstance(self.first_layer_index, str) and self.first_layer_index == "auto"):
            raise InvalidParameterError(f"first_layer_index must be 'auto', True or False, "
                                        f"got {self.first_layer_index!r}")
        if self.input_normalization not in ("sphere", None):
            raise ValueError(f"input_normalization must be 'sphere' or None, got "
                             f"{self.input_normalization!r}")
        _check_real(self.alpha, "alpha", low=0)
        if self.batch_size != "auto":
            _check_positive_int(self.batch_size, "batch_size ('auto' or an integer)")
        _check_real(self.learning_rate_init, "learning_rate_init", low=0, low_open=True)
        _check_positive_int(self.max_iter, "max_iter")
        _check_real(self.tol, "tol", low=0)
        _check_real(self.momentum, "momentum", low=0, high=1)
        _check_real(self.validation_fraction, "validation_fraction", low=0, high=1,
                    low_open=True, high_open=True)
        for name in ("beta_1", "beta_2"):
            _check_real(getattr(self, name), name, low=0, high=1, high_open=True)
        _check_real(self.epsilon, "epsilon", low=0, low_open=True)
        _check_positive_int(self.n_iter_no_change, "n_iter_no_change")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping",
                     "adapt_threshold"):
            check_bool(getattr(self, name), name)
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {self.dtype!r}")
        effective_n_threads(self.n_threads)
        return [int(s) for s in sizes]

    def _validate_input(self, X, y, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=(np.float64, np.float32),
                             multi_output=not is_classifier(self), y_numeric=not is_classifier(self),
                             reset=reset)
        X = self._as_network_input(X)
        if X.shape[0] < 1:
            raise ValueError("X must contain at least one sample")
        return X, y

    def _as_network_input(self, X):
        dtype = np.dtype(self.dtype)
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=dtype)
            X.sum_duplicates()
            return X
        return np.ascontiguousarray(X, dtype=dtype)

    # -------------------------------------------------------- initialisation

    def _thresholds(self, widths):
        if isinstance(self.threshold, str):
            return [auto_threshold(m) for m in widths]
        return [float(self.threshold)] * len(widths)

    def _targets(self, thresholds):
        if self.target_active_fraction == "auto":
            return [active_probability(b) for b in thresholds]
        return [float(self.target_active_fraction)] * len(thresholds)

    def _new_network(self, X, widths, n_outputs, rng):
        """A freshly initialised network for network inputs X (lifted onto
        the sphere when `input_normalization` is 'sphere')."""
        dtype = np.dtype(self.dtype)
        thresholds = self._thresholds(widths)
        network_class = SparseNetwork if self.engine == "sparse" else DenseNetwork
        if self.input_normalization == "sphere":
            coefs, intercepts = gaussian_layers(rng, X.shape[1], widths, thresholds, n_outputs,
                                                dtype.type)
            return network_class(coefs, intercepts, thresholds, self.n_threads)
        H = X[np.sort(rng.choice(X.shape[0], size=min(X.shape[0], _INIT_SAMPLE), replace=False))]
        coefs, intercepts = [], []
        std = 1.0 / np.sqrt(max(X.shape[1], 1))
        for layer, width in enumerate(widths + [n_outputs]):
            hidden = layer < len(widths)
            W, c, H = data_scaled_layer(rng, H, width, std, dtype.type,
                                        threshold=thresholds[layer] if hidden else None)
            coefs.append(W)
            intercepts.append(c)
            if hidden:
                std = hidden_std(width, thresholds[layer])
        return network_class(coefs, intercepts, thresholds, self.n_threads)

    def _optimizer(self):
        return Optimizer(self.solver, self.learning_rate_init, self.momentum,
                         self.nesterovs_momentum, self.beta_1, self.beta_2, self.epsilon)

    # -------------------------------------------------------------- training

    @abstractmethod
    def _loss_and_error(self, output, y):
        """Mean loss over the batch and its gradient w.r.t. the outputs."""

    @abstractmethod
    def _prepare_targets(self, y, incremental, classes=None):
        """Encoded targets for the network; sets classes_ / n_outputs_."""

    @abstractmethod
    def _validation_score(self, network, X, y):
        """Score on held-out data (accuracy or R^2)."""

    def _fit(self, X, y, incremental, classes=None):
        widths = self._validate_params()
        fitted = hasattr(self, "_network")
        continuing = fitted and (incremental or self.warm_start)
        X, y = self._validate_input(X, y, reset=not continuing)
        Y = self._prepare_targets(y, continuing, classes)
        if continuing and self._network.widths != widths:
            raise ValueError(
                f"hidden_layer_sizes changed from {tuple(self._network.widths)} to "
                f"{tuple(widths)}; warm_start and partial_fit continue the same network")
        if continuing:
            offset = self.input_offset_
            if (offset is None) != (self.input_normalization is None):
                raise ValueError(
                    f"input_normalization changed to {self.input_normalization!r}; "
                    "warm_start and partial_fit continue the same network")
        else:
            offset = None if self.input_normalization is None else sphere_offset(X)
        X = _lifted(X, offset)
        if continuing:
            network, rng = self._network, self._rng
        else:
            rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31 - 1))
            network = self._new_network(X, widths, Y.shape[1], rng)
        network.n_threads = effective_n_threads(self.n_threads)
        network.first_layer_index = self.first_layer_index
        state = self._training_state(network, continuing)
        state["input_offset"] = offset
        if self.solver == "gauss-newton":
            state["gauss_newton"] = self._gauss_newton_solver(rng, continuing)
        else:
            network.start_training(self._optimizer())
        try:
            if incremental:
                self._run_epochs(network, X, Y, rng, state, max_epochs=1, incremental=True)
            else:
                self._run_epochs(network, X, Y, rng, state, max_epochs=self.max_iter,
                                 incremental=False)
        except DivergenceError:
            if continuing:
                # The weights stayed finite; the optimizer moments may not have.
                network.optimizer = None
            raise
        self._commit(network, rng, state)
        return self

    def _training_state(self, network, continuing):
        if continuing:
            return {
                "loss_curve": list(self.loss_curve_),
                "validation_scores": None if self.validation_scores_ is None
                else list(self.validation_scores_),
                "best_loss": self.best_loss_,
                "best_validation_score": getattr(self, "best_validation_score_", None),
                "no_improvement": self._no_improvement_count,
                "n_iter": self.n_iter_,
                "t": self.t_,
                "active_history": [np.array(a) for a in self.active_fraction_history_],
                "targets": list(self._targets_),
                "best_params": None,
            }
        return {
            "loss_curve": [], "validation_scores": [] if self.early_stopping else None,
            "best_loss": np.inf, "best_validation_score": -np.inf if self.early_stopping else None,
            "no_improvement": 0, "n_iter": 0, "t": 0, "active_history": [],
            "targets": self._targets(network.thresholds), "best_params": None,
        }

    def _gauss_newton_solver(self, rng, continuing):
        loss = self.gn_loss
        if loss == "auto":
            loss = "cross-entropy" if is_classifier(self) else "squared"
        solver = GaussNewton(loss, self.gn_solver, self.gn_damping, self.gn_sketch_size,
                             self.gn_cg_tol, self.gn_cg_max_iter, rng)
        previous = getattr(self, "_gauss_newton", None) if continuing else None
        if previous is not None:
            solver.damping = previous.damping
            solver.history = list(previous.history)
        return solver

    def _batch_size(self, n_samples, n_outputs):
        if self.batch_size == "auto" and self.solver == "gauss-newton":
            if n_samples * n_outputs <= _GN_AUTO_SYSTEM:
                return n_samples
            return max(1, _GN_AUTO_SYSTEM // n_outputs)
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(f"Got batch_size={self.batch_size} larger than the {n_samples} "
                          "training samples; using all of them per batch.", stacklevel=3)
        return min(self.batch_size, n_samples)

    def _run_epochs(self, network, X, Y, rng, state, max_epochs, incremental):
        X_val = Y_val = None
        if self.early_stopping and not incremental:
            stratify = Y.argmax(axis=1) if is_classifier(self) else None
            split_seed = int(rng.integers(2**31 - 1))
            try:
                X, X_val, Y, Y_val = train_test_split(
                    X, Y, test_size=self.validation_fraction, random_state=split_seed,
                    stratify=stratify)
            except ValueError:
                X, X_val, Y, Y_val = train_test_split(
                    X, Y, test_size=self.validation_fraction, random_state=split_seed)
        n_samples = X.shape[0]
        batch_size = self._batch_size(n_samples, Y.shape[1])
        if self.solver == "gauss-newton":
            check_system_size(batch_size, Y.shape[1])
        widths = network.widths
        for _ in range(max_epochs):
            start = time.perf_counter()
            order = rng.permutation(n_samples) if self.shuffle else np.arange(n_samples)
            total_loss = 0.0
            active = np.zeros(len(widths))
            last_progress = start
            n_batches = -(-n_samples // batch_size)
            for number, begin in enumerate(range(0, n_samples, batch_size)):
                batch = order[begin:begin + batch_size]
                loss, batch_active = self._step(network, X[batch], Y[batch], state)
                total_loss += loss * len(batch)
                active += batch_active * len(batch)
                now = time.perf_counter()
                if self.verbose and now - last_progress > _PROGRESS_SECONDS:
                    print(f"  batch {number + 1}/{n_batches}: running loss "
                          f"{total_loss / (begin + len(batch)):.6f}, {now - start:.1f}s",
                          file=sys.stdout, flush=True)
                    last_progress = now
            state["n_iter"] += 1
            state["t"] += n_samples
            penalty = (0.0 if self.solver == "gauss-newton"
                       else 0.5 * self.alpha * network.squared_weight_norm() / batch_size)
            epoch_loss = total_loss / n_samples + penalty
            state["loss_curve"].append(epoch_loss)
            state["active_history"].append(active / n_samples)
            message = (f"Iteration {state['n_iter']}, loss = {epoch_loss:.8f}, active = ["
                       + ", ".join(f"{a:.2%}" for a in active / n_samples) + "]")
            if X_val is not None:
                score = self._validation_score(network, X_val, Y_val)
                state["validation_scores"].append(score)
                message += f", validation score = {score:.6f}"
            if self.verbose:
                print(f"{message}, {time.perf_counter() - start:.2f}s", flush=True)
            if incremental:
                continue
            if self._stop_now(network, state, epoch_loss):
                break
        else:
            if not incremental:
                warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=3)
        if self.early_stopping and state["best_params"] is not None and not incremental:
            network.restore(state["best_params"])
        # The steps kept the first-layer index's query buffers for the next
        # step; the fitted model need not hold them.
        network.release_buffers()

    def _stop_now(self, network, state, epoch_loss):
        """scikit-learn's no-improvement rule on the training loss, or on the
        validation score with early stopping (keeping the best weights)."""
        if self.early_stopping:
            score = state["validation_scores"][-1]
            if score < state["best_validation_score"] + self.tol:
                state["no_improvement"] += 1
            else:
                state["no_improvement"] = 0
            if score > state["best_validation_score"]:
                state["best_validation_score"] = score
                state["best_params"] = network.snapshot()
        else:
            if epoch_loss > state["best_loss"] - self.tol:
                state["no_improvement"] += 1
            else:
                state["no_improvement"] = 0
        state["best_loss"] = min(state["best_loss"], epoch_loss)
        if state["no_improvement"] > self.n_iter_no_change:
            if self.verbose:
                criterion = "Validation score" if self.early_stopping else "Training loss"
                print(f"{criterion} did not improve more than tol={self.tol} for "
                      f"{self.n_iter_no_change} consecutive epochs. Stopping.", flush=True)
            return True
        return False

    def _step(self, network, X, Y, state):
        if self.solver == "gauss-newton":
            return self._gauss_newton_step(network, X, Y, state)
        activations, output = network.training_forward(X)
        loss, error = self._loss_and_error(output, Y)
        if not np.isfinite(loss) or not np.all(np.isfinite(error)):
            raise DivergenceError(
                f"{type(self).__name__}: the loss became non-finite at iteration "
                f"{state['n_iter'] + 1}; training stopped before applying the step. Lower "
                "learning_rate_init or standardise the inputs. The weights are finite: a "
                "previously fitted model is unchanged by fit, and partial_fit/warm_start "
                "keep the last finite weights.")
        network.optimizer.begin_step()
        network.decay(1.0 - self.learning_rate_init * self.alpha / X.shape[0])
        if not network.backward_update(activations, error.astype(network.dtype)):
            raise DivergenceError(
                f"{type(self).__name__}: an update became non-finite at iteration "
                f"{state['n_iter'] + 1}; the affected weights were left unchanged and "
                "training stopped. Lower learning_rate_init or standardise the inputs.")
        active = _active_fractions(activations)
        if self.adapt_threshold:
            for layer, (fraction, target) in enumerate(zip(active, state["targets"])):
                b = network.thresholds[layer]
                density = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
                step = _ADAPT_GAIN * (fraction - target) / max(density, 1e-3)
                network.thresholds[layer] = b + float(np.clip(step, -_ADAPT_MAX_STEP,
                                                              _ADAPT_MAX_STEP))
        return loss, active

    def _gauss_newton_step(self, network, X, Y, state):
        """One damped Gauss-Newton step. Thresholds stay fixed: moving them
        would change the function whose loss the damping test compares."""
        try:
            loss, activations = state["gauss_newton"].step(network, X, Y)
        except NonFiniteLossError:
            raise DivergenceError(
                f"{type(self).__name__}: the loss became non-finite at iteration "
                f"{state['n_iter'] + 1}; training stopped before applying the step. "
                "Standardise the inputs and targets. A previously fitted model is unchanged "
                "by fit, and partial_fit/warm_start keep the last finite weights.") from None
        return loss, _active_fractions(activations)

    def _commit(self, network, rng, state):
        coefs, intercepts = network.export()
        self._network = network
        self._rng = rng
        self.input_offset_ = state["input_offset"]
        self.coefs_ = coefs
        self.intercepts_ = intercepts
        self.thresholds_ = np.array(network.thresholds)
        self.n_layers_ = len(coefs) + 1
        self.n_outputs_ = coefs[-1].shape[1]
        self.loss_curve_ = state["loss_curve"]
        self.loss_ = state["loss_curve"][-1]
        self.best_loss_ = None if self.early_stopping else state["best_loss"]
        self.validation_scores_ = state["validation_scores"]
        if self.early_stopping:
            self.best_validation_score_ = state["best_validation_score"]
        self.n_iter_ = state["n_iter"]
        self.t_ = state["t"]
        self.active_fraction_history_ = state["active_history"]
        self.active_fraction_ = state["active_history"][-1]
        self._targets_ = state["targets"]
        self._no_improvement_count = state["no_improvement"]
        self._gauss_newton = state.get("gauss_newton")
        self.gauss_newton_history_ = (None if self._gauss_newton is None
                                      else self._gauss_newton.history)

    # ------------------------------------------------------------ prediction

    def _predict_output(self, X):
        check_is_fitted(self, "_network")
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float64, np.float32),
                          reset=False)
        self._network.first_layer_index = self.first_layer_index
        return _outputs(self._network, self._network_input(X))

    def _network_input(self, X):
        """Validated X as the fitted network takes it: in its dtype, and
        lifted onto the sphere when it was fitted so."""
        return _lifted(self._as_network_input(X), self.input_offset_)

    def __sklearn_is_fitted__(self):
        return getattr(self, "_network", None) is not None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class SparseMLPClassifier(ClassifierMixin, BaseSparseMLP):
    """Multi-layer shifted-ReLU classifier trained with sparse steps.

    Every hidden unit computes ``max(z - b, 0)`` with a threshold b that
    leaves only a few percent of units active, so each training step is
    sparse: fused thresholded products forward, k x k blocks backward, and
    optimizer updates that touch only the weights in the batch's gradient
    pattern. The output layer is a softmax trained with cross-entropy.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(4096, 4096)
        Width of each hidden layer. Width is what this estimator is for.
    threshold : 'auto' or float, default='auto'
        Initial threshold b of every hidden layer, on unit-scale
        pre-activations. 'auto' is the schedule ``sqrt(0.4 ln width)``
        (about 4.8% active units at width 1024, 2.4% at 16384).
    adapt_threshold : bool, default=True
        Adjust each layer's threshold after every batch so the measured
        active fraction tracks `target_active_fraction` (training drifts it
        otherwise, and the cost of a step grows with it).
    target_active_fraction : 'auto' or float in (0, 1), default='auto'
        'auto': P(Z > b) for the initial threshold b and Z ~ N(0, 1).
    solver : {'adam', 'sgd', 'gauss-newton'}, default='adam'
        Adam or SGD with momentum, as in scikit-learn. Hidden weights are
        updated lazily: an entry and its optimizer state change only when
        the batch gives it a gradient (as in sparse Adam); biases and the
        output layer are updated densely. 'gauss-newton': one
        Levenberg–Marquardt-damped Gauss–Newton step per batch (generalised
        Gauss–Newton for the softmax cross-entropy), solved in the n·C × n·C
        space of the batch's Jacobian Gram and applied as a sparse rank-≤n
        update per layer; thresholds stay fixed (`adapt_threshold`,
        `alpha` and the learning-rate parameters are not used). See
        DESIGN.md §5 and the README.
    alpha : float, default=1e-4
        Strength of the L2 penalty, applied as decoupled weight decay
        (weights shrink by ``lr * alpha / batch_size`` each step) so that
        steps stay sparse.
    batch_size : int or 'auto', default='auto'
        ``min(200, n_samples)`` when 'auto'. With 'gauss-newton', 'auto'
        is the whole training set when ``n_samples * n_outputs <= 4096``
        (a full-batch step) and ``4096 // n_outputs`` samples otherwise.
    learning_rate_init : float, default=0.001
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
        Initialisation, shuffling and validation split. Results are
        reproducible for a fixed seed and thread count.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print loss, validation score, active fraction per layer and time
        after each epoch, and progress inside epochs longer than 5 seconds.
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float
        Adam's parameters.
    n_iter_no_change : int, default=10
    n_threads : int, default=None
        None: all CPUs allowed by OMP_NUM_THREADS / affinity; -1: all CPUs;
        k > 0: k threads.
    dtype : numpy.float32 or numpy.float64, default=numpy.float32
        Precision of the weights and of every product.
    engine : {'sparse', 'dense'}, default='sparse'
        'dense' trains the same network (initialisation, loss, optimizer,
        batching) with dense NumPy/BLAS products and dense optimizer
        updates: the baseline subquad is measured against.
    input_normalization : {'sphere', None}, default='sphere'
        'sphere' maps every input x (dense or CSR) to
        ``sqrt(d + 1) * (x, c) / ||(x, c)||``, with c the root-mean-square
        norm of the first fit's training rows (`input_offset_`), and
        initialises the network as in the over-parametrisation analysis
        (Gaussian weights at the sparsity-aware scale, zero biases): every
        sample, whatever its norm, then has standard normal first-layer
        pre-activations and about the same number of active units. The map
        is one to one, so no information is lost. None feeds x as given and
        scales every layer's initial weights and biases from a sample of the
        data; a sample of small norm may then have no active unit, hence no
        gradient, and never be fitted (on standardised diabetes data,
        Gauss–Newton stalled at 0.2 x its initial loss; see the README).
        Standardising features still helps either way.
    first_layer_index : {'auto', True, False}, default='auto'
        Whether the first hidden layer of dense input is computed with an
        `ActiveNeuronIndex` over its neurons (bias folded in as an extra
        coordinate), in training steps and in predictions (and validation
        scores). 'auto' needs a first layer of at least 32768 units; it
        builds an index at the first training step when the network input
        dimension is <= 5 (``n_features + 1`` with the sphere lift), keeps
        it current after every step by refitting its bounds (rebuilt when
        they degrade), and builds one for a prediction of at least 2048
        rows when the input dimension is <= 7; the index then picks tree or
        brute per call from measured pruning. True always uses a tree
        index; False never. Results equal the brute path up to rounding of
        values at the threshold. Gauss-Newton steps use the brute product.
    gn_solver : {'auto', 'cholesky', 'sketch-cg'}, default='auto'
        How 'gauss-newton' solves its damped system of ``batch * n_outputs``
        rows: Cholesky (with an eigendecomposition fallback when the system
        is singular), or conjugate gradient preconditioned by the Gram's
        diagonal and the QR of a TensorSRHT sketch of the Jacobian rows
        (never formed). 'auto' is 'sketch-cg' from 2000 rows on and
        'cholesky' below, the crossover measured by bench/gauss_newton.py
        (see the README).
    gn_damping : float > 0, default=1e-3
        Initial Levenberg–Marquardt damping, relative to the mean diagonal of
        the Gram; adapted after every step.
    gn_sketch_size : int or 'auto', default='auto'
        Sketch columns for 'sketch-cg'; 'auto' is 16. Larger sketches were
        measured to save no iterations (see the README).
    gn_cg_tol : float in (0, 1), default=1e-6
        Relative residual at which 'sketch-cg' stops.
    gn_cg_max_iter : int, default=200
        Iteration cap of 'sketch-cg' (the step is then inexact; the damping
        test still guards it).
    gn_loss : {'auto', 'cross-entropy', 'squared'}, default='auto'
        Loss of the Gauss–Newton step: 'auto' is the softmax cross-entropy
        (generalised Gauss–Newton) for the classifier and the squared loss
        for the regressor; the classifier also accepts 'squared' (squared
        loss on one-hot targets).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray
        ``coefs_[l]`` has shape (fan_in, fan_out); the first layer's fan_in
        is ``n_features_in_ + 1`` with ``input_normalization='sphere'`` (the
        lift's extra coordinate comes last).
    input_offset_ : float or None
        The sphere lift's extra coordinate c, fixed at the first fit (None
        without the lift).
    intercepts_ : list of ndarray
    thresholds_ : ndarray of shape (n_hidden_layers,)
        Current threshold of each hidden layer.
    active_fraction_ : ndarray of shape (n_hidden_layers,)
        Measured fraction of active units per hidden layer over the last epoch.
    active_fraction_history_ : list of ndarray
        ``active_fraction_`` of every epoch.
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_
        As in scikit-learn's MLPClassifier.
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.
    n_layers_, n_outputs_, n_features_in_, feature_names_in_
        As in scikit-learn.
    gauss_newton_history_ : list of dict or None
        With 'gauss-newton', one record per step: ``loss_before``,
        ``loss_after`` (batch loss, of the Gauss–Newton loss), ``accepted``,
        ``damping``, ``gain_ratio``, ``attempts``, ``method``,
        ``cg_iterations``, ``cg_converged``, ``system_size`` and ``time``
        (seconds). None for the other solvers.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from subquad import SparseMLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SparseMLPClassifier(hidden_layer_sizes=(512,), max_iter=5,
    ...                           random_state=0).fit(X / 16, y)  # doctest: +SKIP
    """

    def fit(self, X, y):
        """Fit the network to dense or CSR `X` (n_samples, n_features) and labels `y`."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); `classes` (all labels) is required on the first call."""
        if classes is None and getattr(self, "_network", None) is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, incremental=True, classes=classes)

    def _prepare_targets(self, y, continuing, classes=None):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if continuing:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise ValueError(f"y has labels {unseen.tolist()} not in classes_ "
                                 f"{self.classes_.tolist()}")
        else:
            labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if classes is not None:
                unseen = np.setdiff1d(np.unique(y), labels)
                if unseen.size:
                    raise ValueError(f"y has labels {unseen.tolist()} not in classes "
                                     f"{labels.tolist()}")
            if labels.size < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                    f"({labels[0]!r}).")
            self._label_encoder = LabelEncoder().fit(labels)
            self.classes_ = self._label_encoder.classes_
        codes = self._label_encoder.transform(y)
        Y = np.zeros((len(codes), len(self.classes_)), dtype=np.dtype(self.dtype))
        Y[np.arange(len(codes)), codes] = 1
        return Y

    def _loss_and_error(self, output, Y):
        logp = log_softmax(output.astype(np.float64), axis=1)
        loss = -float(np.sum(Y * logp)) / len(Y)
        return loss, (np.exp(logp) - Y) / len(Y)

    def _validation_score(self, network, X, Y):
        return accuracy_score(Y.argmax(axis=1), _outputs(network, X).argmax(axis=1))

    def predict(self, X):
        """Most probable class of each sample."""
        output = self._predict_output(X)
        return self.classes_[output.argmax(axis=1)]

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes)."""
        return softmax(self._predict_output(X).astype(np.float64), axis=1)

    def predict_log_proba(self, X):
        """Log of `predict_proba`, computed stably."""
        return log_softmax(self._predict_output(X).astype(np.float64), axis=1)


class SparseMLPRegressor(RegressorMixin, BaseSparseMLP):
    """Multi-layer shifted-ReLU regressor trained with sparse steps.

    Same network and training as `SparseMLPClassifier` with a linear output
    layer and the squared loss ``0.5 * mean_i ||f(x_i) - y_i||^2``; single-
    and multi-output targets.

    Parameters
    ----------
    See `SparseMLPClassifier`; every parameter means the same here
    (including ``first_layer_index``: an `ActiveNeuronIndex` for the first
    layer of predictions on low-dimensional input), except that `gn_loss`
    accepts only 'auto' and 'squared'.

    Attributes
    ----------
    See `SparseMLPClassifier` (no ``classes_``).
    """

    def fit(self, X, y):
        """Fit the network to dense or CSR `X` and targets `y` (n_samples,) or (n_samples, n_outputs)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over (X, y)."""
        return self._fit(X, y, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _prepare_targets(self, y, continuing, classes=None):
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1 if not continuing else self._y_1d
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if continuing and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs; this model was fitted with "
                             f"{self.n_outputs_}")
        return Y.astype(np.dtype(self.dtype))

    def _loss_and_error(self, output, Y):
        residual = output.astype(np.float64) - Y
        loss = 0.5 * float(np.sum(residual * residual)) / len(Y)
        return loss, residual / len(Y)

    def _validation_score(self, network, X, Y):
        return r2_score(Y, _outputs(network, X))

    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs)."""
        output = self._predict_output(X).astype(np.float64)
        return output.ravel() if self._y_1d else output
