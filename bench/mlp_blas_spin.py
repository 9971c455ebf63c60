"""Does a sparse fit wake BLAS threads? Whole fits as shipped against the
same fits with BLAS capped at one thread.

    python bench/mlp_blas_spin.py
    python bench/mlp_blas_spin.py --widths 512 --epochs 10 --repeat 7

After a multi-threaded call, OpenBLAS keeps its worker threads spinning for
about 0.1 s. On 2 cores a spinning worker takes a core from the sparse
engine's OpenMP kernels, and an epoch of digits at batch 128 takes about
that long, so one such call per epoch (there was one: the weight norm of
the loss) can slow every step. The sparse engine's own BLAS calls run
single-threaded inside its parallel regions, so a fit inside
``threadpool_limits(1, user_api="blas")`` should take as long as one
without: the ratio column should be about 1.

Two hidden layers of each width, digits (pixels / 16), Adam, batch 128,
``--epochs`` whole epochs (no early stop); time per step is the fit's time
over its steps, initialisation included. The two fits of a repetition
run back to back, in alternating order; the table gives the median and the
best of ``--repeat`` repetitions, the CPU time all threads used per step,
and the share of the machine's CPU time the host took meanwhile. On a
shared machine single fits of a second or less swing by tens of percent
in wall time; a spinning worker shows more steadily as CPU time the capped
fit does not use.
"""

import argparse
import time
import warnings
from contextlib import nullcontext

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from subquad import SparseMLPClassifier, effective_n_threads

from _timing import settle, steal_mark, steal_report, steal_since, timed_call

BATCH = 128


def per_step(X, y, width, epochs, capped):
    """(wall seconds, CPU seconds of all threads) per step of one whole fit."""
    clf = SparseMLPClassifier(hidden_layer_sizes=(width, width), batch_size=BATCH,
                              max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
                              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with threadpool_limits(limits=1, user_api="blas") if capped else nullcontext():
            start_cpu = time.process_time()
            elapsed, _ = timed_call(lambda: clf.fit(X, y))
            cpu = time.process_time() - start_cpu
    steps = clf.n_iter_ * -(-len(X) // BATCH)
    return elapsed / steps, cpu / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    print(f"digits n={len(X)}, batch {BATCH}, {args.epochs} epochs, {effective_n_threads()} "
          f"threads; ms per step, median (best) of {args.repeat}; cpu: CPU time of all "
          f"threads per step, median")
    print(f"{'width':>6} {'shipped':>15} {'BLAS capped':>15} {'shipped/capped':>15} "
          f"{'cpu shipped':>12} {'cpu capped':>11} {'cpu ratio':>10} {'steal':>5}")
    # The first fit of a process pays one-time costs (thread pools, lazy
    # imports, threadpoolctl's library scan): not timed.
    per_step(X, y, args.widths[0], 1, False)
    for width in args.widths:
        runs = {False: [], True: []}
        start = steal_mark()
        for r in range(args.repeat):
            for capped in ((False, True) if r % 2 == 0 else (True, False)):
                settle()
                runs[capped].append(per_step(X, y, width, args.epochs, capped))
        (wall, cpu), (wall_capped, cpu_capped) = (1e3 * np.array(runs[c]).T for c in (False, True))
        print(f"{width:>6} {np.median(wall):>7.2f} ({wall.min():>5.2f}) "
              f"{np.median(wall_capped):>7.2f} ({wall_capped.min():>5.2f}) "
              f"{np.median(wall) / np.median(wall_capped):>15.2f} {np.median(cpu):>12.2f} "
              f"{np.median(cpu_capped):>11.2f} {np.median(cpu) / np.median(cpu_capped):>10.2f} "
              f"{steal_since(start):>5}",
              flush=True)
    print(steal_report())


if __name__ == "__main__":
    main()
