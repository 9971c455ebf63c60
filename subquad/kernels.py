"""Exact dot-product kernels and their Taylor coefficients (DESIGN §6).

The arc-cosine kernels (Cho and Saul) and the ReLU neural tangent kernel are
functions of the cosine ``t = <x, y> / (‖x‖ ‖y‖)`` scaled by the norms. Their
power series in ``t`` have non-negative coefficients, which is what lets the
sketches of ``subquad.kernel_approximation`` draw degrees with probability
proportional to them. A zero row has cosine 0 with everything.
"""

import numbers

import numpy as np
from sklearn.metrics.pairwise import check_pairwise_arrays
from sklearn.utils.extmath import row_norms, safe_sparse_dot

__all__ = [
    "polynomial_kernel",
    "arccos_kernel",
    "ntk_kernel",
    "arccos_taylor_coefficients",
    "ntk_taylor_coefficients",
]


def _check_order(order):
    if order not in (0, 1) or isinstance(order, bool):
        raise ValueError(f"order must be 0 or 1, got {order!r}")
    return int(order)


def _check_int(value, name, low):
    """`value` as int: TypeError if it is not an integer, ValueError below `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def _cosine_and_norms(X, Y):
    """Cosines (0 where a norm vanishes) and the two norm vectors."""
    X, Y = check_pairwise_arrays(X, Y, dtype=np.float64)
    gram = np.asarray(safe_sparse_dot(X, Y.T, dense_output=True), dtype=np.float64)
    nx = np.sqrt(row_norms(X, squared=True))
    ny = np.sqrt(row_norms(Y, squared=True))
    denom = np.outer(nx, ny)
    cosine = np.divide(gram, denom, out=np.zeros_like(gram), where=denom > 0)
    return np.clip(cosine, -1.0, 1.0), nx, ny


def _output_dtype(X, Y):
    """float32 if every input is float32 (the kernels compute in float64)."""
    inputs = [X] if Y is None else [X, Y]
    dtypes = [A.dtype if hasattr(A, "dtype") else np.asarray(A).dtype for A in inputs]
    return np.float32 if all(d == np.float32 for d in dtypes) else np.float64


def kappa0(t):
    """Arc-cosine function of order 0, ``1 − arccos(t)/π``."""
    return 1.0 - np.arccos(t) / np.pi


def kappa1(t):
    """Arc-cosine function of order 1, ``(sqrt(1 − t²) + t (π − arccos t)) / π``."""
    t = np.asarray(t, dtype=np.float64)
    return (np.sqrt(np.maximum(0.0, 1.0 - t * t)) + t * (np.pi - np.arccos(t))) / np.pi


def ntk_of_cosine(t, n_layers):
    """ReLU NTK of unit vectors with cosine `t`: ``Σ⁰ = t``, ``Σʰ = κ1(Σʰ⁻¹)``,
    ``Σ̇ʰ = κ0(Σʰ⁻¹)``, ``Θʰ = Θʰ⁻¹ Σ̇ʰ + Σʰ``."""
    sigma = np.asarray(t, dtype=np.float64)
    theta = sigma.copy()
    for _ in range(n_layers):
        sigma, derivative = kappa1(sigma), kappa0(sigma)
        theta = theta * derivative + sigma
    return theta


def polynomial_kernel(X, Y=None, degree=2, gamma=1.0, coef0=0.0):
    """Polynomial kernel ``(gamma <x, y> + coef0)^degree``.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples_X, n_features)
    Y : {array-like, sparse matrix} of shape (n_samples_Y, n_features), default=None
        ``None`` means ``Y = X``.
    degree : int, default=2
    gamma : float, default=1.0
    coef0 : float, default=0.0

    Returns
    -------
    ndarray of shape (n_samples_X, n_samples_Y)
        float32 if the inputs are float32, float64 otherwise.
    """
    dtype = _output_dtype(X, Y)
    X, Y = check_pairwise_arrays(X, Y, dtype=np.float64)
    gram = np.asarray(safe_sparse_dot(X, Y.T, dense_output=True), dtype=np.float64)
    return ((gamma * gram + coef0) ** degree).astype(dtype, copy=False)


def arccos_kernel(X, Y=None, order=0):
    """Arc-cosine kernel of Cho and Saul, ``‖x‖ⁿ ‖y‖ⁿ κₙ(t)``.

    ``κ0(t) = 1 − arccos(t)/π`` and ``κ1(t) = (sqrt(1 − t²) + t (π − arccos
    t)) / π`` with ``t`` the cosine of ``x`` and ``y``; these are the
    kernels of an infinitely wide layer of step (order 0) or ReLU (order 1)
    units with standard normal weights, up to a factor 2.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples_X, n_features)
    Y : {array-like, sparse matrix} of shape (n_samples_Y, n_features), default=None
        ``None`` means ``Y = X``.
    order : {0, 1}, default=0

    Returns
    -------
    ndarray of shape (n_samples_X, n_samples_Y)
    """
    order = _check_order(order)
    dtype = _output_dtype(X, Y)
    cosine, nx, ny = _cosine_and_norms(X, Y)
    if order == 0:
        return kappa0(cosine).astype(dtype, copy=False)
    return (np.outer(nx, ny) * kappa1(cosine)).astype(dtype, copy=False)


def ntk_kernel(X, Y=None, n_layers=1):
    """Neural tangent kernel of a fully connected ReLU network.

    ``Θ(x, y) = ‖x‖ ‖y‖ Θ_L(t)`` where ``Θ_L`` follows the recursion of
    :func:`arccos_kernel`'s functions over `n_layers` hidden layers (Jacot
    et al.; Arora et al., normalisation ``Θ_L(1) = L + 1``).

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples_X, n_features)
    Y : {array-like, sparse matrix} of shape (n_samples_Y, n_features), default=None
        ``None`` means ``Y = X``.
    n_layers : int, default=1
        Number of hidden layers ``L >= 0`` (0 gives the linear kernel).

    Returns
    -------
    ndarray of shape (n_samples_X, n_samples_Y)
    """
    n_layers = _check_int(n_layers, "n_layers", 0)
    dtype = _output_dtype(X, Y)
    cosine, nx, ny = _cosine_and_norms(X, Y)
    return (np.outer(nx, ny) * ntk_of_cosine(cosine, n_layers)).astype(dtype, copy=False)


def _series_product(a, b):
    return np.convolve(a, b)[: len(a)]


def _kappa_series_at(order, p0, max_degree):
    """Taylor coefficients of ``u ↦ κ_order(p0 + u)`` up to ``u^max_degree``.

    ``κ0' = 1 / (π sqrt(1 − t²))`` and ``κ1' = κ0``; the series of
    ``g(u)^{-1/2}`` with ``g(u) = 1 − (p0 + u)² = (1 − p0²) − 2 p0 u − u²``
    follows from the recurrence for powers of a power series (J. C. P.
    Miller), with no truncation of an inner series, so it is exact up to
    rounding for any ``|p0| < 1``.
    """
    g0, g1, g2 = 1.0 - p0 * p0, -2.0 * p0, -1.0
    alpha = -0.5
    f = np.zeros(max_degree + 1)
    f[0] = g0 ** alpha
    for n in range(1, max_degree + 1):
        acc = ((alpha + 1.0) - n) * g1 * f[n - 1]
        if n >= 2:
            acc += (2.0 * (alpha + 1.0) - n) * g2 * f[n - 2]
        f[n] = acc / (n * g0)
    k0 = np.empty(max_degree + 1)
    k0[0] = kappa0(p0)
    k0[1:] = f[:-1] / (np.pi * np.arange(1, max_degree + 1))
    if order == 0:
        return k0
    k1 = np.empty(max_degree + 1)
    k1[0] = kappa1(p0)
    k1[1:] = k0[:-1] / np.arange(1, max_degree + 1)
    return k1


def _compose(outer, inner):
    """Coefficients of ``outer(inner(t))`` when ``inner`` has no constant term
    (Horner's scheme; truncation at the common length is then exact)."""
    result = np.zeros_like(inner)
    result[0] = outer[-1]
    for c in outer[-2::-1]:
        result = _series_product(result, inner)
        result[0] += c
    return result


def arccos_taylor_coefficients(order, max_degree):
    """Coefficients ``c_j`` of ``κ_order(t) = Σ_j c_j t^j`` for ``j <= max_degree``.

    ``κ0(t) = 1/2 + (1/π) Σ_j a_j t^{2j+1} / (2j+1)`` and ``κ1(t) = 1/π +
    t/2 + (1/π) Σ_j a_j t^{2j+2} / ((2j+1)(2j+2))`` with ``a_j =
    C(2j, j) / 4^j``; all coefficients are non-negative and sum to 1.

    Parameters
    ----------
    order : {0, 1}
    max_degree : int

    Returns
    -------
    ndarray of shape (max_degree + 1,)
    """
    return _kappa_series_at(_check_order(order), 0.0, _check_int(max_degree, "max_degree", 0))


def ntk_taylor_coefficients(n_layers, max_degree):
    """Coefficients ``c_j`` of the ReLU NTK ``Θ_L(t) = Σ_j c_j t^j``, ``j <= max_degree``.

    Computed by composing the series of ``κ0`` and ``κ1`` along the NTK
    recursion; each composition re-expands ``κ`` around the constant term of
    its argument, so no inner series is truncated. The coefficients are
    non-negative, sum to ``L + 1`` and decay like ``j^{-3/2}``.

    Parameters
    ----------
    n_layers : int
    max_degree : int

    Returns
    -------
    ndarray of shape (max_degree + 1,)
    """
    n_layers = _check_int(n_layers, "n_layers", 0)
    max_degree = _check_int(max_degree, "max_degree", 0)
    sigma = np.zeros(max_degree + 1)
    if max_degree >= 1:
        sigma[1] = 1.0
    theta = sigma.copy()
    for _ in range(n_layers):
        p0 = sigma[0]
        shifted = sigma.copy()
        shifted[0] = 0.0
        derivative = _compose(_kappa_series_at(0, p0, max_degree), shifted)
        sigma = _compose(_kappa_series_at(1, p0, max_degree), shifted)
        theta = _series_product(theta, derivative) + sigma
    return theta
