"""The first-layer ActiveNeuronIndex inside the estimators, on low-dimensional data.

    python bench/active_index_fit.py           # width 2**17, 20000 training rows
    python bench/active_index_fit.py --quick   # width 2**15, 5000 training rows
    python bench/active_index_fit.py --dim 5   # more features: 'auto' indexes predictions only

Fits SparseMLPClassifier (one very wide hidden layer, d = 3 synthetic data,
which the sphere lift makes a 4-dimensional network input; early stopping
so every epoch scores a validation split) with
``first_layer_index=False`` and ``'auto'``, then predicts a large test set
with both, and prints:

* fit and predict times side by side, their ratios, the index's rebuilds
  during the fit, and whether predictions agree;
* one training step's first layer on the trained network, best of a few:
  the brute product vs keeping the index current (``update(None, ...)``
  refits every bound after a step that moved all neurons) and querying it
  with ``sort_indices=False``, as the network does, and what a rebuild
  would cost instead.
"""

import argparse
import time
import warnings

import numpy as np

from subquad import ActiveNeuronIndex, SparseMLPClassifier
from subquad.linalg.threshold import threshold_csr


def data(rng, n, dim):
    X = rng.standard_normal((n, dim))
    y = (np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] > 0).astype(int)
    return X, y


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dim", type=int, default=3, help="features d (network input d + 1)")
    args = parser.parse_args()
    width, n_train, n_test = (1 << 15, 5000, 20000) if args.quick else (1 << 17, 20000, 100000)
    dim, batch = args.dim, 256
    rng = np.random.default_rng(0)
    X, y = data(rng, n_train, dim)
    X_test, y_test = data(rng, n_test, dim)
    print(f"d={dim} width={width} n_train={n_train} n_test={n_test} batch={batch} "
          f"epochs={args.epochs} float32")

    results = {}
    for mode in (False, "auto"):
        clf = SparseMLPClassifier(hidden_layer_sizes=(width,), max_iter=args.epochs,
                                  batch_size=batch, early_stopping=True, random_state=0,
                                  first_layer_index=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_fit, _ = timed(lambda: clf.fit(X, y))
        t_first, proba = timed(lambda: clf.predict_proba(X_test))  # builds the index
        t_again, _ = timed(lambda: clf.predict_proba(X_test))      # reuses it
        index = getattr(clf._network, "_index", None)
        chosen = "-" if index is None else f"{index.algorithm_}"
        rebuilds = "-" if index is None else f"{index.n_rebuilds_}"
        results[mode] = (t_fit, t_first, t_again, proba, chosen, rebuilds, clf)
    print(f"{'first_layer_index':>18} {'fit s':>7} {'predict s':>10} {'again s':>8} {'index':>6} "
          f"{'rebuilds':>8} {'accuracy':>8}")
    for mode, (t_fit, t_first, t_again, proba, chosen, rebuilds, clf) in results.items():
        accuracy = np.mean(clf.classes_[proba.argmax(axis=1)] == y_test)
        print(f"{mode!s:>18} {t_fit:>7.2f} {t_first:>10.2f} {t_again:>8.2f} {chosen:>6} "
              f"{rebuilds:>8} {accuracy:>8.4f}")
    same = np.array_equal(results[False][3].argmax(axis=1), results["auto"][3].argmax(axis=1))
    gap = np.abs(results[False][3] - results["auto"][3]).max()
    print(f"same predicted classes: {same}; max |proba difference| {gap:.2e}")
    print(f"fit speed-up with the index: {results[False][0] / results['auto'][0]:.2f}x; "
          f"predict: {results[False][1] / results['auto'][1]:.2f}x "
          f"(first call, build included), {results[False][2] / results['auto'][2]:.2f}x "
          f"(index reused)")

    # One training step's first layer, on the trained network.
    network = results[False][6]._network
    neurons = network._first_layer_neurons()
    W, c, b, s = network.hidden_W[0], network.hidden_c[0], network.thresholds[0], network.scales[0]
    Xb = results[False][6]._network_input(X[:batch])  # lifted onto the sphere
    shift = ((c.astype(np.float64) - b) / s).astype(np.float32)
    Xq = np.hstack([Xb, np.ones((batch, 1), np.float32)])
    index = ActiveNeuronIndex(neurons, algorithm="auto")
    # A step moves the weights of every neuron active in the batch and, with
    # Adam, every bias: all neurons, by about a learning rate.
    steps = [neurons + 1e-3 * rng.standard_normal(neurons.shape).astype(np.float32)
             for _ in range(4)]
    t_brute = t_refit = t_query = t_build = np.inf
    for step in steps:
        t_brute = min(t_brute, timed(lambda: threshold_csr(Xb, W, shift))[0])
        t_refit = min(t_refit, timed(lambda: index.update(None, step))[0])
        t_query = min(t_query, timed(lambda: index.query(Xq, b / s, sort_indices=False))[0])
        t_build = min(t_build, timed(lambda: ActiveNeuronIndex(step, algorithm="tree"))[0])
    print(f"one step's first layer (batch {batch}, best of {len(steps)}): brute "
          f"{t_brute * 1e3:.1f} ms | index: refit all {width} neurons {t_refit * 1e3:.1f} ms + "
          f"query {t_query * 1e3:.1f} ms ({index.algorithm_}) = "
          f"{t_brute / (t_refit + t_query):.2f}x faster (a rebuild instead would take "
          f"{t_build * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
