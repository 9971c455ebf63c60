"""threshold_matmul's Z tile size against how many samples share each row of W.

    python bench/threshold_tiles.py

With CSR input, each row segment of W is read once per tile and added into
the Z row of every sample of the row block that uses it: about
row_block * density samples. The engine picks a Z tile of 1 MiB when few
samples share a row (streaming W dominates; wide tiles read it in long
segments) and of 256 KiB from `_MANY_USES_PER_W_ROW` samples on (the
read-modify-write of Z dominates). This script times, in one run, both
tile sizes forced, the engine's own choice and scipy.sparse + threshold,
for float32 CSR activations, 2 threads, about 2% of the outputs active.
"""

import numpy as np

import subquad.linalg.threshold as threshold_module
from subquad import effective_n_threads
from subquad.linalg import threshold_matmul

from _timing import best_times
from sparse_engine import sparse_rows

CASES = [  # (rows of H, nonzeros per row of H)
    (128, 0.02), (256, 0.02), (128, 0.035), (256, 0.035), (256, 0.1), (512, 0.1)]
SIZES = (1024, 2048, 4096)
# The engine's two sizes, forced in turn.
TILES = (threshold_module._TILE_BYTES, threshold_module._TILE_BYTES_MANY_USES)
REPEATS = 5


def forced(tile_bytes, H, W, b):
    """threshold_matmul with both tile sizes set to `tile_bytes`."""
    def run():
        saved = threshold_module._TILE_BYTES, threshold_module._TILE_BYTES_MANY_USES
        threshold_module._TILE_BYTES = threshold_module._TILE_BYTES_MANY_USES = tile_bytes
        try:
            return threshold_matmul(H, W, b)
        finally:
            threshold_module._TILE_BYTES, threshold_module._TILE_BYTES_MANY_USES = saved
    return run


def main():
    rng = np.random.default_rng(0)
    print(f"float32, {effective_n_threads()} threads; times in ms, best of {REPEATS} "
          f"interleaved; uses = samples of a row block per row of W; "
          f"switch at {threshold_module._MANY_USES_PER_W_ROW} uses")
    big_label, small_label = (f"{t // 1024} KiB" for t in TILES)
    print(f"{'n':>4} {'dens':>5} {'m':>5} {'uses':>5} {big_label:>8} {small_label:>8} "
          f"{'chosen':>7} {'scipy':>7} | {'big/small':>9} {'chosen/best':>11} {'scipy/chosen':>12}")
    for n, density in CASES:
        for m in SIZES:
            W = rng.standard_normal((m, m)).astype(np.float32)
            H = sparse_rows(rng, n, m, density)
            b = float(np.quantile(H[:8] @ W, 0.98))
            uses = threshold_module._uses_per_w_row(H)
            (big, _), (small, _), (chosen, _), (scipy_t, _) = best_times(
                [forced(TILES[0], H, W, b), forced(TILES[1], H, W, b),
                 lambda: threshold_matmul(H, W, b), lambda: np.maximum(H @ W - b, 0)],
                REPEATS)
            print(f"{n:>4} {density:>5.3f} {m:>5} {uses:>5.1f} {big * 1e3:>8.2f} "
                  f"{small * 1e3:>8.2f} {chosen * 1e3:>7.2f} {scipy_t * 1e3:>7.2f} | "
                  f"{big / small:>9.2f} {chosen / min(big, small):>11.2f} "
                  f"{scipy_t / chosen:>12.2f}")


if __name__ == "__main__":
    main()
