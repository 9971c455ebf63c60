"""Fit the cost model behind ActiveNeuronIndex(algorithm='auto').

    taskset -c 0 python bench/active_index_cost_model.py

Times 'tree' and 'brute' single-threaded on 2**19 standard normal float32
neurons and 256 queries, over dims 2-16, leaves of 64 and 128 and
thresholds giving ~1%, ~3% and ~50% active neurons (the last pins down
the cost per active neuron), records the tree's counters
(nodes tested, neurons evaluated, active neurons per query) and fits, by
non-negative least squares, nanoseconds per query:

    tree  = node * nodes + (eval + per_dim * dim) * evaluated + active * active
            + spill * max(0, active - SORT_IN_CACHE)
    brute = (neuron + per_dim * dim) * n_neurons + active * active

(the tree sorts each query's active neurons in a scratch buffer that
leaves the cache beyond SORT_IN_CACHE entries).

The constants in subquad/index/_active_neuron_index.py come from this fit;
the last lines show each configuration's predicted over measured time.
"""

import numpy as np
from scipy.optimize import nnls

from subquad import ActiveNeuronIndex
from subquad.index._active_neuron_index import SORT_IN_CACHE

from _timing import best_time

N_NEURONS, N_QUERIES, REPEATS = 1 << 19, 256, 5


def main():
    tree_rows, tree_ns, brute_rows, brute_ns = [], [], [], []
    for dim in (2, 4, 6, 8, 12, 16):
        rng = np.random.default_rng(dim)
        W = rng.standard_normal((N_NEURONS, dim)).astype(np.float32)
        X = rng.standard_normal((N_QUERIES, dim)).astype(np.float32)
        brute = ActiveNeuronIndex(W, algorithm="brute", n_threads=1)
        for quantile in (0.99, 0.97, 0.5):
            b = float(np.quantile((X[:16] @ W[:65536].T).ravel(), quantile))
            t_brute, _ = best_time(lambda: brute.query(X, b), REPEATS)
            for leaf_size in (64, 128):
                tree = ActiveNeuronIndex(W, algorithm="tree", leaf_size=leaf_size, n_threads=1)
                t_tree, A = best_time(lambda: tree.query(X, b), REPEATS)
                t_unsorted, _ = best_time(lambda: tree.query(X, b, sort_indices=False),
                                          REPEATS)
                stats = tree.last_query_stats_
                nodes = stats["nodes_visited"] / N_QUERIES
                evaluated = stats["evaluated_fraction"] * N_NEURONS
                active = A.nnz / N_QUERIES
                walk = [nodes, evaluated, evaluated * dim]
                tree_rows.append(walk + [active, max(0.0, active - SORT_IN_CACHE), 0.0])
                tree_rows.append(walk + [0.0, 0.0, active])
                tree_ns += [t_tree / N_QUERIES * 1e9, t_unsorted / N_QUERIES * 1e9]
                brute_rows.append([N_NEURONS, N_NEURONS * dim, active])
                brute_ns.append(t_brute / N_QUERIES * 1e9)
                print(f"dim {dim:>2} active {active / N_NEURONS:5.2%} leaf {leaf_size:>3}: "
                      f"tree {tree_ns[-2] / 1e3:7.0f} us ({tree_ns[-1] / 1e3:.0f} unsorted), "
                      f"brute {brute_ns[-1] / 1e3:7.0f} us per query; {nodes:.0f} nodes, "
                      f"{evaluated:.0f} evaluated", flush=True)
    # Relative errors weigh every configuration alike (times span 100x).
    tree_rows, tree_ns = np.array(tree_rows), np.array(tree_ns)
    brute_rows, brute_ns = np.array(brute_rows), np.array(brute_ns)
    tree_fit = nnls(tree_rows / tree_ns[:, None], np.ones(len(tree_ns)))[0]
    brute_fit = nnls(brute_rows / brute_ns[:, None], np.ones(len(brute_ns)))[0]
    print("tree ns: node %.1f, evaluation %.2f + %.3f per dim, active %.1f, spilled %.1f, "
          "active unsorted %.1f" % tuple(tree_fit))
    print("brute ns: neuron %.2f + %.4f per dim, active %.1f" % tuple(brute_fit))
    tree_ratio = tree_rows @ tree_fit / tree_ns
    print("tree predicted/measured: ", np.round(tree_ratio[0::2], 2))
    print("unsorted predicted/measured: ", np.round(tree_ratio[1::2], 2))
    print("brute predicted/measured:", np.round(brute_rows @ brute_fit / brute_ns, 2))


if __name__ == "__main__":
    main()
