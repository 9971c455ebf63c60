"""Input checks shared by the linear-algebra entry points.

Each returns an array the kernels accept as is (dtype, contiguity, index
types) or raises a ValueError/TypeError that names the argument and says
what was expected.
"""

import numbers

import numpy as np
import scipy.sparse as sp

FLOAT_DTYPES = (np.float32, np.float64)


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or value. Both a ValueError and a
    TypeError, as scikit-learn's parameter errors are, so that callers
    catching either see it."""


def _is_numeric(dtype):
    return np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating)


def check_float_matrix(A, name, dtype=None, order="C", allow_f_contiguous=False):
    """A 2-D float array; `dtype` None keeps float32/float64 and casts
    other numbers to float64. With `allow_f_contiguous` an F-ordered array
    is returned as is (callers then use its transpose)."""
    if sp.issparse(A):
        raise TypeError(f"{name} must be a dense array, got a sparse {type(A).__name__}")
    A = np.asarray(A)
    if A.dtype == object or not _is_numeric(A.dtype) and A.dtype != np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {A.dtype}")
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got an array of shape {A.shape}")
    if dtype is None:
        dtype = A.dtype if A.dtype in FLOAT_DTYPES else np.float64
    if allow_f_contiguous and A.dtype == dtype and A.flags.f_contiguous and not A.flags.c_contiguous:
        return A
    return np.asarray(A, dtype=dtype, order=order)


def check_operand(H, name, dtype, n_cols):
    """Dense C-contiguous or CSR matrix with `n_cols` columns, converted to `dtype`, values finite."""
    if sp.issparse(H):
        if H.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {H.shape}")
        if not _is_numeric(H.dtype) and H.dtype != np.bool_:
            raise TypeError(f"{name} must hold real numbers, got dtype {H.dtype}")
        if H.format != "csr" or H.dtype != dtype:
            H = sp.csr_matrix(H, dtype=dtype)
        if H.shape[1] != n_cols:
            raise ValueError(
                f"{name} must have {n_cols} columns to match W, got shape {H.shape}")
        if not np.all(np.isfinite(H.data)):
            raise ValueError(f"{name} contains NaN or infinity")
        return H
    H = check_float_matrix(H, name, dtype=dtype)
    if H.shape[1] != n_cols:
        raise ValueError(f"{name} must have {n_cols} columns to match W, got shape {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{name} contains NaN or infinity")
    return H


def check_vector(v, name, length, dtype):
    """A scalar broadcast to `length`, or a 1-D array of that length."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        # A Python or NumPy real: broadcast without the array checks.
        v = np.full(length, v, dtype=dtype)
    else:
        v = np.asarray(v)
        if v.dtype == object or not _is_numeric(v.dtype):
            raise TypeError(f"{name} must be a real scalar or a 1-D array, got dtype {v.dtype}")
        if v.ndim == 0:
            v = np.full(length, v, dtype=dtype)
        if v.shape != (length,):
            raise ValueError(
                f"{name} must be a scalar or have shape ({length},), got shape {v.shape}")
        v = np.ascontiguousarray(v, dtype=dtype)
    if np.isnan(v).any():
        raise ValueError(f"{name} contains NaN")
    return v


def check_index(index, size, name="index"):
    """Integer positions (negative ones count from the end) or a boolean
    mask over an axis of length `size`, as int64 positions."""
    index = np.asarray(index)
    if index.dtype == np.bool_:
        if index.shape != (size,):
            raise ValueError(f"{name} as a boolean mask must have shape ({size},), got {index.shape}")
        return np.flatnonzero(index).astype(np.int64)
    if index.ndim != 1 or not (np.issubdtype(index.dtype, np.integer) or index.size == 0):
        raise TypeError(f"{name} must be a 1-D array of integers or a boolean mask, got "
                        f"shape {index.shape} and dtype {index.dtype}")
    index = index.astype(np.int64)
    if index.size and (index.min() < -size or index.max() >= size):
        raise ValueError(f"{name} must hold positions in [-{size}, {size}), got values in "
                         f"[{index.min()}, {index.max()}]")
    return np.ascontiguousarray(np.where(index < 0, index + size, index))


def check_scalar(value, name):
    """A finite real number as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def check_bool(value, name):
    """A Python or NumPy bool, else InvalidParameterError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be a bool, got {value!r}")
