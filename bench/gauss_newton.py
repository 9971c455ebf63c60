"""solver='gauss-newton' against Adam, against width, and its two solvers.

    python bench/gauss_newton.py            # the full comparison (tens of minutes)
    python bench/gauss_newton.py --quick    # smaller widths and budgets (a few minutes)

1. Iterations and time to reach a training MSE of 1e-4 x the initial MSE with
   a 2 x 4096 SparseMLPRegressor, float32, full batch, on
   * diabetes: scikit-learn's data, standardised X and y;
   * synthetic: n = 512, d = 32, x ~ N(0, I), y = sin(2 <w, x> / ||x||)
     standardised (an over-parametrised regression: 512 samples, 2 x 4096
     units);
   each with the default input_normalization='sphere' and with None (inputs
   as given, data-scaled initialisation), to show what the lift does.
   Gauss–Newton runs at most 30 iterations. Adam (batch_size='auto') runs
   from the same initialisation, one epoch per `partial_fit`, for each
   learning rate of a small grid, until it reaches the same target or
   exhausts a budget of `--adam-budget` x Gauss–Newton's time to target (or
   of Gauss–Newton's whole time when it misses the target); the best
   learning rate is reported. Times exclude the initialisation (the
   first Adam epoch, which includes it, is timed as the second).
2. Time per Gauss–Newton iteration (one attempt: forward, Jacobian factors,
   Gram, Cholesky, low-rank update, trial forward) against width, synthetic
   data, with the same step computed by dense NumPy/BLAS layers, and the
   log-log slope of each.
3. The solvers on the Gram of a 2 x 2048 network for growing n (C = 1),
   up to well past the size from which gn_solver='auto' picks 'sketch-cg':
   CG iterations to the solve tolerance without a preconditioner, with the
   preconditioner's diagonal scaling alone, and with the whole 'sketch-cg'
   preconditioner (default sketch size); the time of 'sketch-cg' (sketch,
   factorisation, CG) against Cholesky's, best of interleaved repeats, and
   their ratio. Then the sketch-CG iterations for other sketch sizes.

Timings on a shared or busy machine vary by up to 2x; compare columns of the
same run.
"""

import argparse
import itertools
import time
import warnings

import numpy as np
import scipy.linalg
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from subquad import SparseMLPRegressor
from subquad._config import config_info
from subquad.neural_network import _gauss_newton as gn

from _timing import settle

TARGET = 1e-4
GN_ITERATIONS = 30
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def standardised(v):
    return (v - v.mean(axis=0)) / v.std(axis=0)


