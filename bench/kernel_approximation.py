"""Kernel approximation: accuracy and speed, side by side, in one run.

    python bench/kernel_approximation.py [--quick] [--n-threads 2]

Prints markdown tables:

1. PolynomialSketch methods vs scikit-learn's PolynomialCountSketch on
   digits (unit rows) and on synthetic clustered data (d = 4096, n = 2000):
   relative Frobenius error of the approximate kernel matrix (mean over
   seeds) and transform time as a speed-up over scikit-learn.
2. 'tree' vs 'shared_leaf' against the degree q at d = 65536, n = 1000.
3. ArcCosineSketch / NTKSketch: error against n_components, and degree
   sampling vs sketching every degree at equal error.
4. Ridge regression on sketched features vs exact kernel ridge (diabetes).

Times are the minimum over all repeats and seeds of a configuration: the
machine this was written on has 2 cores shared with other jobs, and the
minimum is the measurement least inflated by them. Ratios compare runs made
back to back in this process. `--quick` shrinks every problem so the script runs in about
a minute (for CI and smoke tests); its numbers are not the reported ones.
"""

import argparse

import numpy as np
from sklearn.datasets import load_diabetes, load_digits
from sklearn.kernel_approximation import PolynomialCountSketch
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from subquad._threads import effective_n_threads
from subquad.kernel_approximation import ArcCosineSketch, NTKSketch, PolynomialSketch
from subquad.kernels import arccos_kernel, ntk_kernel, polynomial_kernel

from _timing import best_time

# Best of {0.1, 1, 10, 100} for the exact kernels on this split.
ALPHA = 10.0
METHODS = ["auto", "tensorsketch", "tensor_srht", "tree", "shared_leaf"]


