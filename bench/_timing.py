"""Wall-clock timing shared by the benchmark scripts."""

import time

import numpy as np

# After a call, OpenBLAS keeps its worker threads spinning for 2^28 cycles
# (about 0.1 s here) before they sleep. On 2 cores a spinning worker takes
# one core from whatever runs next: a subquad kernel timed straight after a
# NumPy BLAS call ran up to 1.7x slower. Each timed call therefore starts
# after this pause, so that no callable pays for the thread pool of the one
# timed before it; `best_time_after` measures that cost on purpose.
SETTLE_SECONDS = 0.25


def best_times(fns, repeats):
    """(best wall time, last result) of each callable. Repetitions are
    interleaved, so that a slow spell of a shared machine hits all alike,
    and each call starts after `SETTLE_SECONDS` of quiet."""
    best, results = [np.inf] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, results))


def best_time(fn, repeats):
    """(best wall time, last result) of one callable."""
    return best_times([fn], repeats)[0]


def best_time_after(prelude, fn, repeats):
    """Best wall time of `fn` started straight after `prelude` returns, with
    no pause: what a caller alternating the two sees."""
    best = np.inf
    for _ in range(repeats):
        time.sleep(SETTLE_SECONDS)
        prelude()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
