"""Sparse engine against its baselines, measured side by side in one run.

    python bench/sparse_engine.py            # full run (a few minutes)
    python bench/sparse_engine.py --quick    # smaller sizes, for a smoke test

Every number printed is a ratio of two timings taken in this run (best of
several interleaved repetitions), so a shared, noisy machine moves both
sides together. Targets are those of the sparse-engine issue.
"""

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from subquad import effective_n_threads
from subquad._config import config_info
from subquad.linalg import blocked_gemm, lowrank_update_, threshold_matmul

from _line_touch import LineTouch
from _timing import (add_cold_memory_option, best_time_after, best_times, memory_warming,
                     steal_mark, steal_report, steal_since)


def times(fns, repeats):
    """Best wall time of each callable, repetitions interleaved."""
    return [t for t, _ in best_times(fns, repeats)]


def sparse_rows(rng, n, m, density, dtype=np.float32):
    """CSR with exactly round(density * m) nonzeros per row, like a batch of
    shifted-ReLU activations (positive values)."""
    k = max(1, round(density * m))
    cols = np.sort(np.argsort(rng.random((n, m)), axis=1)[:, :k], axis=1)
    data = (rng.random(n * k) + 0.1).astype(dtype)
    return sp.csr_matrix((data, cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, m))


def mark(ok):
    return "ok " if ok else "MISS"


def bench_threshold(sizes, n, repeats, rng):
    print(f"\nthreshold_matmul, CSR H (n={n}, 2% nonzeros per row), float32, "
          f"{effective_n_threads()} threads; output ~2% active; W GB/s: the rows of W that H "
          f"uses, read once, per second of ours, and that as a share of sgemv's rate on W; 'after BLAS': "
          f"ours started right after NumPy's multi-threaded W @ x, over ours started on a quiet "
          f"machine (OpenBLAS's workers spin for ~0.1 s after a call); 'scipy/dense target needs': "
          f"the W rate at which ours would just meet that speed target, as a share of sgemv's rate; "
          f"'steal': share of the machine's CPU time the host took while this row was timed")
    header = (f"{'m':>6} {'ours ms':>8} {'scipy+thr':>10} {'dense':>8} {'1 thread':>9} "
              f"{'GF/s':>6} {'of sgemm':>9} {'W GB/s':>7} {'of sgemv':>8} {'after BLAS':>10} "
              f"{'scipy target needs':>18} {'dense target needs':>18} {'steal':>5}  targets")
    print(header)
    line_touch = LineTouch.load()
    n_threads = effective_n_threads()
    floor_rows = []
    for m in sizes:
        W = rng.standard_normal((m, m)).astype(np.float32)
        H = sparse_rows(rng, n, m, 0.02)
        H_dense = H.toarray()
        b = float(np.quantile(H[:8] @ W, 0.98))
        x = np.ones(m, dtype=np.float32)
        used_rows = np.unique(H.indices).astype(np.int64)
        fns = [
            lambda: threshold_matmul(H, W, b),
            lambda: threshold_matmul(H, W, b, n_threads=1),
            lambda: np.maximum(H @ W - b, 0),
            lambda: np.maximum(H_dense @ W - b, 0),
            lambda: W @ x,
        ]
        if line_touch is not None:
            fns.append(lambda: line_touch.read_rows(W, used_rows, n_threads))
        row_start = steal_mark()
        ours, ours_1, scipy_t, dense_t, sgemv_t, *floor_t = times(fns, repeats)
        after_blas = best_time_after(lambda: W @ x, lambda: threshold_matmul(H, W, b), repeats)
        rate = 2 * H.nnz * m / ours / 1e9
        sgemm_rate = 2 * n * m * m / dense_t / 1e9
        # The product must read every row of W that H uses at least once;
        # sgemv streams all of W, the machine's read rate for this array.
        w_gb = used_rows.size * m * 4 / 1e9
        w_rate = w_gb / ours
        sgemv_rate = W.nbytes / sgemv_t / 1e9
        # The sentence read as 5x against scipy at every size and,
        # from m = 8192 on, 5x / 8x against dense (README: the other reading).
        scipy_target = 5
        has_dense_target = m >= 8192
        dense_target = 8 if m >= 16384 else 5
        # Reading W's used rows is a floor on our time: the W rate that would
        # meet a target shows how close to the machine's read rate it lies.
        needs_scipy = w_gb / (scipy_t / scipy_target) / sgemv_rate
        needs_dense = w_gb / (dense_t / dense_target) / sgemv_rate
        targets = [
            f"vs scipy {scipy_t / ours:.1f}x (>={scipy_target}) "
            f"{mark(scipy_t / ours >= scipy_target)}",
            f"vs dense {dense_t / ours:.1f}x (>={dense_target}) {mark(dense_t / ours >= dense_target)}"
            if has_dense_target else f"vs dense {dense_t / ours:.1f}x",
            f"2 vs 1 thread {ours_1 / ours:.2f}x (>=1.6) {mark(ours_1 / ours >= 1.6)}",
        ]
        print(f"{m:>6} {ours * 1e3:>8.2f} {scipy_t / ours:>9.1f}x {dense_t / ours:>7.1f}x "
              f"{ours_1 / ours:>8.2f}x {rate:>6.1f} {rate / sgemm_rate:>8.1%} {w_rate:>7.1f} "
              f"{w_rate / sgemv_rate:>7.0%} {after_blas / ours:>9.2f}x {needs_scipy:>17.0%} "
              f"{f'{needs_dense:.0%}' if has_dense_target else '-':>18} "
              f"{steal_since(row_start):>5}  " + "; ".join(targets))
        if floor_t:
            floor = floor_t[0]
            floor_rows.append(
                f"{m:>6} {floor * 1e3:>9.2f} {w_gb / floor:>6.1f} {scipy_t / floor:>10.1f}x "
                f"{dense_t / floor:>10.1f}x {floor / ours:>12.0%}  "
                f"vs scipy {'within' if scipy_t / floor >= scipy_target else 'BEYOND'} the floor"
                + (f"; vs dense {'within' if dense_t / floor >= dense_target else 'BEYOND'} "
                   f"the floor" if has_dense_target else ""))
        del W, H, H_dense
    if floor_rows:
        print(f"read floor (bench/_line_touch.py): reading one float of each 64-byte line of "
              f"the rows of W that H uses, in address order, and nothing else; its speed-up "
              f"over each baseline is the most any threshold_matmul could reach here")
        print(f"{'m':>6} {'floor ms':>9} {'GB/s':>6} {'scipy+thr':>11} {'dense':>11} "
              f"{'ours at':>12}")
        print("\n".join(floor_rows))
    else:
        print("read floor: not measured (no C compiler with OpenMP found for "
              "bench/_line_touch.py)")
    print_fixed_cost(rng, repeats)


