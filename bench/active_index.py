"""ActiveNeuronIndex: 'tree' vs 'brute' vs 'auto' vs NumPy, side by side.

    python bench/active_index.py            # n_neurons = 2**20, 1024 queries
    python bench/active_index.py --quick    # n_neurons = 2**16, 256 queries

For each dim, neurons and queries are standard normal (float32) and the
threshold is the 99% quantile of sampled inner products, so about 1% of
the neurons are active per query. Columns:

* tree / brute / auto: seconds for ``query`` on all queries (best of
  ``--repeat``), with the default ``keep_workspace=True``: each index keeps
  the buffers its queries stage their output in between calls; auto also
  names what it chose. Above dim 16 the tree evaluates nearly every neuron,
  so it is timed on ``--tree-sample`` queries and scaled up (marked ``*``).
* unsorted: the tree's ``query(..., sort_indices=False)``: each row's
  columns left in tree order, without the per-query sort.
* fresh: the tree with ``keep_workspace=False`` (buffers freed after each
  call, so each call faults its staging memory in again).
* count: seconds for the tree's ``count`` on the same queries: the walk
  alone, without staging, sorting and writing the output.
* numpy: ``X @ W.T`` then ``np.nonzero`` and the values, in chunks of 128
  queries (the full product would be n_queries x n_neurons floats).
* brute/tree: speed-up of the tree (target >= 5 at dim <= 8); "unsorted":
  the same for the unsorted tree query (no target: brute's rows come
  sorted); "fresh": the same with both indexes freeing their buffers after
  each call;
  auto/best: auto's time over the better of tree and brute (target <= 1.2);
  numpy/brute: speed-up of the fused engine over NumPy (target >= 1.5).
* steal: share of the machine's CPU time the host gave to other guests
  while this dim's calls were timed; a large one voids the row.

Each call's result replaces the one before it, so large outputs reuse the
memory of dropped ones (`subquad.set_output_pool_limit`), as in a loop
that queries every step; ``--no-output-pool`` times every call on fresh
output memory instead.
"""

import argparse
import time

import numpy as np

import subquad
from subquad import ActiveNeuronIndex, effective_n_threads

from _timing import (add_cold_memory_option, best_time, best_times, memory_warming, steal_mark,
                     steal_report, steal_since)

NUMPY_CHUNK = 128


def numpy_query(X, W, threshold):
    """Reference: dense product, then the positions and values above b."""
    parts = []
    for i in range(0, X.shape[0], NUMPY_CHUNK):
        Z = X[i:i + NUMPY_CHUNK] @ W.T
        rows, cols = np.nonzero(Z > threshold)
        parts.append((rows + i, cols, Z[rows, cols] - threshold))
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2**16 neurons, 256 queries")
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16, 32, 128])
    parser.add_argument("--active", type=float, default=0.01, help="target active fraction")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--tree-sample", type=int, default=128,
                        help="queries the tree is timed on above dim 16")
    parser.add_argument("--no-output-pool", action="store_true",
                        help="do not recycle the memory of dropped outputs")
    add_cold_memory_option(parser)
    args = parser.parse_args()
    if args.no_output_pool:
        subquad.set_output_pool_limit(0)
    pool = subquad.get_output_pool_limit()
    n_neurons, n_queries = (1 << 16, 256) if args.quick else (1 << 20, 1024)
    rng = np.random.default_rng(0)
    print(f"n_neurons={n_neurons} n_queries={n_queries} float32 "
          f"threads={effective_n_threads()} target active={args.active:.1%}; {memory_warming()}; "
          f"output pool {f'{pool / 2**20:g} MiB' if pool else 'off'}")
    header = (f"{'dim':>4} {'active':>7} {'build':>6} {'tree':>7} {'unsorted':>8} {'fresh':>7} "
              f"{'count':>7} {'brute':>7} {'auto':>7} {'chose':>5} {'numpy':>7} {'eval%':>6} | "
              f"{'brute/tree':>10} {'unsorted':>8} {'fresh':>5} {'auto/best':>9} "
              f"{'numpy/brute':>11} {'steal':>5}")
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        W = rng.standard_normal((n_neurons, dim)).astype(np.float32)
        X = rng.standard_normal((n_queries, dim)).astype(np.float32)
        # Many queries, fewer neurons: the active fraction varies with |x|.
        sample = X[:256] @ W[:8192].T
        threshold = float(np.quantile(sample, 1 - args.active))

        start = time.perf_counter()
        tree = ActiveNeuronIndex(W, algorithm="tree")
        build = time.perf_counter() - start
        brute = ActiveNeuronIndex(W, algorithm="brute")
        auto = ActiveNeuronIndex(W, algorithm="auto")
        tree_fresh = ActiveNeuronIndex(W, algorithm="tree", keep_workspace=False)
        brute_fresh = ActiveNeuronIndex(W, algorithm="brute", keep_workspace=False)

        X_tree = X if dim <= 16 else X[:args.tree_sample]
        dim_start = steal_mark()
        # Repetitions interleaved, so that a slow spell of the machine hits
        # all alike.
        ((t_tree, A_tree), (t_unsorted, A_unsorted), (t_brute, A_brute), (t_auto, _),
         (t_count, _), (t_tree_fresh, _), (t_brute_fresh, _)) = best_times([
            lambda: tree.query(X_tree, threshold),
            lambda: tree.query(X_tree, threshold, sort_indices=False),
            lambda: brute.query(X, threshold),
            lambda: auto.query(X, threshold),
            lambda: tree.count(X_tree, threshold),
            lambda: tree_fresh.query(X_tree, threshold),
            lambda: brute_fresh.query(X, threshold)], args.repeat)
        t_tree *= n_queries / X_tree.shape[0]
        t_unsorted *= n_queries / X_tree.shape[0]
        t_count *= n_queries / X_tree.shape[0]
        t_tree_fresh *= n_queries / X_tree.shape[0]
        evaluated = tree.last_query_stats_["evaluated_fraction"]
        t_numpy, _ = best_time(lambda: numpy_query(X, W, threshold), args.repeat)
        # Same computation up to rounding: the active sets can differ only
        # for values within rounding of the threshold.
        mismatch = abs(A_tree.nnz - A_brute[:X_tree.shape[0]].nnz)
        note = f"  (nnz differs by {mismatch})" if mismatch else ""
        if (A_unsorted.sorted_indices() != A_tree).nnz:
            note += "  (UNSORTED RESULT DIFFERS)"
        active = A_brute.nnz / (n_queries * n_neurons)
        mark = "*" if X_tree.shape[0] < n_queries else " "
        print(f"{dim:>4} {active:>7.2%} {build:>6.2f} {t_tree:>6.3f}{mark} "
              f"{t_unsorted:>7.3f}{mark} {t_tree_fresh:>6.3f}{mark} {t_count:>6.3f}{mark} "
              f"{t_brute:>7.3f} {t_auto:>7.3f} "
              f"{auto.algorithm_:>5} {t_numpy:>7.3f} {evaluated:>6.1%} | {t_brute / t_tree:>10.2f} "
              f"{t_brute / t_unsorted:>8.2f} {t_brute_fresh / t_tree_fresh:>5.2f} "
              f"{t_auto / min(t_tree, t_brute):>9.2f} {t_numpy / t_brute:>11.2f} "
              f"{steal_since(dim_start):>5}{note}")
        print(f"     auto: {auto.algorithm_reason_}")
    print(steal_report())


if __name__ == "__main__":
    main()
