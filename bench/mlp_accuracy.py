"""Test accuracy of the sparse network and the dense baseline on datasets
that ship with scikit-learn (no download), trained the same way.

    python bench/mlp_accuracy.py [--width 4096] [--steps 300]

Each dataset is trained for at least `--steps` Adam steps of batch 128 (30
epochs on digits; the small tabular sets need more epochs for as many steps).
Time per step is measured by bench/mlp_scaling.py, not here.
"""

import argparse
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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    args = parser.parse_args(argv)
    print(f"2 x {args.width} shifted-ReLU network, Adam lr {args.learning_rate}, batch 128, "
          f">= {args.steps} steps, stratified 75/25 split, random_state=0")
    print(f"{'dataset':>14} {'n':>5} {'d':>4} {'epochs':>6} {'sparse acc':>11} {'dense acc':>10}")
    for name, (load, scaler) in DATASETS.items():
        X, y = load(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                            random_state=0)
        epochs = -(-args.steps // -(-len(X_train) // 128))
        scores = {}
        for engine in ("sparse", "dense"):
            model = make_pipeline(scaler(), SparseMLPClassifier(
                hidden_layer_sizes=(args.width, args.width), engine=engine,
                max_iter=epochs, batch_size=128, learning_rate_init=args.learning_rate,
                tol=0.0, n_iter_no_change=epochs, random_state=0))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_train, y_train)
            scores[engine] = model.score(X_test, y_test)
        print(f"{name:>14} {len(X):>5} {X.shape[1]:>4} {epochs:>6} {scores['sparse']:>11.2%} "
              f"{scores['dense']:>10.2%}", flush=True)


if __name__ == "__main__":
    main()
