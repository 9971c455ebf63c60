"""Lifting inputs onto a sphere, so every sample sees the same activation law.

A random first-layer unit's pre-activation ``<w, x>`` has a spread
proportional to ``||x||``, so behind a threshold b a sample of small norm has
almost no active units, and with none it has no gradient and can never be
fitted (seen on standardised data: Gauss–Newton stalled with about a fifth
of the samples dead in the second layer). The over-parametrisation analysis
assumes unit-norm inputs for this reason. Mapping

    x  ->  sqrt(d + 1) * (x, c) / ||(x, c)||

puts every sample on the sphere of radius sqrt(d + 1), where unit-variance
weights give every sample standard normal pre-activations and the same
expected number of active units. The extra coordinate c keeps the map
one-to-one (x is recovered from the direction), so nothing is lost; c is the
root-mean-square norm of the training rows, which keeps samples of typical
norm at 45 degrees from the pole instead of bunching them near it or near
the equator.
"""

import numpy as np
import scipy.sparse as sp


def _row_squared_norms(X):
    """Squared norm of every row of X (dense or CSR), in float64."""
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def sphere_offset(X):
    """The lift's extra coordinate c for training inputs X: the root mean
    square of the row norms (1 when every row is zero)."""
    squared = X.multiply(X).sum() if sp.issparse(X) else np.einsum("ij,ij->", X, X)
    offset = float(np.sqrt(squared / max(X.shape[0], 1)))
    return offset if offset > 0 and np.isfinite(offset) else 1.0


def lift_to_sphere(X, offset):
    """``sqrt(d + 1) * (x, offset) / ||(x, offset)||`` for every row of X
    (dense or CSR; same dtype, CSR stays CSR with sorted indices)."""
    n, d = X.shape
    dtype = X.dtype
    scale = (np.sqrt(d + 1) / np.sqrt(_row_squared_norms(X) + offset * offset)).astype(dtype)
    if sp.issparse(X):
        lift = sp.csr_matrix(np.full((n, 1), offset, dtype=dtype))
        lifted = sp.diags(scale) @ sp.hstack([X, lift], format="csr")
        lifted.sort_indices()
        return lifted
    lifted = np.empty((n, d + 1), dtype=dtype)
    np.multiply(X, scale[:, None], out=lifted[:, :d])
    lifted[:, d] = dtype.type(offset) * scale
    return lifted
