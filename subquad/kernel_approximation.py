"""Random features for polynomial, arc-cosine and neural tangent kernels.

scikit-learn transformers in the mould of
``sklearn.kernel_approximation.PolynomialCountSketch``: the random sketch is
drawn in ``fit`` (which only looks at the number of features), ``transform``
is deterministic, float32 input gives float32 features, and inner products of
the features approximate the kernel (DESIGN §6).
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.extmath import row_norms
from sklearn.utils.validation import check_is_fitted, validate_data

from ._threads import effective_n_threads
from .kernels import (_check_int, arccos_taylor_coefficients, kappa0, kappa1, ntk_of_cosine,
                      ntk_taylor_coefficients)
from .linalg._validation import check_bool
from .sketch._base import next_power_of_two
from .sketch._sketches import TensorSketch, TensorSRHT
from .sketch._tree import TensorTree

__all__ = ["PolynomialSketch", "ArcCosineSketch", "NTKSketch"]

METHODS = ("tensorsketch", "tensor_srht", "tree", "shared_leaf", "auto")

# Leaves of the trees are CountSketches: in a prototype measurement (clustered
# unit rows, d=65536, degrees 4 to 32, 3-6 seeds) OSNAP leaves of density 4
# cost 3-4x more with errors within the spread over seeds.
LEAF_DENSITY = 1
# Up to this degree TensorSketch (q CountSketches and FFTs) is cheapest, and
# its error matches scikit-learn's PolynomialCountSketch, which it equals in
# distribution; beyond it the tree's error grows more slowly with the degree.
AUTO_TENSORSKETCH_MAX_DEGREE = 4


def shared_leaf_dim(n_components):
    """Width of the shared sketch ``T`` of the shared-leaf tree.

    Four times the output width kept the shared-leaf error within 30% of
    the tree's up to degree 32 (bench/kernel_approximation.py; the norms
    are restored, see ``TensorTree``). It does not grow with the degree, so
    neither does the leading ``nnz(X)`` term.
    """
    return next_power_of_two(4 * n_components)


def _check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative real number, got {value!r}")
    return float(value)


class _SketchTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Validation and tags shared by the kernel sketches."""

    def _validate(self, X, reset):
        return validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32],
                             order="C", reset=reset)

    @property
    def _n_features_out(self):
        return self.n_components

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class PolynomialSketch(_SketchTransformer):
    """Random features for the polynomial kernel ``(gamma <x, y> + coef0)^degree``.

    The kernel is made homogeneous by appending ``sqrt(coef0)`` to every row
    (never materialised) and ``x̃^{⊗degree}`` is sketched to
    ``n_components`` coordinates, so that ``<φ(x), φ(y)>`` estimates the
    kernel.

    Parameters
    ----------
    degree : int, default=2
        Degree ``q >= 1`` of the kernel.
    gamma : float, default=1.0
        Non-negative scale of the inner product.
    coef0 : float, default=0.0
        Non-negative constant term.
    n_components : int, default=100
        Number of features.
    method : {'auto', 'tensorsketch', 'tensor_srht', 'tree', 'shared_leaf'}, default='auto'
        'tensorsketch': ``q`` CountSketches multiplied in the Fourier domain
        (Pham and Pagh), unbiased, cost ``q · nnz(X) + q · s log s`` per row.
        'tensor_srht': each feature is a product of ``q`` coordinates of
        independent randomised Hadamard transforms, unbiased, cost
        ``q · d log d``; its variance grows exponentially with ``q`` for
        correlated inputs. 'tree': ``q`` independent CountSketch leaves
        merged by degree-2 TensorSRHTs up a binary tree (Ahle et al.,
        SODA 2020), unbiased, cost ``q · nnz(X) + q · s log s``.
        'shared_leaf': one CountSketch ``T`` of width ``4 · n_components``
        applied once, its output rescaled to the input's norm, then the tree
        on ``T x̃`` (our reading of Song, Woodruff, Yu and Zhang, ICML 2021):
        cost ``nnz(X) + q · (4 s + s log s)``, so the ``nnz(X)`` term no
        longer grows with ``q``; biased by ``T``'s angular distortion, which
        is small against the sketch's own error. It equals 'tree' when the
        input has at most ``4 · n_components`` features. 'auto':
        'tensorsketch' up to degree 4, 'shared_leaf' above.
    random_state : int, RandomState instance or None, default=None
        Seeds the sketch drawn in ``fit``.
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.

    Attributes
    ----------
    method_ : str
        The method used ('auto' resolved).
    sketch_ : object
        The random sketch drawn in ``fit``.
    n_features_in_ : int

    See Also
    --------
    sklearn.kernel_approximation.PolynomialCountSketch

    Examples
    --------
    >>> import numpy as np
    >>> from subquad.kernel_approximation import PolynomialSketch
    >>> X = np.random.default_rng(0).standard_normal((4, 3))
    >>> PolynomialSketch(degree=3, n_components=64, random_state=0).fit_transform(X).shape
    (4, 64)
    """

    def __init__(self, degree=2, gamma=1.0, coef0=0.0, n_components=100, method="auto",
                 random_state=None, n_threads=None):
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.n_components = n_components
        self.method = method
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X, y=None):
        """Draw the sketch for inputs with ``X.shape[1]`` features.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        X = self._validate(X, reset=True)
        degree = _check_int(self.degree, "degree", 1)
        n_components = _check_int(self.n_components, "n_components", 1)
        _check_real(self.gamma, "gamma")
        coef0 = _check_real(self.coef0, "coef0")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        effective_n_threads(self.n_threads)
        rng = check_random_state(self.random_state)
        n_features = X.shape[1] + (coef0 > 0)
        method = self.method
        if method == "auto":
            method = ("tensorsketch" if degree <= AUTO_TENSORSKETCH_MAX_DEGREE
                      else "shared_leaf")
        self.method_ = method
        if method == "tensorsketch":
            self.sketch_ = TensorSketch(n_features, n_components, rng, degree=degree)
        elif method == "tensor_srht":
            self.sketch_ = TensorSRHT(n_features, n_components, rng, degree=degree)
        else:
            shared = shared_leaf_dim(n_components) if method == "shared_leaf" else None
            self.sketch_ = TensorTree(n_features, n_components, {degree: n_components}, rng,
                                      LEAF_DENSITY, shared)
        return self

    def transform(self, X):
        """Features whose inner products approximate the kernel.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            float32 for float32 input, float64 otherwise.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        n_threads = effective_n_threads(self.n_threads)
        scale = np.full(X.shape[0], np.sqrt(self.gamma), dtype=X.dtype)
        bias = np.sqrt(self.coef0)
        if isinstance(self.sketch_, TensorTree):
            out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
            self.sketch_.transform(X, scale, bias, {self.degree: out}, n_threads)
            return out
        return self.sketch_._transform(X, scale, bias, n_threads)


