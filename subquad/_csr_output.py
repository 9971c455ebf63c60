"""The arrays of a CSR output assembled from per-row entry counts."""

import numpy as np

from . import _output_pool


def row_pointers(row_counts, owner, remedy):
    """``indptr`` (int64) of a CSR matrix whose rows hold `row_counts` entries.

    Raises a ValueError naming `owner` and suggesting `remedy` when the total
    exceeds what 32-bit column indices and scipy's CSR can hold.
    """
    indptr = np.zeros(len(row_counts) + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    total = int(indptr[-1])
    if total > np.iinfo(np.int32).max:
        raise ValueError(
            f"{owner}: the output has {total} nonzeros, more than a CSR matrix with "
            f"32-bit indices holds; {remedy}")
    return indptr


def entry_arrays(total, dtype):
    """Uninitialised ``(data, indices)`` arrays for `total` entries, values
    of `dtype` and int32 columns, large ones from the output pool."""
    return _output_pool.empty(total, dtype), _output_pool.empty(total, np.int32)
