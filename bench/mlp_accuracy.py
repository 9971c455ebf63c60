"""Test accuracy of the sparse network and the dense baseline on datasets
that ship with scikit-learn (no download), trained the same way.

    python bench/mlp_accuracy.py [--width 4096] [--epochs 30]
"""

import argparse
import time
import warnings

from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from subquad import SparseMLPClassifier

DATASETS = {
    "digits": (load_digits, MinMaxScaler),
    "breast_cancer": (load_breast_cancer, StandardScaler),
    "wine": (load_wine, StandardScaler),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    args = parser.parse_args(argv)
    print(f"2 x {args.width} shifted-ReLU network, Adam lr {args.learning_rate}, batch 128, "
          f"{args.epochs} epochs, stratified 75/25 split, random_state=0")
    print(f"{'dataset':>14} {'n':>5} {'d':>4} {'sparse acc':>11} {'dense acc':>10} "
          f"{'sparse s':>9} {'dense s':>8}")
    for name, (load, scaler) in DATASETS.items():
        X, y = load(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                            random_state=0)
        scores, times = {}, {}
        for engine in ("sparse", "dense"):
            model = make_pipeline(scaler(), SparseMLPClassifier(
                hidden_layer_sizes=(args.width, args.width), engine=engine,
                max_iter=args.epochs, batch_size=128, learning_rate_init=args.learning_rate,
                random_state=0))
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_train, y_train)
            times[engine] = time.perf_counter() - start
            scores[engine] = model.score(X_test, y_test)
        print(f"{name:>14} {len(X):>5} {X.shape[1]:>4} {scores['sparse']:>11.2%} "
              f"{scores['dense']:>10.2%} {times['sparse']:>9.1f} {times['dense']:>8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