def unit_rows(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def clustered(n, d, n_clusters, noise, rng, dtype=np.float64):
    """Unit rows around random centres: kernel values far from 0 and 1, as in
    real data, instead of the near-identity kernel of isotropic noise."""
    centres = rng.standard_normal((n_clusters, d)).astype(dtype)
    X = centres[rng.integers(0, n_clusters, n)]
    X += noise * rng.standard_normal((n, d)).astype(dtype)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def relative_error(F, K):
    F = F.astype(np.float64, copy=False)
    return np.linalg.norm(F @ F.T - K) / np.linalg.norm(K)


def table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    print()


def polynomial_vs_sklearn(name, X, degrees, sizes, seeds, repeats, n_threads):
    print(f"### PolynomialSketch vs sklearn PolynomialCountSketch: {name}, "
          f"n={X.shape[0]}, d={X.shape[1]}\n")
    print("err = relative Frobenius error of the kernel matrix (mean over "
          f"{seeds} seeds, ± its standard error for scikit-learn and auto); x = "
          f"scikit-learn's transform time / ours (ours on {n_threads} threads).\n")
    header = ["q", "s", "sklearn err", "sklearn time"]
    for method in METHODS:
        header += [f"{method} err", f"{method} x"]
    rows = []
    for q in degrees:
        K = polynomial_kernel(X, degree=q)
        for s in sizes:
            def run(est):
                errors, times = [], []
                for seed in range(seeds):
                    est.set_params(random_state=seed).fit(X)
                    t, F = best_time(lambda: est.transform(X), repeats)
                    errors.append(relative_error(F, K))
                    times.append(t)
                # Standard error of the mean over seeds, to tell noise from a gap.
                return np.mean(errors), np.std(errors) / np.sqrt(seeds), np.min(times)

            sk_err, sk_sem, sk_time = run(PolynomialCountSketch(degree=q, gamma=1.0,
                                                                n_components=s))
            row = [q, s, f"{sk_err:.3f}±{sk_sem:.3f}", f"{sk_time * 1e3:.0f} ms"]
            for method in METHODS:
                err, sem, t = run(PolynomialSketch(degree=q, n_components=s, method=method,
                                                   n_threads=n_threads))
                row += [f"{err:.3f}±{sem:.3f}" if method == "auto" else f"{err:.3f}",
                        f"{sk_time / t:.1f}"]
            rows.append(row)
            print(f"  done q={q} s={s}", flush=True)
    print()
    table(header, rows)


def tree_vs_shared(n, d, degrees, s, seeds, repeats, n_threads, rng):
    X = clustered(n, d, 10, 0.15, rng, dtype=np.float32)
    print(f"### 'tree' vs 'shared_leaf' against the degree: clustered float32, n={n}, "
          f"d={d}, n_components={s}, {n_threads} threads\n")
    print(f"err = mean over {seeds} seeds; time = best of {repeats} transforms per seed, "
          "min over seeds.\n")
    gram = (X @ X.T).astype(np.float64)
    rows = []
    for q in degrees:
        K = gram ** q
        row = [q]
        times = {}
        for method in ("tree", "shared_leaf"):
            errors = []
            for seed in range(seeds):
                est = PolynomialSketch(degree=q, n_components=s, method=method,
                                       random_state=seed, n_threads=n_threads).fit(X)
                t, F = best_time(lambda: est.transform(X), repeats)
                times[method] = min(t, times.get(method, np.inf))
                errors.append(relative_error(F, K))
            row += [f"{times[method]:.2f} s", f"{np.mean(errors):.3f}"]
        row.append(f"{times['tree'] / times['shared_leaf']:.1f}")
        rows.append(row)
        print(f"  done q={q}", flush=True)
    print()
    table(["q", "tree time", "tree err", "shared_leaf time", "shared_leaf err",
           "tree / shared_leaf time"], rows)


def slow_kernels(X, sizes, every_sizes, seeds, repeats, n_threads):
    print(f"### Arc-cosine and NTK sketches: digits, n={X.shape[0]}, d={X.shape[1]}, "
          f"max_degree=16, {n_threads} threads\n")
    kernels = {
        "arccos order 0": (lambda **kw: ArcCosineSketch(order=0, **kw),
                           arccos_kernel(X, order=0)),
        "arccos order 1": (lambda **kw: ArcCosineSketch(order=1, **kw),
                           arccos_kernel(X, order=1)),
        "NTK, 1 layer": (lambda **kw: NTKSketch(n_layers=1, **kw), ntk_kernel(X, n_layers=1)),
        "NTK, 3 layers": (lambda **kw: NTKSketch(n_layers=3, **kw), ntk_kernel(X, n_layers=3)),
    }

    def run(make, K, s, sampling):
        errors, times = [], []
        for seed in range(seeds):
            est = make(n_components=s, degree_sampling=sampling, random_state=seed,
                       n_threads=n_threads).fit(X)
            t, F = best_time(lambda: est.transform(X), repeats)
            errors.append(relative_error(F, K))
            times.append(t)
        return np.mean(errors), np.min(times)

    results = {}
    for name, (make, K) in kernels.items():
        sampled = {s: run(make, K, s, True) for s in sizes}
        every = {s: run(make, K, s, False) for s in every_sizes}
        results[name] = sampled, every
        print(f"  done {name}", flush=True)
    print()
    print("Error against n_components (degree sampling):\n")
    table(["kernel"] + [f"s={s}" for s in sizes],
          [[name] + [f"{sampled[s][0]:.4f}" for s in sizes]
           for name, (sampled, _) in results.items()])
    print("Degree sampling vs every degree 1..16 with an equal share of the features: "
          "for each sampled size, the smallest every-degree size with an error at "
          "most as large (sizes tried: " + ", ".join(map(str, every_sizes)) + ").\n")
    rows = []
    for name, (sampled, every) in results.items():
        for s in sizes:
            err, t = sampled[s]
            match = [m for m in every_sizes if every[m][0] <= err]
            if match:
                m = match[0]
                rows.append([name, s, f"{err:.4f}", f"{t * 1e3:.0f} ms", m,
                             f"{every[m][0]:.4f}", f"{every[m][1] * 1e3:.0f} ms",
                             f"{every[m][1] / t:.1f}"])
            else:
                best = min(every_sizes, key=lambda m: every[m][0])
                rows.append([name, s, f"{err:.4f}", f"{t * 1e3:.0f} ms",
                             f"none (best {best})", f"{every[best][0]:.4f}",
                             f"{every[best][1] * 1e3:.0f} ms", "-"])
    table(["kernel", "sampled s", "err", "time", "every-degree s", "err", "time",
           "time ratio"], rows)


def ridge_vs_kernel_ridge(sizes, repeats, n_threads):
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25,
                                                        random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    linear = Ridge(alpha=ALPHA).fit(X_train, y_train).score(X_test, y_test)
    print(f"### Ridge on sketched features vs exact kernel ridge: diabetes, "
          f"{len(X_train)} train / {len(X_test)} test, alpha={ALPHA}, {n_threads} threads "
          f"(linear ridge R² = {linear:.4f})\n")
    setups = {
        "polynomial q=2, coef0=1, gamma=0.1": (
            lambda s, seed: PolynomialSketch(degree=2, gamma=0.1, coef0=1.0, n_components=s,
                                             random_state=seed, n_threads=n_threads),
            lambda A, B: polynomial_kernel(A, B, degree=2, gamma=0.1, coef0=1.0)),
        "arccos order 0": (
            lambda s, seed: ArcCosineSketch(order=0, n_components=s, random_state=seed,
                                            n_threads=n_threads),
            lambda A, B: arccos_kernel(A, B, order=0)),
        "NTK, 1 layer": (
            lambda s, seed: NTKSketch(n_layers=1, n_components=s, random_state=seed,
                                      n_threads=n_threads),
            lambda A, B: ntk_kernel(A, B, n_layers=1)),
    }
    rows = []
    for name, (make, kernel) in setups.items():
        def exact():
            model = KernelRidge(alpha=ALPHA, kernel="precomputed")
            model.fit(kernel(X_train, X_train), y_train)
            return model.score(kernel(X_test, X_train), y_test)

        t_exact, r2_exact = best_time(exact, repeats)
        for s in sizes:
            scores, times = [], []
            for seed in range(3):
                def sketched():
                    features = make(s, seed).fit(X_train)
                    model = Ridge(alpha=ALPHA).fit(features.transform(X_train), y_train)
                    return model.score(features.transform(X_test), y_test)

                t, r2 = best_time(sketched, repeats)
                scores.append(r2)
                times.append(t)
            rows.append([name, s, f"{r2_exact:.4f}", f"{np.mean(scores):.4f}",
                         f"{np.mean(scores) - r2_exact:+.4f}", f"{t_exact * 1e3:.1f} ms",
                         f"{np.min(times) * 1e3:.1f} ms"])
    table(["kernel", "s", "exact R²", "sketch R² (3 seeds)", "gap", "exact time",
           "sketch time (fit + transform)"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, ~1 minute")
    parser.add_argument("--n-threads", type=int, default=2)
    args = parser.parse_args(argv)
    n_threads = args.n_threads
    rng = np.random.default_rng(0)
    digits = unit_rows(load_digits().data)
    print(f"subquad kernel approximation benchmark ({'quick' if args.quick else 'full'}); "
          f"{effective_n_threads(-1)} CPUs\n")
    if args.quick:
        polynomial_vs_sklearn("digits (unit rows)", digits[:500], [2, 4], [256], 2, 1,
                              n_threads)
        polynomial_vs_sklearn("synthetic clustered", clustered(500, 1024, 20, 0.5, rng),
                              [3], [256], 2, 1, n_threads)
        tree_vs_shared(200, 16384, [2, 8, 32], 256, 1, 1, n_threads, rng)
        slow_kernels(digits[:400], [256, 1024], [256, 1024, 2048], 1, 1, n_threads)
        ridge_vs_kernel_ridge([256], 1, n_threads)
    else:
        # Ten seeds on digits: the error of one draw varies by ~30% there.
        polynomial_vs_sklearn("digits (unit rows)", digits, [2, 3, 4], [256, 1024, 4096], 10,
                              2, n_threads)
        polynomial_vs_sklearn("synthetic clustered", clustered(2000, 4096, 20, 0.5, rng),
                              [2, 3, 4], [256, 1024, 4096], 3, 3, n_threads)
        tree_vs_shared(1000, 65536, [2, 4, 8, 16, 32], 1024, 3, 3, n_threads, rng)
        slow_kernels(digits, [256, 1024, 4096], [256, 512, 1024, 2048, 4096, 8192], 2, 2,
                     n_threads)
        ridge_vs_kernel_ridge([256, 1024, 4096], 3, n_threads)


if __name__ == "__main__":
    main()