def print_fixed_cost(rng, repeats):
    """What a call costs whatever its size: a tiny product timed like the
    rows above (after the settle, caches cold) and straight after another
    call (warm)."""
    H = sparse_rows(rng, 4, 64, 0.1)
    W = rng.standard_normal((64, 64)).astype(np.float32)
    after_settle = times([lambda: threshold_matmul(H, W, 0.5)], repeats)[0]
    back_to_back = best_time_after(lambda: threshold_matmul(H, W, 0.5),
                                   lambda: threshold_matmul(H, W, 0.5), repeats)
    print(f"fixed cost: a 4 x 64 call took {after_settle * 1e3:.2f} ms timed as above and "
          f"{back_to_back * 1e3:.2f} ms straight after another call")


def bench_blocked_gemm(size, k, repeats, rng):
    print(f"\nblocked_gemm, {size} x {size} x {k}, float32, {effective_n_threads()} threads "
          f"(both write into a preallocated C)")
    A = rng.standard_normal((size, k)).astype(np.float32)
    B = rng.standard_normal((k, size)).astype(np.float32)
    C = np.empty((size, size), np.float32)
    idx = np.sort(rng.choice(k, size=k // 10, replace=False))
    start = steal_mark()
    ours_full, numpy_full, ours_idx, numpy_idx = times([
        lambda: blocked_gemm(A, B, C),
        lambda: np.matmul(A, B, out=C),
        lambda: blocked_gemm(A, B, C, index=idx),
        lambda: np.matmul(A[:, idx], B[idx], out=C),
    ], repeats)
    print(f"  full product: ours {ours_full * 1e3:.1f} ms, numpy {numpy_full * 1e3:.1f} ms, "
          f"ours/numpy {ours_full / numpy_full:.2f} (<=1.10) {mark(ours_full / numpy_full <= 1.10)}")
    print(f"  10% index:    ours {ours_idx * 1e3:.1f} ms, numpy A[:, idx] @ B[idx] "
          f"{numpy_idx * 1e3:.1f} ms, speed-up {numpy_idx / ours_idx:.2f}x (>=1.5) "
          f"{mark(numpy_idx / ours_idx >= 1.5)}")
    print(f"  host steal while timed: {steal_since(start)}")


def bench_lowrank(m, rank, repeats, rng):
    print(f"\nlowrank_update_, W {m} x {m} += U @ V, rank {rank}, factors 2% dense CSR, float32")
    W = rng.standard_normal((m, m)).astype(np.float32)
    U = sp.random(m, rank, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    V = sp.random(rank, m, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    U_dense, V_dense = U.toarray(), V.toarray()

    def dense_update():
        W.__iadd__(U_dense @ V_dense)

    x = np.ones(m, dtype=np.float32)
    pattern = (abs(U) @ abs(V)).tocsr()
    touched = pattern.nnz / m**2
    # Each 64-byte line of W holding a pattern entry is read and written back.
    lines = LineTouch.lines(pattern)
    line_touch = LineTouch.load()
    # The machine's rate for reading and writing back every line of W in
    # order: NumPy's in-place multiply (it releases the GIL), one thread per
    # band of rows.
    n_threads = effective_n_threads()
    bands = np.array_split(W, n_threads)
    start = steal_mark()
    with ThreadPoolExecutor(len(bands)) as pool:

        def in_place_pass():
            list(pool.map(lambda band: np.multiply(band, np.float32(1), out=band), bands))

        fns = [lambda: lowrank_update_(W, U, V), lambda: lowrank_update_(W, U, V, n_threads=1),
               dense_update, lambda: W @ x, in_place_pass]
        if line_touch is not None:
            fns.append(lambda: line_touch.touch(W, lines, n_threads))
        ours, ours_1, dense_t, sgemv_t, pass_t, *floor_t = times(fns, repeats)
    n_lines = lines[0].size
    traffic = 2 * 64 * n_lines / ours / 1e9
    pass_rate = 2 * W.nbytes / pass_t / 1e9
    target = 20
    needed_rate = traffic * ours / (dense_t / target)
    print(f"  ours {ours * 1e3:.2f} ms ({touched:.1%} of W in the product's pattern, on "
          f"{n_lines / (m * m // 16):.0%} of its cache lines: {traffic:.1f} GB/s read + written, "
          f"sgemv reads W at {W.nbytes / sgemv_t / 1e9:.1f} GB/s, an in-place pass over all "
          f"of W moves {pass_rate:.1f} GB/s read + written), dense "
          f"W += U @ V {dense_t * 1e3:.1f} ms, speed-up {dense_t / ours:.1f}x (>={target}) "
          f"{mark(dense_t / ours >= target)}; 1 thread {ours_1 * 1e3:.2f} ms "
          f"({ours_1 / ours:.2f}x as long); meeting {target}x needs {needed_rate:.1f} GB/s "
          f"on those lines, {needed_rate / pass_rate:.0%} of the in-place pass's rate; "
          f"host steal while timed: {steal_since(start)}")
    if floor_t:
        print(f"  floor: reading and writing back only those lines, one float each, in "
              f"address order (bench/_line_touch.py): {floor_t[0] * 1e3:.2f} ms, "
              f"{dense_t / floor_t[0]:.1f}x faster than dense (target {target}x); ours runs at "
              f"{floor_t[0] / ours:.0%} of the floor's speed")
    else:
        print("  floor: not measured (no C compiler with OpenMP found for bench/_line_touch.py)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one pass")
    add_cold_memory_option(parser)
    args = parser.parse_args(argv)
    info = config_info()
    print(f"subquad {info['subquad']}; OpenMP {'on' if info['openmp'] else 'OFF'}, "
          f"{info['n_threads']} threads; BLAS: "
          + ", ".join(f"{b['vendor']} {b['version']}" for b in info["blas"])
          + f"; {memory_warming()}")
    rng = np.random.default_rng(0)
    if args.quick:
        bench_threshold([1024, 2048], 128, 2, rng)
        bench_blocked_gemm(1024, 256, 2, rng)
        bench_lowrank(2048, 128, 2, rng)
    else:
        bench_threshold([4096, 8192, 16384], 128, 9, rng)
        bench_blocked_gemm(4096, 512, 9, rng)
        bench_lowrank(8192, 128, 9, rng)
    print(f"\n{steal_report()}")


if __name__ == "__main__":
    main()
