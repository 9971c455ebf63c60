"""Threshold schedule and sparsity-aware initialisation (DESIGN.md §1).

With pre-activations z ~ N(0, 1) and the shifted ReLU max(z - b, 0), a unit
is active with probability P(Z > b) and its output has second moment
E[(Z - b)_+^2] = (1 + b^2) P(Z > b) - b phi(b). Weights are scaled by that
moment so pre-activations stay at unit scale from layer to layer; He's
scale would make the signal vanish behind the threshold after one layer.
"""

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from ..linalg import sparse_matmul, threshold_matmul

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
    W = rng.standard_normal(shape, dtype=dtype)
    W *= std
    return W


def data_scaled_layer(rng, H_sample, width, std, dtype, threshold=None, chunk=64):
    """Gaussian weights (standard deviation `std`) and biases rescaled so
    every unit's pre-activation has zero mean and unit variance on
    `H_sample`, a sample of this layer's inputs (dense or CSR).

    The sparsity-aware `std` is right for homogeneous inputs; samples whose
    norms differ make the shifted ReLU's output heavier-tailed layer after
    layer, which measuring on the data corrects. Products are taken `chunk`
    rows at a time. With a `threshold`, also returns the layer's
    shifted-ReLU outputs on the sample as CSR (the next layer's
    `H_sample`). Returns (W, c, outputs).
    """
    W = gaussian_weights(rng, (H_sample.shape[1], width), std, dtype)
    n = H_sample.shape[0]
    total = np.zeros(width)
    total_sq = np.zeros(width)
    for begin in range(0, n, chunk):
        Z = sparse_matmul(H_sample[begin:begin + chunk], W).astype(np.float64)
        total += Z.sum(axis=0)
        total_sq += np.einsum("ij,ij->j", Z, Z)
    mean = total / n
    scale = np.sqrt(np.maximum(total_sq / n - mean * mean, 0))
    # A unit that sees constant input (e.g. all-zero features) keeps its draw.
    scale[scale < 1e-6] = 1.0
    W /= scale.astype(dtype)
    c = (-mean / scale).astype(dtype)
    if threshold is None:
        return W, c, None
    shift = c - dtype(threshold)
    outputs = [threshold_matmul(H_sample[begin:begin + chunk], W, 0.0, bias=shift)
               for begin in range(0, n, chunk)]
    return W, c, sp.vstack(outputs, format="csr")


def hidden_std(fan_in, threshold_in):
    """Weight standard deviation giving unit-variance pre-activations from
    shifted-ReLU inputs of unit-scale pre-activations with threshold b."""
    return 1.0 / np.sqrt(fan_in * shifted_relu_second_moment(threshold_in))


def gaussian_layers(rng, n_inputs, widths, thresholds, n_outputs, dtype):
    """The paper's initialisation for inputs on the sphere of radius
    ``sqrt(n_inputs)``: Gaussian weights at the sparsity-aware scale, zero
    biases. Every sample then has standard normal first-layer
    pre-activations, and (the active counts concentrating) nearly so in
    every later layer. Returns (coefs, intercepts)."""
    coefs, intercepts = [], []
    fan_in, std = n_inputs, 1.0 / np.sqrt(max(n_inputs, 1))
    for width, threshold in zip(list(widths) + [n_outputs], list(thresholds) + [None]):
        coefs.append(gaussian_weights(rng, (fan_in, width), std, dtype))
        intercepts.append(np.zeros(width, dtype=dtype))
        if threshold is not None:
            fan_in, std = width, hidden_std(width, threshold)
    return coefs, intercepts
