"""Wall-clock timing shared by the benchmark scripts."""

import time

import numpy as np


def best_times(fns, repeats):
    """(best wall time, last result) of each callable. Repetitions are
    interleaved, so that a slow spell of a shared machine hits all alike."""
    best, results = [np.inf] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, results))


def best_time(fn, repeats):
    """(best wall time, last result) of one callable."""
    return best_times([fn], repeats)[0]
