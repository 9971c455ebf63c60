"""Sparse linear algebra for wide shifted-ReLU layers.

* `threshold_matmul` -- fused ``max(H @ W + bias - b, 0)`` straight into CSR.
* `sparse_matmul` -- dense ``H @ W`` for CSR ``H`` on the same engine.
* `blocked_gemm` -- tiled, parallel ``alpha * A[:, idx] @ B[idx] + beta * C``.
* `lowrank_update_` -- in-place ``W += alpha * U @ V`` touching only the
  product's pattern when a factor is sparse.
* `LowRankWeight` -- ``W_base + U @ V`` kept factored, merged lazily.
"""

from .lowrank import LowRankWeight, lowrank_update_
from .threshold import sparse_matmul, threshold_matmul
from .tiled_gemm import blocked_gemm

__all__ = ["threshold_matmul", "sparse_matmul", "blocked_gemm", "lowrank_update_", "LowRankWeight"]
