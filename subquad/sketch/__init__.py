"""Oblivious sketches: CountSketch, OSNAP, SRHT and the degree-q tensor
sketches TensorSketch and TensorSRHT (DESIGN §6).

Every sketch is built from ``(n_features, n_components, random_state)``, draws
its random tables once in the constructor, and sketches the rows of dense or
CSR matrices with ``transform``; the tensor sketches also sketch
``x_i ⊗ y_i`` with ``transform_pair`` without forming the Kronecker product.
"""

from ._sketches import OSNAP, SRHT, CountSketch, TensorSketch, TensorSRHT

__all__ = ["CountSketch", "OSNAP", "SRHT", "TensorSketch", "TensorSRHT"]
