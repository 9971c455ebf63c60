"""``subquad-demo`` / ``python -m subquad``: show what this installation does."""

import argparse
import time

import numpy as np

from . import _cython_blas, show_config


def _demo_kernels():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        A = rng.standard_normal((512, 384)).astype(dtype)
        B = rng.standard_normal((384, 256)).astype(dtype)
        C = np.zeros((512, 256), dtype=dtype)
        start = time.perf_counter()
        _cython_blas.gemm(False, False, 1.0, A, B, 0.0, C)
        elapsed = time.perf_counter() - start
        error = np.max(np.abs(C - A @ B)) / np.max(np.abs(A @ B))
        print(
            f"row-major {np.dtype(dtype).name} gemm 512x384 @ 384x256 through "
            f"scipy's BLAS: {elapsed * 1e3:.2f} ms, max relative error vs NumPy {error:.1e}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="subquad-demo", description=__doc__)
    parser.parse_args(argv)
    show_config()
    print()
    _demo_kernels()


if __name__ == "__main__":
    main()
