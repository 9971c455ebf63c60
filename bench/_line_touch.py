"""The least memory work a sparse kernel can do, as a floor for its timing:
touch each 64-byte line of a float32 array that the kernel has to touch,
one float per line, and nothing else.

Two passes: `touch` reads and writes back the lines an in-place update
writes (`lowrank_update_`), `read_rows` reads every line of the rows a
product has to read (the rows of W that `threshold_matmul`'s H uses).
C loops (compiled here, at first use, with the C compiler Python was built
with and OpenMP) walk the lines in address order, threads taking chunks of
16 rows. It is a measuring tool, not part of subquad: where no compiler is
found, `LineTouch.load()` returns None and the caller prints that the
floor was not measured.
"""

import ctypes
import hashlib
import os
import shlex
import subprocess
import sysconfig
import tempfile

import numpy as np

_SOURCE = r"""
#include <stdint.h>
void touch_lines(float *a, const int64_t *line_offsets, const int64_t *row_ptr,
                 int64_t n_rows, int n_threads) {
    #pragma omp parallel for schedule(dynamic, 16) num_threads(n_threads)
    for (int64_t i = 0; i < n_rows; ++i)
        for (int64_t p = row_ptr[i]; p < row_ptr[i + 1]; ++p)
            a[line_offsets[p]] += 1.0f;
}

double read_rows(const float *a, const int64_t *rows, int64_t n_rows, int64_t row_floats,
                 int n_threads) {
    double total = 0.0;
    #pragma omp parallel for schedule(dynamic, 16) reduction(+:total) num_threads(n_threads)
    for (int64_t i = 0; i < n_rows; ++i) {
        const float *row = a + rows[i] * row_floats;
        float sum = 0.0f;
        for (int64_t j = 0; j < row_floats; j += 16)
            sum += row[j];
        total += sum;
    }
    return total;
}
"""

_LINE_FLOATS = 64 // 4


class LineTouch:
    """The floor passes: `touch(a, LineTouch.lines(pattern), n_threads)`
    reads and writes back the lines of float32 `a` that the CSR `pattern`
    (same shape) has entries on; `read_rows(a, rows, n_threads)` reads every
    line of the listed rows of `a`."""

    def __init__(self, library):
        self._touch = library.touch_lines
        self._touch.restype = None
        self._touch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_int64, ctypes.c_int]
        self._read_rows = library.read_rows
        # The sum is returned so that the compiler keeps the loads.
        self._read_rows.restype = ctypes.c_double
        self._read_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                    ctypes.c_int64, ctypes.c_int]

    @classmethod
    def load(cls):
        """Compile (once per source and compiler) and load, or None."""
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        tag = hashlib.sha1((_SOURCE + " ".join(compiler)).encode()).hexdigest()[:12]
        folder = os.path.join(tempfile.gettempdir(), "subquad-bench")
        library = os.path.join(folder, f"line_touch_{tag}.so")
        if not os.path.exists(library):
            os.makedirs(folder, exist_ok=True)
            source = os.path.join(folder, f"line_touch_{tag}.c")
            with open(source, "w") as f:
                f.write(_SOURCE)
            try:
                subprocess.run(compiler + ["-O2", "-fopenmp", "-shared", "-fPIC", source,
                                           "-o", library], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError):
                return None
        return cls(ctypes.CDLL(library))

    @staticmethod
    def lines(pattern):
        """(offsets of the first float of each line `pattern` touches, in
        address order; where each row's lines start), for `touch`."""
        n_rows, n_cols = pattern.shape
        _check_whole_lines(n_cols)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(pattern.indptr))
        line_ids = np.unique(rows * (n_cols // _LINE_FLOATS) + pattern.indices // _LINE_FLOATS)
        row_ptr = np.searchsorted(line_ids // (n_cols // _LINE_FLOATS),
                                  np.arange(n_rows + 1)).astype(np.int64)
        return line_ids * _LINE_FLOATS, row_ptr

    def touch(self, a, lines, n_threads):
        """One pass over the `lines` of the C-contiguous float32 `a`, on
        `n_threads` threads."""
        _check_lined(a)
        offsets, row_ptr = lines
        self._touch(a.ctypes.data, offsets.ctypes.data, row_ptr.ctypes.data,
                    row_ptr.size - 1, n_threads)

    def read_rows(self, a, rows, n_threads):
        """Read one float of each line of the rows `rows` (int64, increasing)
        of the C-contiguous float32 matrix `a`, on `n_threads` threads."""
        _check_lined(a)
        if rows.dtype != np.int64 or not rows.flags.c_contiguous:
            raise TypeError("rows must be a contiguous int64 array")
        return self._read_rows(a.ctypes.data, rows.ctypes.data, rows.size, a.shape[1],
                               n_threads)


def _check_whole_lines(n_cols):
    if n_cols % _LINE_FLOATS:
        raise ValueError("rows must be whole 64-byte lines")


def _check_lined(a):
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError("a must be a C-contiguous float32 array")
    _check_whole_lines(a.shape[-1])