def _lump_tail(coefs, at_one, at_minus_one):
    """Truncated series whose odd and even tails beyond the truncation are
    added to the highest odd and even coefficients kept.

    The result stays a non-negative series (hence a positive definite dot
    product kernel), is exact at ``t = ±1`` (so on the diagonal of the
    kernel matrix) and is never further from the kernel than plain
    truncation for ``|t| <= 1``.
    """
    coefs = coefs.copy()
    odd_total = 0.5 * (at_one - at_minus_one)
    even_total = 0.5 * (at_one + at_minus_one)
    for parity, total in ((1, odd_total), (0, even_total)):
        kept = coefs[parity::2]
        if kept.size:
            kept[-1] += max(0.0, total - kept.sum())
    return coefs


class _DotProductSketch(_SketchTransformer):
    """Sketch of ``k(x, y) = (‖x‖ ‖y‖)^p Σ_j c_j t^j`` with ``t`` the cosine.

    The constant term is one exact feature (when ``n_components >= 2``).
    With degree sampling the other ``N = n_components − 1`` features are split among degrees by a
    multinomial draw with probabilities ``c_j / A`` (``A = Σ_{j>=1} c_j``);
    degree ``j`` drawn ``N_j`` times is a tree sketch of ``x̂^{⊗j}`` with
    ``N_j`` outputs, weighted by ``sqrt(A N_j / N)``, which makes the
    estimate unbiased for the truncated series. Without it, every degree
    gets an equal share of the features and weight ``sqrt(c_j)``.
    """

    _norm_power = 1

    def _coefficients(self):
        raise NotImplementedError

    def fit(self, X, y=None):
        """Draw the degrees and the sketches for inputs with ``X.shape[1]`` features.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        X = self._validate(X, reset=True)
        n_components = _check_int(self.n_components, "n_components", 1)
        _check_int(self.max_degree, "max_degree", 1)
        check_bool(self.degree_sampling, "degree_sampling")
        effective_n_threads(self.n_threads)
        rng = check_random_state(self.random_state)
        coefs = self._coefficients()
        self.coefficients_ = coefs
        # The constant term is one exact feature unless there is only one.
        low = 1 if n_components >= 2 or not self.degree_sampling else 0
        n_free = n_components - low
        degrees = np.flatnonzero(coefs[low:] > 0) + low
        counts = np.zeros(coefs.size, dtype=np.int64)
        weights = np.zeros(coefs.size)
        counts[0], weights[0] = low, np.sqrt(coefs[0])
        if self.degree_sampling:
            total = coefs[low:].sum()
            counts[low:] = rng.multinomial(n_free, coefs[low:] / total)
            weights[low:] = np.sqrt(total * counts[low:] / n_free)
        else:
            if n_free < degrees.size:
                raise ValueError(
                    f"n_components must be at least {degrees.size + 1} to sketch every "
                    f"degree up to max_degree={self.max_degree}, got {n_components}")
            counts[degrees] = n_free // degrees.size
            counts[degrees[: n_free % degrees.size]] += 1
            weights[1:] = np.sqrt(coefs[1:])
        self.degree_counts_ = counts
        self._weights = weights
        outputs = {int(j): int(counts[j]) for j in range(1, coefs.size) if counts[j] > 0}
        self.sketch_ = None
        if outputs:
            self.sketch_ = TensorTree(X.shape[1], n_components, outputs, rng, LEAF_DENSITY,
                                      shared_leaf_dim(n_components))
        return self

    def transform(self, X):
        """Features whose inner products approximate the kernel.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            float32 for float32 input, float64 otherwise.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        norms = np.sqrt(row_norms(X, squared=True).astype(np.float64))
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        counts = self.degree_counts_
        # x̂^{⊗0} = 1 sketched to counts[0] coordinates of 1/sqrt(counts[0]).
        out[:, :counts[0]] = self._weights[0] / np.sqrt(max(1, counts[0]))
        blocks, start = {}, counts[0]
        for degree in range(1, counts.size):
            if counts[degree]:
                blocks[degree] = out[:, start:start + counts[degree]]
                start += counts[degree]
        if blocks:
            self.sketch_.transform(X, inverse.astype(X.dtype), 0.0, blocks,
                                   effective_n_threads(self.n_threads))
        for degree, block in blocks.items():
            block *= self._weights[degree]
        if self._norm_power:
            out *= norms.astype(X.dtype)[:, None]
        return out


