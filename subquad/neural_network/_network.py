"""Parameters, forward pass and training step of a shifted-ReLU network.

`SparseNetwork` keeps every step sparse: fused thresholded products forward,
a fused backward + optimizer kernel that touches only the weights in the
batch's gradient pattern. `DenseNetwork` runs the same network, loss and
optimizer with dense NumPy/BLAS products; it is the baseline that the
benchmarks and the demo compare against.

Layer l computes ``z = h @ W_l + c_l`` and ``h_l = max(z - b_l, 0)``; the
output layer is linear. Hidden weights are stored divided by a per-layer
scale s_l, so decoupled weight decay multiplies s_l instead of every weight.
"""

import numpy as np
import scipy.sparse as sp

from .._threads import effective_n_threads, threads_for_work
from ..index import ActiveNeuronIndex
from ..linalg.threshold import threshold_csr
from ._sparse_backprop import OPTIMIZER_ADAM as ADAM
from ._sparse_backprop import OPTIMIZER_SGD as SGD
from ._sparse_backprop import backward_update, output_deltas

# Below this weight scale the stored weights are renormalised (one dense
# pass), long before float32 could lose precision.
_MIN_SCALE = 1e-3

# first_layer_index='auto' uses an ActiveNeuronIndex for the first layer
# only for low-dimensional dense input (the index has one more coordinate,
# the bias; bench/active_index.py), a very wide first layer, and, to build
# one for a prediction, enough rows to pay for the build (a build costs
# about as much as a brute first layer on a few hundred rows). Training
# builds it once and keeps it current: after each step every neuron has
# moved, and `ActiveNeuronIndex.update(None, ...)` refits the bounds in
# linear time (bench/active_index_fit.py measures the step). Training keeps
# to a lower input dimension than predictions: with the index in training
# steps, fits were 10% faster at d = 4 features (input 5) but no faster at
# d = 5 (input 6), while predictions there were 1.8-2.6x faster
# (`bench/active_index_fit.py --dim 4` and `--dim 5`, runs alternating the
# rule); a prediction's index also picks brute per call when the tree would
# lose, whereas a fit pays the refit every step.
_INDEX_MAX_INPUT_DIM = 7
_INDEX_MAX_TRAINING_INPUT_DIM = 5
_INDEX_MIN_WIDTH = 1 << 15
_INDEX_MIN_ROWS = 2048

# What one weight the backward pass reads or updates at a random place in a
# row (latency-bound) costs, in the multiply-adds `threads_for_work` counts:
# ~2 ns each (the first layer of bench/active_index_fit.py, 2M of them, took
# 4.7 ms on one thread and 2.4 ms on two).
_SCATTERED_ACCESS_COST = 8


def _squared_norm(A):
    """Sum of squares of A, accumulated in float64: large but finite float32
    weights would overflow a float32 sum. Not a BLAS dot: a multi-threaded
    dot wakes OpenBLAS's workers, which then spin for about 0.1 s and take
    a core from the OpenMP kernels of the next training steps: an epoch of
    digits takes about that long (bench/mlp_blas_spin.py)."""
    flat = A.ravel()
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64))


