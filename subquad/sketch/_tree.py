"""Binary-tree sketches of ``x^{⊗j}`` for one or several degrees j (DESIGN §6).

Leaves are independent sparse sketches of x (or, for the shared-leaf variant,
of one sparse sketch ``T x``); every internal node is a degree-2 TensorSRHT
that merges two children of width ``width`` into one. Aligned blocks are
computed once: node ``a`` of level ``l`` sketches ``x^{⊗2^l}`` from leaves
``a·2^l … (a+1)·2^l − 1``. Degree ``j`` is read off its binary expansion by
merging the blocks ``[0, 2^{l1})``, ``[2^{l1}, 2^{l1} + 2^{l2})``, … with
``popcount(j) − 1`` extra nodes. The blocks are disjoint, hence independent,
so every degree's sketch is unbiased, and no ``e_1`` padding is needed.
Degrees share leaves and blocks; their sketches are then correlated, which
leaves sums of them unbiased.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils.extmath import row_norms

from ._base import SRHTFactor, osnap_table, row_chunks, unit_scale


class _Node:
    """Degree-2 TensorSRHT ``(u, v) ↦ (1/sqrt(s)) · P (H D_1 u ⊗ H D_2 v)``."""

    def __init__(self, n_in, n_out, rng):
        def sample(size):
            return rng.randint(0, size, size=n_out)

        self.left = SRHTFactor(n_in, sample, rng)
        self.right = SRHTFactor(n_in, sample, rng)
        self.scale = 1.0 / np.sqrt(n_out)

    def apply(self, u, v, out, n_threads):
        ones = unit_scale(u.shape[0], u.dtype)
        self.left.apply(u, ones, 0.0, self.scale, out, False, n_threads)
        self.right.apply(v, ones, 0.0, 1.0, out, True, n_threads)


def _blocks(degree):
    """(level, index) of the aligned blocks whose concatenation is ``degree``
    leaves, largest first."""
    blocks, offset = [], 0
    for level in range(degree.bit_length() - 1, -1, -1):
        if degree >> level & 1:
            blocks.append((level, offset >> level))
            offset += 1 << level
    return blocks


class TensorTree:
    """Sketches of ``x̃^{⊗j}`` for every degree j in `outputs`.

    Parameters
    ----------
    n_features : int
        Dimension of ``x̃`` (including a bias coordinate if one is used).
    width : int
        Width of the leaves and internal nodes.
    outputs : dict of int to int
        Output dimension for each degree ``j >= 1``.
    rng : RandomState
    leaf_density : int
        Nonzeros per column of the leaf OSNAPs.
    shared_dim : int or None
        If set and smaller than `n_features`, one OSNAP ``T`` (density
        `leaf_density`) maps x̃ to `shared_dim` coordinates and the leaves
        sketch ``T x̃``: the input is read once whatever the degree.
    """

    def __init__(self, n_features, width, outputs, rng, leaf_density, shared_dim=None):
        self.width = width
        self.n_leaves = n_leaves = max(outputs)
        density = min(leaf_density, width)
        if shared_dim is not None and shared_dim < n_features:
            self.shared = osnap_table(n_features, shared_dim, min(leaf_density, shared_dim),
                                      rng)
            self.shared_dim = shared_dim
            leaf_in = shared_dim
        else:
            self.shared = None
            self.shared_dim = 0
            leaf_in = n_features
        self.leaves = osnap_table(leaf_in, width, density, rng, n_copies=n_leaves)
        self.levels = []
        n_nodes = n_leaves // 2
        while n_nodes >= 1:
            self.levels.append([_Node(width, width, rng) for _ in range(n_nodes)])
            n_nodes //= 2
        self.plans = {}
        for degree, n_out in sorted(outputs.items()):
            blocks = _blocks(degree)
            merges = [_Node(width, n_out if k == len(blocks) - 1 else width, rng)
                      for k in range(1, len(blocks))]
            reduce = None
            if not merges and n_out != width:
                reduce = osnap_table(width, n_out, 1, rng)
            self.plans[degree] = (blocks, merges, reduce)

    def transform(self, X, row_scale, bias, outs, n_threads):
        """Write the sketch of degree j of every row of ``x̃ = [row_scale · x,
        bias]`` into ``outs[j]`` (arrays of shape (n_samples, outputs[j]))."""
        per_row = 2 * self.n_leaves * self.width + self.shared_dim
        chunks = list(row_chunks(X.shape[0], per_row))

        def run(chunk, threads):
            self._transform_rows(X[chunk], row_scale[chunk], bias,
                                 {j: out[chunk] for j, out in outs.items()}, threads)

        if n_threads > 1 and len(chunks) > 1:
            # A tree runs dozens of short kernels per chunk. Threads that take
            # whole chunks never wait for each other, whereas an OpenMP team
            # per kernel meets at a barrier after each one, which stalls
            # whenever another process holds a core.
            with ThreadPoolExecutor(min(n_threads, len(chunks))) as pool:
                list(pool.map(lambda chunk: run(chunk, 1), chunks))
        else:
            for chunk in chunks:
                run(chunk, n_threads)

    def _transform_rows(self, source, scale, b, outs, n_threads):
        n, w, n_leaves, dtype = source.shape[0], self.width, self.n_leaves, source.dtype
        if self.shared is not None:
            reduced = np.empty((n, self.shared_dim), dtype=dtype)
            self.shared.apply(source, scale, b, reduced, n_threads)
            # Every leaf sees the same T x̃, so an error of T in ‖x̃‖ enters
            # the degree-q sketch q times over, in the same direction.
            # Restoring the norm removes that error (kernel values of
            # x with itself become exact); only T's angular error remains.
            norms = np.sqrt(scale.astype(np.float64) ** 2 * row_norms(source, squared=True)
                            + float(b) ** 2)
            sketched = np.sqrt(row_norms(reduced, squared=True).astype(np.float64))
            ratio = np.divide(norms, sketched, out=np.zeros_like(norms), where=sketched > 0)
            source, scale, b = reduced, ratio.astype(dtype), 0.0
        leaves = np.empty((n, n_leaves * w), dtype=dtype)
        self.leaves.apply(source, scale, b, leaves, n_threads)
        levels = [leaves]
        for nodes in self.levels:
            below = levels[-1]
            here = np.empty((n, len(nodes) * w), dtype=dtype)
            for a, node in enumerate(nodes):
                node.apply(below[:, 2 * a * w:(2 * a + 1) * w],
                           below[:, (2 * a + 1) * w:(2 * a + 2) * w],
                           here[:, a * w:(a + 1) * w], n_threads)
            levels.append(here)
        for degree, (blocks, merges, reduce) in self.plans.items():
            out = outs[degree]
            level, index = blocks[0]
            acc = levels[level][:, index * w:(index + 1) * w]
            for node, (level, index) in zip(merges, blocks[1:]):
                last = node is merges[-1]
                target = out if last else np.empty((n, w), dtype=dtype)
                node.apply(acc, levels[level][:, index * w:(index + 1) * w], target, n_threads)
                acc = target
            if reduce is not None:
                reduce.apply(acc, unit_scale(n, dtype), 0.0, out, n_threads)
            elif not merges:
                out[...] = acc
