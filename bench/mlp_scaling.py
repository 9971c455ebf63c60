"""Time per training step against width: sparse engine vs dense baselines.

    python bench/mlp_scaling.py                 # widths 2048 ... 16384
    python bench/mlp_scaling.py --quick         # widths 512 ... 2048, fewer steps
    python bench/mlp_scaling.py --plot out.png  # where to write the log-log plot

Two hidden layers of the given width, float32, all threads, scikit-learn's
digits (stratified 75/25 split). For each width both engines start from the
same initialisation and take the same number of Adam steps on the same
mini-batches; each step is timed (one warm-up step excluded) and the test
accuracy after those steps is reported. The dense baseline is the same estimator with ``engine='dense'``:
same initialisation, loss, optimizer (Adam) and batching, with NumPy/BLAS
products. If PyTorch is installed, a plain torch MLP with the same shape
and batch is timed too (time per step only).

The log-log slope of time per step against width is fitted for each engine
at batch 128 (where a batch's active rows cover most of W) and at batch 8
(where they do not, and the step is truly subquadratic).
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from subquad import SparseMLPClassifier
from subquad._config import config_info
from subquad.neural_network._sparse_mlp import _outputs


def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16.0).astype(np.float32), y, test_size=0.25, stratify=y,
                            random_state=0)


def train_and_time(engine, width, batch_size, steps, data, learning_rate,
                   input_normalization="sphere"):
    """Initialise, then time `steps` steps on shuffled mini-batches; return
    median seconds per step, test accuracy after those steps and the mean
    active fraction of each hidden layer."""
    X_train, X_test, y_train, y_test = data
    # Initialise (the data-scaled initialisation needs more rows than one
    # batch of 8) with one untimed warm-up step on 256 samples.
    clf = SparseMLPClassifier(hidden_layer_sizes=(width, width), engine=engine, batch_size=256,
                              input_normalization=input_normalization,
                              learning_rate_init=learning_rate, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train[:256], y_train[:256])
    network = clf._network
    state = clf._training_state(network, continuing=True)
    X = clf._network_input(X_train)
    Y = clf._prepare_targets(y_train, True)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(X))
    times, active = [], []
    position = 0
    while len(times) < steps:
        if position + batch_size > len(X):
            order, position = rng.permutation(len(X)), 0
        batch = order[position:position + batch_size]
        position += batch_size
        start = time.perf_counter()
        active.append(clf._step(network, X[batch], Y[batch], state)[1])
        times.append(time.perf_counter() - start)
    predicted = clf.classes_[_outputs(network, clf._network_input(X_test)).argmax(axis=1)]
    return float(np.median(times)), float(np.mean(predicted == y_test)), np.mean(active, axis=0)


def torch_step_time(width, batch_size, n_features, n_classes, steps):
    """Seconds per Adam step of a dense ReLU MLP in PyTorch, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(n_features, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X = torch.randn(batch_size, n_features)
    y = torch.randint(0, n_classes, (batch_size,))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def slope(widths, times):
    return float(np.polyfit(np.log(widths), np.log(times), 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plot", default="bench/results/mlp_scaling.png")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--widths", type=int, nargs="+", help="default 2048 4096 8192 16384")
    parser.add_argument("--input-normalization", choices=["sphere", "none"], default="sphere",
                        help="the estimators' input_normalization ('none': None)")
    args = parser.parse_args(argv)
    widths = args.widths or ([512, 1024, 2048] if args.quick else [2048, 4096, 8192, 16384])
    normalization = None if args.input_normalization == "none" else "sphere"
    steps = 5 if args.quick else args.steps
    info = config_info()
    print(f"subquad {info['subquad']}, {info['n_threads']} threads, float32, 2 hidden layers, "
          f"digits; BLAS: " + ", ".join(f"{b['vendor']} {b['version']}" for b in info["blas"]))
    data = digits()
    results = {}
    for batch_size in (128, 8):
        print(f"\nbatch {batch_size}: median ms per step over {steps} steps; test accuracy "
              f"after them")
        header = (f"{'width':>6} {'sparse ms':>10} {'dense ms':>9} {'speed-up':>9} "
                  f"{'torch ms':>9} {'acc sparse':>11} {'acc dense':>10}  active per layer")
        print(header)
        rows = []
        for width in widths:
            sparse = train_and_time("sparse", width, batch_size, steps, data, args.learning_rate,
                                    normalization)
            dense = train_and_time("dense", width, batch_size, steps, data, args.learning_rate,
                                   normalization)
            torch_t = torch_step_time(width, batch_size, 64, 10, min(steps, 10))
            rows.append((width, sparse, dense, torch_t))
            torch_text = f"{torch_t * 1e3:>9.1f}" if torch_t else f"{'-':>9}"
            print(f"{width:>6} {sparse[0] * 1e3:>10.2f} {dense[0] * 1e3:>9.1f} "
                  f"{dense[0] / sparse[0]:>8.1f}x {torch_text} {sparse[1]:>11.4f} "
                  f"{dense[1]:>10.4f}  " + ", ".join(f"{a:.2%}" for a in sparse[2]), flush=True)
        w = [r[0] for r in rows]
        slopes = {}
        if len(w) > 1:
            slopes = {"sparse": slope(w, [r[1][0] for r in rows]),
                      "dense": slope(w, [r[2][0] for r in rows])}
            if all(r[3] for r in rows):
                slopes["torch"] = slope(w, [r[3] for r in rows])
            print("log-log slope of time per step vs width: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
        results[batch_size] = (rows, slopes)
    if len(widths) > 1:
        plot(results, args.plot)


def plot(results, path):
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5))
    for ax, (batch_size, (rows, slopes)) in zip(np.atleast_1d(axes), results.items()):
        w = [r[0] for r in rows]
        ax.loglog(w, [r[1][0] * 1e3 for r in rows], "o-", label=f"subquad sparse (slope {slopes['sparse']:.2f})")
        ax.loglog(w, [r[2][0] * 1e3 for r in rows], "s-", label=f"dense NumPy/BLAS (slope {slopes['dense']:.2f})")
        if "torch" in slopes:
            ax.loglog(w, [r[3] * 1e3 for r in rows], "^-", label=f"PyTorch dense (slope {slopes['torch']:.2f})")
        ax.set_xlabel("hidden width m (2 hidden layers)")
        ax.set_ylabel("ms per training step")
        ax.set_title(f"batch {batch_size}, float32")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
