"""Threshold schedule and sparsity-aware initialisation (DESIGN.md §1).

With pre-activations z ~ N(0, 1) and the shifted ReLU max(z - b, 0), a unit
is active with probability P(Z > b) and its output has second moment
E[(Z - b)_+^2] = (1 + b^2) P(Z > b) - b phi(b). Weights are scaled by that
moment so pre-activations stay at unit scale from layer to layer; He's
scale would make the signal vanish behind the threshold after one layer.
"""

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2 * np.pi)


def auto_threshold(width):
    """The paper's threshold schedule b = sqrt(0.4 ln m) for a layer of width m."""
    return float(np.sqrt(0.4 * np.log(max(int(width), 2))))


def active_probability(threshold):
    """P(Z > b) for Z ~ N(0, 1)."""
    return float(ndtr(-threshold))


def shifted_relu_second_moment(threshold):
    """E[max(Z - b, 0)^2] for Z ~ N(0, 1)."""
    b = float(threshold)
    return (1 + b * b) * ndtr(-b) - b * np.exp(-0.5 * b * b) / _SQRT_2PI


def gaussian_weights(rng, shape, std, dtype):
    """Normal weights with standard deviation `std`, drawn in `dtype`."""
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.float64
    W = rng.standard_normal(shape, dtype=draw_dtype)
    W *= std
    return W


def first_layer(rng, X_sample, width, dtype):
    """Weights and biases giving each unit zero-mean, unit-variance
    pre-activations on `X_sample` (dense or CSR rows of the training data)."""
    n_features = X_sample.shape[1]
    W = gaussian_weights(rng, (n_features, width), 1.0 / np.sqrt(max(n_features, 1)), dtype)
    Z = np.asarray(X_sample @ W, dtype=np.float64)
    mean = Z.mean(axis=0)
    std = Z.std(axis=0)
    # A unit that sees constant input (e.g. all-zero features) keeps its scale.
    std[std < 1e-12] = 1.0
    W /= std.astype(dtype)
    return W, (-mean / std).astype(dtype)


def hidden_layer(rng, fan_in, width, threshold_in, dtype):
    """Weights whose outputs have unit variance when inputs are shifted-ReLU
    outputs of unit-scale pre-activations with threshold `threshold_in`."""
    std = 1.0 / np.sqrt(fan_in * shifted_relu_second_moment(threshold_in))
    return gaussian_weights(rng, (fan_in, width), std, dtype), np.zeros(width, dtype=dtype)
