"""Peak memory of a fit at 2 x 16384 in float32, against what it must hold.

    python bench/mlp_memory.py [--width 16384] [--epochs 1]

Reads the process's peak resident memory (VmHWM, Linux) before and after
`fit` and subtracts the weights and the optimizer state (Adam keeps two
arrays per weight). What is left is everything else the fit allocated at
its peak; it is printed next to the size of one dense (batch x width)
float32 buffer, which the sparse engine never forms.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from subquad import SparseMLPClassifier


def rss_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found: this script needs Linux /proc")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = SparseMLPClassifier(hidden_layer_sizes=(args.width, args.width), max_iter=args.epochs,
                              batch_size=args.batch_size, random_state=0)
    baseline = rss_bytes("VmRSS")
    peak_before = rss_bytes("VmHWM")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    elapsed = time.perf_counter() - start
    peak = max(rss_bytes("VmHWM"), peak_before)
    weights = sum(a.nbytes for a in clf.coefs_ + clf.intercepts_)
    state = sum(s.nbytes if isinstance(s, np.ndarray) else sum(a.nbytes for a in s)
                for s in clf._network.states)
    extra = peak - baseline - weights - state
    dense_buffer = args.batch_size * args.width * 4
    gib = 2.0**30
    print(f"fit of 64 -> {args.width} -> {args.width} -> 10, float32, Adam, batch "
          f"{args.batch_size}, {clf.n_iter_} epoch(s) on digits: {elapsed:.1f}s")
    print(f"  peak resident memory added by fit: {(peak - baseline) / gib:.3f} GiB")
    print(f"  weights and biases:                {weights / gib:.3f} GiB")
    print(f"  Adam state (2 arrays per weight):  {state / gib:.3f} GiB")
    print(f"  everything else at the peak:       {extra / 2**20:.1f} MiB "
          f"(one dense batch x width float32 buffer would be {dense_buffer / 2**20:.1f} MiB)")
    if extra < 0:
        # The Adam state starts as untouched zero pages: those no step has
        # written yet are not resident, so the peak can stay below the sum.
        print("  (negative: some zero pages of the Adam state were never written, "
              "so never resident)")


if __name__ == "__main__":
    main()