class ArcCosineSketch(_DotProductSketch):
    """Random features for the arc-cosine kernel of Cho and Saul.

    ``k(x, y) = (‖x‖ ‖y‖)^order κ_order(t)``, see
    :func:`subquad.kernels.arccos_kernel`. ``κ`` is expanded in powers of the
    cosine ``t`` up to `max_degree` (the tails are folded into the last odd
    and even terms, so the approximation is exact at ``t = ±1``); degrees are
    drawn with probability proportional to their coefficients and only those
    are sketched, by tensor sketch trees sharing their leaves.

    Parameters
    ----------
    order : {0, 1}, default=0
        0: step units, ``κ0(t) = 1 − arccos(t)/π``. 1: ReLU units.
    n_components : int, default=100
        Number of features; with two or more, one carries the constant term
        exactly.
    max_degree : int, default=16
        Truncation degree of the series.
    degree_sampling : bool, default=True
        If False, sketch every degree up to `max_degree` with an equal share
        of the features (the baseline that degree sampling improves on).
    random_state : int, RandomState instance or None, default=None
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.

    Attributes
    ----------
    coefficients_ : ndarray of shape (max_degree + 1,)
        Series coefficients used (tails folded in).
    degree_counts_ : ndarray of shape (max_degree + 1,)
        Number of features given to each degree.
    sketch_ : object
        The tree sketch.
    n_features_in_ : int
    """

    def __init__(self, order=0, n_components=100, max_degree=16, degree_sampling=True,
                 random_state=None, n_threads=None):
        self.order = order
        self.n_components = n_components
        self.max_degree = max_degree
        self.degree_sampling = degree_sampling
        self.random_state = random_state
        self.n_threads = n_threads

    @property
    def _norm_power(self):
        return self.order

    def _coefficients(self):
        if self.order not in (0, 1) or isinstance(self.order, bool):
            raise ValueError(f"order must be 0 or 1, got {self.order!r}")
        kappa = kappa0 if self.order == 0 else kappa1
        return _lump_tail(arccos_taylor_coefficients(self.order, self.max_degree),
                          float(kappa(1.0)), float(kappa(-1.0)))


class NTKSketch(_DotProductSketch):
    """Random features for the neural tangent kernel of a ReLU network.

    ``k(x, y) = ‖x‖ ‖y‖ Θ_L(t)``, see :func:`subquad.kernels.ntk_kernel`.
    The series of ``Θ_L`` in the cosine decays only like ``j^{-3/2}``, so
    degrees are drawn with probability proportional to their coefficients
    and only those are sketched (tails beyond `max_degree` folded into the
    last odd and even terms).

    Parameters
    ----------
    n_layers : int, default=1
        Number of hidden layers ``L >= 0``.
    n_components : int, default=100
        Number of features; with two or more, one carries the constant term
        exactly.
    max_degree : int, default=16
        Truncation degree of the series.
    degree_sampling : bool, default=True
        If False, sketch every degree up to `max_degree` with an equal share
        of the features.
    random_state : int, RandomState instance or None, default=None
    n_threads : int or None, default=None
        See ``subquad.effective_n_threads``.

    Attributes
    ----------
    coefficients_ : ndarray of shape (max_degree + 1,)
    degree_counts_ : ndarray of shape (max_degree + 1,)
    sketch_ : object
    n_features_in_ : int
    """

    def __init__(self, n_layers=1, n_components=100, max_degree=16, degree_sampling=True,
                 random_state=None, n_threads=None):
        self.n_layers = n_layers
        self.n_components = n_components
        self.max_degree = max_degree
        self.degree_sampling = degree_sampling
        self.random_state = random_state
        self.n_threads = n_threads

    def _coefficients(self):
        coefs = ntk_taylor_coefficients(self.n_layers, self.max_degree)
        return _lump_tail(coefs, float(ntk_of_cosine(1.0, self.n_layers)),
                          float(ntk_of_cosine(-1.0, self.n_layers)))