class Optimizer:
    """Hyper-parameters, step count and dense-array updates of SGD with
    momentum or Adam, following scikit-learn's MLP optimizers."""

    def __init__(self, solver, learning_rate, momentum, nesterov, beta_1, beta_2, epsilon):
        self.kind = ADAM if solver == "adam" else SGD
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0

    def begin_step(self):
        self.t += 1

    @property
    def step_size(self):
        """Learning rate of this step; Adam's includes its bias correction."""
        if self.kind == ADAM:
            return (self.learning_rate * np.sqrt(1 - self.beta_2**self.t)
                    / (1 - self.beta_1**self.t))
        return self.learning_rate

    def new_state(self, shape, dtype):
        n = 2 if self.kind == ADAM else 1
        return [np.zeros(shape, dtype=dtype) for _ in range(n)]

    def dense_update(self, param, grad, state):
        """In-place update of a dense parameter from `grad` (overwritten).

        Returns False, leaving `param` unchanged, if the step is not finite.
        Operates in place so the dense baseline pays no avoidable passes.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            # A diverging step is detected below and reported by the caller.
            step = self._dense_step(grad, state)
        if not np.all(np.isfinite(step)):
            return False
        param += step
        return True

    def _dense_step(self, grad, state):
        """The step for `grad` (its buffer reused), advancing `state`."""
        lr = self.step_size
        if self.kind == ADAM:
            m, v = state
            m *= self.beta_1
            m += (1 - self.beta_1) * grad
            np.multiply(grad, grad, out=grad)
            v *= self.beta_2
            grad *= 1 - self.beta_2
            v += grad
            step = np.sqrt(v, out=grad)
            step += self.epsilon
            np.divide(m, step, out=step)
            step *= -lr
        else:
            (velocity,) = state
            velocity *= self.momentum
            grad *= lr
            velocity -= grad
            if self.nesterov:
                step = np.negative(grad, out=grad)
                step += self.momentum * velocity
            else:
                step = velocity
        return step


class _Network:
    """Shared layout: hidden (W, c, b, scale) per layer and a linear output."""

    def __init__(self, coefs, intercepts, thresholds, n_threads):
        self.hidden_W = [np.ascontiguousarray(W) for W in coefs[:-1]]
        self.hidden_c = [np.ascontiguousarray(c) for c in intercepts[:-1]]
        self.thresholds = [float(b) for b in thresholds]
        self.scales = [1.0] * len(self.hidden_W)
        self.W_out = np.ascontiguousarray(coefs[-1])
        self.c_out = np.ascontiguousarray(intercepts[-1])
        self.n_threads = effective_n_threads(n_threads)
        self.dtype = self.W_out.dtype
        self.optimizer = None
        self.states = None

    @property
    def widths(self):
        return [W.shape[1] for W in self.hidden_W]

    def start_training(self, optimizer):
        """Attach an optimizer, keeping the state of a previous one of the same kind."""
        if self.optimizer is not None and self.optimizer.kind == optimizer.kind:
            optimizer.t = self.optimizer.t
        else:
            self.states = self._new_states(optimizer)
        self.optimizer = optimizer

    def _new_states(self, optimizer):
        """Optimizer state of every parameter: hidden W, hidden c, W_out, c_out."""
        others = self.hidden_c + [self.W_out, self.c_out]
        return ([self._hidden_weight_state(W, optimizer) for W in self.hidden_W]
                + [optimizer.new_state(p.shape, self.dtype) for p in others])

    def _hidden_weight_state(self, W, optimizer):
        return optimizer.new_state(W.shape, self.dtype)

    def decay(self, factor):
        """Multiply every weight (not biases) by `factor` (decoupled decay)."""
        if factor == 1.0:
            return
        self.W_out *= factor
        for layer in range(len(self.hidden_W)):
            self.scales[layer] *= factor
            if self.scales[layer] < _MIN_SCALE:
                self._fold_scale(layer)

    def _fold_scale(self, layer):
        if self.scales[layer] != 1.0:
            self.hidden_W[layer] *= self.dtype.type(self.scales[layer])
            self.scales[layer] = 1.0

    def export(self):
        """True weights (scales folded in) and intercepts, as lists."""
        for layer in range(len(self.hidden_W)):
            self._fold_scale(layer)
        return self.hidden_W + [self.W_out], self.hidden_c + [self.c_out]

    def snapshot(self):
        """Copy of every parameter, for restoring the best epoch."""
        return ([W.copy() for W in self.hidden_W], [c.copy() for c in self.hidden_c],
                list(self.thresholds), list(self.scales), self.W_out.copy(), self.c_out.copy())

    def restore(self, snapshot):
        hidden_W, hidden_c, thresholds, scales, W_out, c_out = snapshot
        for target, value in zip(self.hidden_W + self.hidden_c + [self.W_out, self.c_out],
                                 hidden_W + hidden_c + [W_out, c_out]):
            target[...] = value
        self.thresholds = list(thresholds)
        self.scales = list(scales)

    def training_forward(self, X):
        """`forward` for a training step."""
        return self.forward(X)

    def outputs(self, X, chunk):
        """Network outputs for X, computed `chunk` rows at a time."""
        return np.vstack([self.forward(X[i:i + chunk])[1]
                          for i in range(0, X.shape[0], chunk)])

    def release_buffers(self):
        """Free memory kept between calls for speed (none in this class)."""

    def squared_weight_norm(self):
        total = _squared_norm(self.W_out)
        for W, s in zip(self.hidden_W, self.scales):
            total += s * s * _squared_norm(W)
        return total

    def _update_output_and_biases(self, H_last, error, bias_grads):
        """Dense updates of the output layer and of every hidden bias (their
        size is linear in the width)."""
        opt = self.optimizer
        n_hidden = len(self.hidden_W)
        ok = opt.dense_update(self.W_out, np.array(H_last.T @ error, dtype=self.dtype),
                              self.states[2 * n_hidden])
        ok &= opt.dense_update(self.c_out, error.sum(axis=0).astype(self.dtype),
                               self.states[2 * n_hidden + 1])
        for layer, grad in enumerate(bias_grads):
            ok &= opt.dense_update(self.hidden_c[layer], grad, self.states[n_hidden + layer])
        return ok


class SparseNetwork(_Network):
    """Every product sparse: forward by fused thresholded products, backward
    and update by `backward_update` on the k_in x k_out blocks."""

    def _hidden_weight_state(self, W, optimizer):
        # Interleaved, (m_in, m_out, n_state): a sparse update then touches
        # one cache line for the whole state of a weight.
        n_state = 2 if optimizer.kind == ADAM else 1
        return np.zeros(W.shape + (n_state,), dtype=self.dtype)

    # {'auto', True, False}: whether predictions compute the first layer
    # with an ActiveNeuronIndex (see _INDEX_MAX_INPUT_DIM); set by the estimator.
    first_layer_index = "auto"

    def __getstate__(self):
        # The index is a cache, rebuilt on demand: do not pickle it.
        state = self.__dict__.copy()
        state.pop("_index", None)
        return state

    def _first_layer_neurons(self):
        """First-layer neurons as index rows: weights, then the bias divided
        by the scale (the matching query coordinate is 1)."""
        W, c, s = self.hidden_W[0], self.hidden_c[0], self.scales[0]
        neurons = np.empty((W.shape[1], W.shape[0] + 1), dtype=self.dtype)
        neurons[:, :-1] = W.T
        neurons[:, -1] = c / self.dtype.type(s)
        return neurons

    def _first_layer_index(self, n_rows, training=False):
        """An index over the current first layer, or None to use the brute
        product. A cached index is brought up to date with the weights (a
        bottom-up refit of its bounds, or a rebuild if they have degraded);
        a new one is built for a prediction of enough rows, or for training,
        which reuses it every step."""
        auto = isinstance(self.first_layer_index, str)
        n_in, width = self.hidden_W[0].shape
        if not auto and not self.first_layer_index:
            return None
        max_dim = _INDEX_MAX_TRAINING_INPUT_DIM if training else _INDEX_MAX_INPUT_DIM
        if auto and (n_in > max_dim or width < _INDEX_MIN_WIDTH):
            return None
        neurons = self._first_layer_neurons()
        index = getattr(self, "_index", None)
        if index is not None:
            if not np.array_equal(index.W_, neurons):
                index.update(None, neurons)
            return index
        if auto and not training and n_rows < _INDEX_MIN_ROWS:
            return None
        self._index = ActiveNeuronIndex(
            neurons, algorithm="auto" if auto else "tree", n_threads=self.n_threads)
        return self._index

    def training_forward(self, X):
        """`forward` for a training step: the first layer through the
        maintained index when `first_layer_index` says so."""
        index = None if sp.issparse(X) else self._first_layer_index(X.shape[0], training=True)
        return self.forward(X, index)

    def outputs(self, X, chunk):
        index = None if sp.issparse(X) else self._first_layer_index(X.shape[0])
        outputs = np.vstack([self.forward(X[i:i + chunk], index)[1]
                             for i in range(0, X.shape[0], chunk)])
        # The index's buffers now hold a whole chunk's first layer: kept,
        # they would stay with the fitted model.
        self.release_buffers()
        return outputs

    def release_buffers(self):
        """Free the first-layer index's query buffers (see
        `ActiveNeuronIndex.release_workspace`); the index itself stays."""
        index = getattr(self, "_index", None)
        if index is not None:
            index.release_workspace()

    def forward(self, X, first_layer_index=None):
        """Activations (input, then CSR per hidden layer) and dense outputs.
        With `first_layer_index` (over `_first_layer_neurons`, dense X) the
        first layer is computed by the index."""
        activations = [X]
        H = X
        for layer, (W, c, b, s) in enumerate(
                zip(self.hidden_W, self.hidden_c, self.thresholds, self.scales)):
            if layer == 0 and first_layer_index is not None:
                ones = np.ones((X.shape[0], 1), dtype=self.dtype)
                # The next layer's product, the output layer and the backward
                # pass take each row's columns in any order.
                H = first_layer_index.query(np.hstack([X, ones]), b / s, sort_indices=False)
            else:
                shift = ((c.astype(np.float64) - b) / s).astype(self.dtype)
                H = threshold_csr(H, W, shift, n_threads=self.n_threads)
            if s != 1.0:
                H.data *= self.dtype.type(s)
            activations.append(H)
        output = np.asarray(H @ self.W_out, dtype=self.dtype)
        output += self.c_out
        return activations, output

    def backward_update(self, activations, error):
        """One optimizer step from the output error dLoss/dOutput (n, C).
        Returns False if an update would have made a parameter non-finite
        (such entries are left unchanged)."""
        opt = self.optimizer
        n_hidden = len(self.hidden_W)
        H_last = activations[-1]
        # Deltas of the last hidden layer, on its active pattern only.
        delta_data = np.empty(H_last.nnz, dtype=self.dtype)
        output_deltas(np.ascontiguousarray(H_last.indptr, dtype=np.int64),
                      np.ascontiguousarray(H_last.indices, dtype=np.int32),
                      np.ascontiguousarray(error, dtype=self.dtype), self.W_out, delta_data,
                      threads_for_work(self.n_threads,
                                       H_last.nnz * error.shape[1] * _SCATTERED_ACCESS_COST))
        delta = sp.csr_matrix((delta_data, H_last.indices, H_last.indptr), shape=H_last.shape)
        bias_grads = [None] * n_hidden
        ok = True
        for layer in range(n_hidden - 1, -1, -1):
            H_in = activations[layer]
            if not sp.issparse(H_in):
                H_in = sp.csr_matrix(H_in)
            positions = sp.csr_matrix(
                (np.arange(H_in.nnz, dtype=np.int64), H_in.indices, H_in.indptr),
                shape=H_in.shape).tocsc()
            position = np.ascontiguousarray(positions.data, dtype=np.int64)
            want_delta_in = layer > 0
            delta_in = np.empty(H_in.nnz if want_delta_in else 0, dtype=self.dtype)
            state = self.states[layer]
            n_bad = backward_update(
                np.ascontiguousarray(positions.indptr, dtype=np.int64),
                np.ascontiguousarray(positions.indices, dtype=np.int32),
                np.ascontiguousarray(H_in.data[position], dtype=self.dtype),
                position,
                np.ascontiguousarray(delta.data, dtype=self.dtype),
                np.ascontiguousarray(delta.indices, dtype=np.int32),
                np.ascontiguousarray(delta.indptr, dtype=np.int64),
                self.hidden_W[layer], state, delta_in, want_delta_in,
                opt.kind, self.scales[layer], opt.step_size, opt.momentum, opt.nesterov,
                opt.beta_1, opt.beta_2, opt.epsilon,
                threads_for_work(self.n_threads, H_in.nnz * delta.nnz / max(delta.shape[0], 1)
                                 * _SCATTERED_ACCESS_COST))
            ok &= n_bad == 0
            bias_grads[layer] = np.asarray(delta.sum(axis=0), dtype=self.dtype).ravel()
            if want_delta_in:
                delta = sp.csr_matrix((delta_in, H_in.indices, H_in.indptr), shape=H_in.shape)
        ok &= self._update_output_and_biases(H_last, error, bias_grads)
        return ok


class DenseNetwork(_Network):
    """The same network trained with dense products (the baseline); weight
    decay is applied to the weights directly, so every scale stays 1."""

    def forward(self, X):
        activations = [X]
        H = X
        for W, c, b in zip(self.hidden_W, self.hidden_c, self.thresholds):
            Z = np.asarray(H @ W, dtype=self.dtype)
            Z += c - self.dtype.type(b)
            H = np.maximum(Z, 0, out=Z)
            activations.append(H)
        output = np.asarray(H @ self.W_out, dtype=self.dtype)
        output += self.c_out
        return activations, output

    def decay(self, factor):
        if factor == 1.0:
            return
        for W in self.hidden_W + [self.W_out]:
            W *= self.dtype.type(factor)

    def backward_update(self, activations, error):
        n_hidden = len(self.hidden_W)
        delta = (error @ self.W_out.T) * (activations[-1] > 0)
        bias_grads = [None] * n_hidden
        ok = True
        for layer in range(n_hidden - 1, -1, -1):
            H_in = activations[layer]
            grad = np.asarray(H_in.T @ delta, dtype=self.dtype)
            bias_grads[layer] = delta.sum(axis=0)
            if layer > 0:
                next_delta = (delta @ self.hidden_W[layer].T) * (H_in > 0)
            ok &= self.optimizer.dense_update(self.hidden_W[layer], grad, self.states[layer])
            if layer > 0:
                delta = next_delta
        ok &= self._update_output_and_biases(activations[-1], error, bias_grads)
        return ok
