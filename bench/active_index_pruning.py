"""How much of its work the tree's bounds leave to do, against perfect bounds.

    python bench/active_index_pruning.py                  # dims 4 8, leaves 64 128
    python bench/active_index_pruning.py --dims 8 --leaf-sizes 16 32 64 128 256

Same data as bench/active_index.py: 2**20 standard normal float32 neurons,
standard normal queries, the threshold b at the 99% quantile of sampled
inner products. For each leaf size the tree is built and, over
``--queries`` queries, these percentages of the neurons are printed:

* active: neurons with <w, x> > b;
* tree: evaluated by the query (``last_query_stats_``);
* box, ball, min: in leaves whose upper bound on <w, x> exceeds b, with the
  leaf's bounding box, its ball, and the smaller of the two (the test the
  tree applies, without the rounding slack; the walk also prunes at inner
  nodes, whose bounds are looser, so "min" is what the walk would
  evaluate if it tested every leaf);
* oracle: in leaves holding at least one active neuron, what any bound
  on these leaves evaluates at best.

Two costlier convex bounds, which the tree does not use, show whether a
better shape could close the gap:

* box∩ball: the box and the ball intersected, by Lagrangian duality: for
  any l > 0, ``<c, x> + l R² + sum_j max over [lo_j, hi_j] of
  (w_j x_j - l (w_j - c_j)²)`` bounds <w, x> on that intersection; the
  smallest over a grid of 40 values of l is taken;
* ellipsoid: the ellipsoid of the leaf's covariance C scaled to hold all
  its neurons, ``<m, x> + sqrt(k xᵀ C x)`` (m their mean, k their largest
  squared Mahalanobis distance from it);
* convex: the smallest of box, ball, box∩ball and ellipsoid.

The last columns are how far "min" (the tree's test) and "convex" are
from perfect on the same leaves. Inner products are computed in float64
here.
"""

import argparse

import numpy as np

from subquad import ActiveNeuronIndex


def leaf_fractions(index, X, threshold):
    """Fractions of the neurons in leaves selected by each bound, and by the
    leaves' actual largest inner product, averaged over the queries."""
    tree = index._tree
    n, dim = index.W_.shape
    leaves = tree["leaves"]
    start, end = tree["nodes"][leaves, 0], tree["nodes"][leaves, 1]
    sizes = end - start
    bounds = tree["bounds"][leaves]
    centre, lo, hi = bounds[:, :dim], bounds[:, dim:2 * dim], bounds[:, 2 * dim:3 * dim]
    radius = bounds[:, 3 * dim]
    Q = X.astype(np.float64)
    ball = Q @ centre.T + np.linalg.norm(Q, axis=1)[:, None] * radius
    box = np.maximum(lo[None] * Q[:, None], hi[None] * Q[:, None]).sum(axis=2)
    neurons = index.W_[tree["order"]].astype(np.float64)
    values = Q @ neurons.T
    largest = np.maximum.reduceat(values, start, axis=1)
    intersection = box_ball_bound(Q, centre, lo, hi, radius)
    ellipsoid = ellipsoid_bound(Q, neurons, start, end)

    def share(upper):
        return float(((upper > threshold) * sizes).sum(axis=1).mean() / n)

    return {"active": float((values > threshold).mean()), "box": share(box),
            "ball": share(ball), "min": share(np.minimum(box, ball)),
            "box∩ball": share(intersection), "ellipsoid": share(ellipsoid),
            "convex": share(np.minimum.reduce([box, ball, intersection, ellipsoid])),
            "oracle": share(largest)}


def box_ball_bound(Q, centre, lo, hi, radius):
    """Upper bounds of <w, x> over each leaf's box ∩ ball (queries x leaves):
    the smallest Lagrangian dual bound over a grid of multipliers l, from
    l = |x| / 2R (where the ball alone is tight) scaled by 1/20 ... 20."""
    norms = np.linalg.norm(Q, axis=1)[:, None]
    R = np.maximum(radius, 1e-300)[None]
    best = np.full((Q.shape[0], centre.shape[0]), np.inf)
    for scale in np.geomspace(0.05, 20.0, 40):
        multiplier = scale * np.maximum(norms, 1e-300) / (2 * R)
        w = np.clip(centre[None] + Q[:, None, :] / (2 * multiplier[..., None]), lo[None], hi[None])
        bound = ((w * Q[:, None, :]).sum(axis=2)
                 - multiplier * ((w - centre[None]) ** 2).sum(axis=2) + multiplier * R ** 2)
        np.minimum(best, bound, out=best)
    return best


def ellipsoid_bound(Q, neurons, start, end):
    """Upper bounds of <w, x> over each leaf's enclosing covariance
    ellipsoid (queries x leaves)."""
    dim = neurons.shape[1]
    bounds = np.empty((Q.shape[0], len(start)))
    for leaf, (s, e) in enumerate(zip(start, end)):
        points = neurons[s:e]
        mean = points.mean(axis=0)
        # The ridge keeps C invertible for leaves of fewer than dim + 1
        # distinct neurons; k is measured with the same C, so it still encloses them.
        C = np.cov(points.T, bias=True).reshape(dim, dim) + 1e-9 * np.eye(dim)
        offsets = points - mean
        k = np.max(np.einsum("ij,ij->i", offsets @ np.linalg.inv(C), offsets))
        bounds[:, leaf] = Q @ mean + np.sqrt(k * np.einsum("qi,ij,qj->q", Q, C, Q))
    return bounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--leaf-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--active", type=float, default=0.01, help="target active fraction")
    args = parser.parse_args()
    n_neurons = 1 << 20
    rng = np.random.default_rng(0)
    print(f"n_neurons={n_neurons} queries={args.queries} float32, % of the neurons")
    header = (f"{'dim':>4} {'leaf':>5} {'active':>7} {'tree':>6} {'box':>6} {'ball':>6} "
              f"{'min':>6} {'box∩ball':>8} {'ellipsoid':>9} {'convex':>6} {'oracle':>7} | "
              f"{'min/oracle':>10} {'convex/oracle':>13}")
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        W = rng.standard_normal((n_neurons, dim)).astype(np.float32)
        X = rng.standard_normal((args.queries, dim)).astype(np.float32)
        threshold = float(np.quantile(X[:256] @ W[:8192].T, 1 - args.active))
        for leaf_size in args.leaf_sizes:
            index = ActiveNeuronIndex(W, algorithm="tree", leaf_size=leaf_size)
            index.query(X, threshold)
            tree = index.last_query_stats_["evaluated_fraction"]
            f = leaf_fractions(index, X, threshold)
            print(f"{dim:>4} {leaf_size:>5} {f['active']:>7.2%} {tree:>6.1%} {f['box']:>6.1%} "
                  f"{f['ball']:>6.1%} {f['min']:>6.1%} {f['box∩ball']:>8.1%} "
                  f"{f['ellipsoid']:>9.1%} {f['convex']:>6.1%} {f['oracle']:>7.1%} | "
                  f"{f['min'] / f['oracle']:>10.2f} {f['convex'] / f['oracle']:>13.2f}")


if __name__ == "__main__":
    main()
