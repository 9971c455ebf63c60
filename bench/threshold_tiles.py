"""threshold_matmul's Z tile size against how many samples share each row of W.

    python bench/threshold_tiles.py
    OMP_NUM_THREADS=1 python bench/threshold_tiles.py   # the same on one thread

With CSR input, each row segment of W is read once per tile and added into
the Z row of every sample of the row block that uses it: about
row_block * density samples. The engine picks a Z tile of half of L2 (at
least 512 KiB) when few samples share a row and it runs on more than one
thread (streaming W dominates, and longer row segments stream faster),
512 KiB in between, and 256 KiB from
`_MANY_USES_PER_W_ROW` samples on (the read-modify-write of Z dominates).
This script times, in one run, each size forced in turn (twice the
largest, then the engine's sizes), the engine's own choice and
scipy.sparse + threshold, for float32 CSR activations, on all threads
(2 on the reference machine) unless OMP_NUM_THREADS says fewer, about 2%
of the outputs active. The sparse-engine issue's case (128 rows, 2%) also
runs at its widths of 8192 and 16384.
"""

import numpy as np

import subquad.linalg.threshold as threshold_module
from subquad import effective_n_threads
from subquad.linalg import threshold_matmul

from sparse_engine import sparse_rows, times

SIZES = (1024, 2048, 4096)
CASES = [  # (rows of H, nonzeros per row of H, widths m = m_in = m_out)
    (128, 0.02, SIZES + (8192, 16384)), (256, 0.02, SIZES), (128, 0.035, SIZES),
    (256, 0.035, SIZES), (256, 0.1, SIZES), (512, 0.1, SIZES)]
# The engine's tile sizes, by how many samples share a row of W.
ENGINE_TILES = ("_TILE_BYTES_FEW_USES", "_TILE_BYTES", "_TILE_BYTES_MANY_USES")
# Twice the engine's largest size, then its distinct sizes, forced in turn.
TILES = sorted({2 * threshold_module._TILE_BYTES_FEW_USES}
               | {getattr(threshold_module, name) for name in ENGINE_TILES}, reverse=True)
REPEATS = 7


def forced(tile_bytes, H, W, b):
    """threshold_matmul with every tile size set to `tile_bytes`."""
    def run():
        saved = [getattr(threshold_module, name) for name in ENGINE_TILES]
        for name in ENGINE_TILES:
            setattr(threshold_module, name, tile_bytes)
        try:
            return threshold_matmul(H, W, b)
        finally:
            for name, size in zip(ENGINE_TILES, saved):
                setattr(threshold_module, name, size)
    return run


def main():
    rng = np.random.default_rng(0)
    print(f"float32, {effective_n_threads()} threads; times in ms, best of {REPEATS} "
          f"interleaved; uses = samples of a row block per row of W; "
          f"switches at {threshold_module._FEW_USES_PER_W_ROW} and "
          f"{threshold_module._MANY_USES_PER_W_ROW} uses; best = fastest forced size")
    labels = [f"{t // 1024} KiB" for t in TILES]
    print(f"{'n':>4} {'dens':>5} {'m':>5} {'uses':>5} "
          + " ".join(f"{label:>8}" for label in labels)
          + f" {'chosen':>7} {'scipy':>7} | {'best':>8} {'chosen/best':>11} {'scipy/chosen':>12}")
    for n, density, sizes in CASES:
        for m in sizes:
            W = rng.standard_normal((m, m)).astype(np.float32)
            H = sparse_rows(rng, n, m, density)
            b = float(np.quantile(H[:8] @ W, 0.98))
            uses = threshold_module._uses_per_w_row(H)
            *tiles, chosen, scipy_t = times(
                [forced(tile, H, W, b) for tile in TILES]
                + [lambda: threshold_matmul(H, W, b), lambda: np.maximum(H @ W - b, 0)],
                REPEATS)
            best = int(np.argmin(tiles))
            print(f"{n:>4} {density:>5.3f} {m:>5} {uses:>5.1f} "
                  + " ".join(f"{t * 1e3:>8.2f}" for t in tiles)
                  + f" {chosen * 1e3:>7.2f} {scipy_t * 1e3:>7.2f} | {labels[best]:>8} "
                  f"{chosen / tiles[best]:>11.2f} {scipy_t / chosen:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
