"""Wide shifted-ReLU networks trained with sparse steps (scikit-learn API)."""

from ._sparse_mlp import DivergenceError, SparseMLPClassifier, SparseMLPRegressor

__all__ = ["SparseMLPClassifier", "SparseMLPRegressor", "DivergenceError"]
