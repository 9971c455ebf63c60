"""subquad-demo: train a wide sparse network on scikit-learn's digits next to
the dense baseline, and print what happened."""

import argparse
import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from . import SparseMLPClassifier, show_config


def _train(engine, width, epochs, learning_rate, data, verbose):
    X_train, X_test, y_train, y_test = data
    clf = SparseMLPClassifier(hidden_layer_sizes=(width, width), engine=engine, max_iter=epochs,
                              batch_size=128, learning_rate_init=learning_rate,
                              random_state=0, verbose=verbose)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    return clf, clf.score(X_test, y_test), elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="subquad-demo", description=__doc__)
    parser.add_argument("--width", type=int, default=4096, help="hidden width (2 layers)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--skip-dense", action="store_true", help="train the sparse network only")
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args(argv)

    show_config()
    X, y = load_digits(return_X_y=True)
    data = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    print(f"\nscikit-learn digits: {len(data[0])} training and {len(data[1])} test images, "
          f"64 features, 10 classes (stratified 75/25 split)")
    print(f"network: 64 -> {args.width} -> {args.width} -> 10, shifted ReLU, float32, Adam "
          f"(lr {args.learning_rate}), batch 128, {args.epochs} epochs\n")

    engines = ["sparse"] if args.skip_dense else ["sparse", "dense"]
    rows = []
    for engine in engines:
        clf, accuracy, elapsed = _train(engine, args.width, args.epochs, args.learning_rate,
                                        data, args.verbose)
        steps = clf.n_iter_ * -(-len(data[0]) // 128)
        rows.append((engine, clf, accuracy, elapsed, steps))
        print(f"{engine:>6}: test accuracy {accuracy:.2%}, {elapsed:.1f}s for {clf.n_iter_} epochs "
              f"({elapsed / steps * 1e3:.1f} ms per step), active units per layer "
              + ", ".join(f"{a:.2%}" for a in clf.active_fraction_)
              + ", thresholds " + ", ".join(f"{b:.2f}" for b in clf.thresholds_), flush=True)
    if len(rows) == 2:
        (_, _, acc_s, t_s, n_s), (_, _, acc_d, t_d, n_d) = rows
        print(f"\nsparse vs dense: {(t_d / n_d) / (t_s / n_s):.1f}x faster per step, accuracy "
              f"{(acc_s - acc_d) * 100:+.2f} points")


if __name__ == "__main__":
    main()