def on_sphere(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(X.shape[1])


def datasets():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    G = rng.standard_normal((512, 32))
    w = rng.standard_normal(32)

    def target(Z):
        return standardised(np.sin(2 * on_sphere(Z) @ w / np.sqrt(32)))

    return {"diabetes": (X, standardised(y)), "synthetic": (G, target(G))}


def mse(est, X, y):
    return float(np.mean((est.predict(X) - y) ** 2))


def gauss_newton_run(X, y, width, input_normalization="sphere"):
    est = SparseMLPRegressor(hidden_layer_sizes=(width, width), solver="gauss-newton",
                             max_iter=GN_ITERATIONS, tol=0.0, random_state=0, shuffle=False,
                             input_normalization=input_normalization)
    est.fit(X, y)
    history = est.gauss_newton_history_
    initial = 2 * history[0]["loss_before"]
    elapsed, reached = 0.0, None
    for iteration, record in enumerate(history, start=1):
        elapsed += record["time"]
        if reached is None and 2 * record["loss_after"] <= TARGET * initial:
            reached = (iteration, elapsed)
    return initial, 2 * history[-1]["loss_after"] / initial, reached, elapsed, history


def adam_run(X, y, width, learning_rate, budget, initial, input_normalization):
    """Adam epochs until the target or the time budget; returns
    (time to target or None, best relative MSE, epochs)."""
    est = SparseMLPRegressor(hidden_layer_sizes=(width, width), solver="adam",
                             learning_rate_init=learning_rate, random_state=0,
                             input_normalization=input_normalization)
    elapsed, best, epoch = 0.0, np.inf, 0
    while elapsed < budget:
        start = time.perf_counter()
        est.partial_fit(X, y)
        took = time.perf_counter() - start
        epoch += 1
        if epoch == 1:
            took = 0.0  # includes the initialisation; the second epoch is counted twice
        elif epoch == 2:
            took *= 2
        elapsed += took
        relative = mse(est, X, y) / initial
        best = min(best, relative)
        if not np.isfinite(relative):
            break
        if relative <= TARGET:
            return elapsed, best, epoch
    return None, best, epoch


def convergence(width, budget_factor, learning_rates):
    print(f"\n1. Training MSE to {TARGET:g} x initial, 2 x {width} network, float32, "
          f"full-batch Gauss-Newton (<= {GN_ITERATIONS} iterations) vs Adam "
          f"(best of lr {', '.join(f'{lr:g}' for lr in learning_rates)}; budget "
          f"{budget_factor:g} x GN time)")
    print(f"{'dataset, input_normalization':>29} {'n':>4} {'GN iters':>8} {'GN s':>7} {'GN final':>9} "
          f"{'Adam s':>9} {'Adam best':>9} {'best lr':>7} {'ratio':>7}")
    for (name, (X, y)), normalization in itertools.product(datasets().items(),
                                                           ("sphere", None)):
        initial, final, reached, total, _ = gauss_newton_run(X, y, width, normalization)
        gn_time = reached[1] if reached else total
        # Without a Gauss-Newton time to beat, Adam gets the same time as GN.
        budget = budget_factor * gn_time if reached else total
        best = None
        for lr in learning_rates:
            took, best_relative, epochs = adam_run(X, y, width, lr, budget, initial,
                                                   normalization)
            key = (took is None, took if took is not None else best_relative)
            if best is None or key < best[0]:
                best = (key, lr, took, best_relative)
        _, lr, adam_time, adam_best = best
        if reached and adam_time:
            ratio = f"{adam_time / reached[1]:.1f}x"
        elif reached:
            ratio = f">{budget_factor:g}x"
        else:
            ratio = "-"
        print(f"{name + ', ' + str(normalization):>29} {len(y):>4} {reached[0] if reached else '-':>8} "
              f"{gn_time:>7.2f} {final:>9.1e} "
              f"{adam_time if adam_time else float('nan'):>9.2f} {adam_best:>9.1e} "
              f"{lr:>7g} {ratio:>7}")
    print("GN final / Adam best: MSE relative to the initial one; '-' = target not reached")


# ------------------------------------------------------------- dense step


def dense_gauss_newton_step(coefs, intercepts, thresholds, X, y, damping):
    """The same damped Gauss–Newton step (C = 1) with dense NumPy layers."""
    Hs = [X]
    for W, c, b in zip(coefs[:-1], intercepts[:-1], thresholds):
        Hs.append(np.maximum(Hs[-1] @ W + (c - b), 0))
    residual = (Hs[-1] @ coefs[-1] + intercepts[-1])[:, 0] - y
    V = [None] * len(thresholds)
    V[-1] = coefs[-1][:, 0] * (Hs[-1] > 0)
    for layer in range(len(thresholds) - 1, 0, -1):
        V[layer - 1] = (V[layer] @ coefs[layer].T) * (Hs[layer] > 0)
    gram = (Hs[-1] @ Hs[-1].T + 1).astype(np.float64)
    for layer in range(len(thresholds)):
        gram += (Hs[layer] @ Hs[layer].T + 1) * (V[layer] @ V[layer].T)
    gram[np.diag_indices_from(gram)] += damping * np.mean(np.diag(gram))
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram), residual)
    alpha = alpha.astype(X.dtype)
    for layer in range(len(thresholds)):
        update = alpha[:, None] * V[layer]
        coefs[layer] -= Hs[layer].T @ update
        intercepts[layer] -= update.sum(axis=0)
    coefs[-1] -= Hs[-1].T @ alpha[:, None]
    intercepts[-1] -= alpha.sum()
    H = X
    for W, c, b in zip(coefs[:-1], intercepts[:-1], thresholds):
        H = np.maximum(H @ W + (c - b), 0)
    return 0.5 * float(np.mean(((H @ coefs[-1] + intercepts[-1])[:, 0] - y) ** 2))


def width_sweep(widths, steps):
    X, y = datasets()["synthetic"]
    print(f"\n2. Time per Gauss-Newton iteration against width (synthetic, n = {len(y)}, "
          f"C = 1, float32, median of {steps} single-attempt iterations)")
    print(f"{'width':>6} {'sparse s':>9} {'dense s':>9} {'speed-up':>8} {'active per layer':>18}")
    sparse_times, dense_times = [], []
    for width in widths:
        est = SparseMLPRegressor(hidden_layer_sizes=(width, width), solver="gauss-newton",
                                 max_iter=steps + 1, tol=0.0, random_state=0,
                                 shuffle=False).fit(X, y)
        single = [r["time"] for r in est.gauss_newton_history_[1:] if r["attempts"] == 1]
        sparse_times.append(np.median(single) if single else np.nan)
        X32 = est._network_input(X)  # lifted onto the sphere, as the estimator does
        coefs = [W.copy() for W in est.coefs_]
        intercepts = [c.copy() for c in est.intercepts_]
        took = []
        for _ in range(max(1, steps // 2)):
            start = time.perf_counter()
            dense_gauss_newton_step(coefs, intercepts, list(est.thresholds_), X32,
                                    y.astype(np.float32), 1e-3)
            took.append(time.perf_counter() - start)
        dense_times.append(np.median(took))
        active = ", ".join(f"{a:.2%}" for a in est.active_fraction_)
        print(f"{width:>6} {sparse_times[-1]:>9.3f} {dense_times[-1]:>9.3f} "
              f"{dense_times[-1] / sparse_times[-1]:>7.1f}x {active:>18}")
    logw = np.log(widths)
    print(f"log-log slope of time per iteration vs width: sparse "
          f"{np.polyfit(logw, np.log(sparse_times), 1)[0]:.2f}, dense "
          f"{np.polyfit(logw, np.log(dense_times), 1)[0]:.2f}")


# ---------------------------------------------------------------- solvers


class DiagonalOnly:
    """The diagonal scaling of `SketchPreconditioner` without its sketch."""

    def __init__(self, diagonal):
        self.diagonal = diagonal

    def apply(self, vector, damping):
        return vector / (self.diagonal + damping)


def sketch_cg(factors, gram, residual, damping, tol, sketch_size=gn.AUTO_SKETCH_SIZE):
    """The 'sketch-cg' solve; returns (sketch s, factor s, CG s), iterations."""
    t0 = time.perf_counter()
    sketch = gn.jacobian_sketch(factors, sketch_size, 0)
    t1 = time.perf_counter()
    preconditioner = gn.SketchPreconditioner(sketch, np.diag(gram))
    preconditioner.factor(damping)
    t2 = time.perf_counter()
    _, iterations, converged = gn.conjugate_gradient(gram, residual, damping, tol,
                                                     10 * len(gram), preconditioner)
    t3 = time.perf_counter()
    assert converged
    return (t1 - t0, t2 - t1, t3 - t2), iterations


def solver_sweep(sizes, width, repeats, sketch_sizes, tol=1e-6):
    print(f"\n3. Solvers on the Gram of a 2 x {width} network (synthetic sphere data, "
          f"C = 1, damping 1e-3 x mean diagonal, CG tolerance {tol:g}, sketch size "
          f"{gn.AUTO_SKETCH_SIZE}; times best of {repeats} interleaved; 'auto' picks "
          f"sketch-cg from n*C = {gn.SKETCH_CG_MIN_SIZE})")
    print(f"{'n*C':>6} {'plain CG it':>11} {'diag CG it':>10} {'sketch-CG it':>12} "
          f"{'cholesky s':>10} {'sketch-cg s':>11} {'(sketch':>8} {'factor':>7} {'CG)':>7} "
          f"{'ratio':>6} {'plain CG s':>10}")
    rng = np.random.default_rng(1)
    w = rng.standard_normal(32)
    iterations_by_sketch_size = []
    for n in sizes:
        X = on_sphere(rng.standard_normal((n, 32)))
        y = standardised(np.sin(2 * X @ w / np.sqrt(32)))
        est = SparseMLPRegressor(hidden_layer_sizes=(width, width), solver="gauss-newton",
                                 max_iter=1, random_state=0).fit(X, y)
        activations, output = est._network.forward(X.astype(np.float32))
        factors = gn.jacobian_factors(est._network, activations)
        gram = gn.jacobian_gram(factors)
        residual = output[:, 0].astype(np.float64) - y
        damping = 1e-3 * np.mean(np.diag(gram))
        # Interleaved like _timing.best_times, but keeping the split of the
        # fastest sketch-cg run.
        cholesky, split = np.inf, None
        for _ in range(repeats):
            settle()
            start = time.perf_counter()
            gn.solve_cholesky(gram, residual, damping)
            cholesky = min(cholesky, time.perf_counter() - start)
            settle()
            run, iterations = sketch_cg(factors, gram, residual, damping, tol)
            split = run if split is None or sum(run) < sum(split) else split
        sketched_time = sum(split)
        start = time.perf_counter()
        _, plain, _ = gn.conjugate_gradient(gram, residual, damping, tol, 10 * n)
        plain_time = time.perf_counter() - start
        _, diagonal, _ = gn.conjugate_gradient(gram, residual, damping, tol, 10 * n,
                                               DiagonalOnly(np.diag(gram)))
        iterations_by_sketch_size.append(
            [sketch_cg(factors, gram, residual, damping, tol, size)[1] for size in sketch_sizes])
        print(f"{n:>6} {plain:>11} {diagonal:>10} {iterations:>12} {cholesky:>10.3f} "
              f"{sketched_time:>11.3f} {split[0]:>8.3f} {split[1]:>7.3f} {split[2]:>7.3f} "
              f"{sketched_time / cholesky:>6.2f} {plain_time:>10.3f}")
    print("ratio: sketch-cg time / cholesky time; diag CG: the preconditioner's diagonal "
          "scaling without the sketch")
    print("sketch-CG iterations against the sketch size")
    print(f"{'n*C':>6} " + " ".join(f"{f's = {size}':>9}" for size in sketch_sizes))
    for n, counts in zip(sizes, iterations_by_sketch_size):
        print(f"{n:>6} " + " ".join(f"{count:>9}" for count in counts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="width 1024 for the comparison, widths 1024-4096, n <= 2000")
    parser.add_argument("--adam-budget", type=float, default=5.0,
                        help="Adam's time budget per learning rate, as a multiple of "
                             "Gauss-Newton's time to target (default 5: a ratio of at "
                             "least 5 shows as '>5x')")
    parser.add_argument("--sections", default="123",
                        help="which of the three parts to run, e.g. '23' (default all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(config_info())
    if args.quick:
        parts = {"1": lambda: convergence(1024, args.adam_budget, LEARNING_RATES[1:3]),
                 "2": lambda: width_sweep([1024, 2048, 4096], steps=2),
                 "3": lambda: solver_sweep([500, 1000, 2000], 1024, repeats=2,
                                           sketch_sizes=[8, 64, 256])}
    else:
        parts = {"1": lambda: convergence(4096, args.adam_budget, LEARNING_RATES),
                 "2": lambda: width_sweep([2048, 4096, 8192, 16384], steps=3),
                 "3": lambda: solver_sweep([1000, 1500, 2000, 4000, 8000, 12000], 2048,
                                           repeats=3, sketch_sizes=[8, 32, 64, 128, 256])}
    for section in args.sections:
        parts[section]()


if __name__ == "__main__":
    main()
