"""Exact queries for the neurons that fire: `ActiveNeuronIndex`."""

from ._active_neuron_index import ActiveNeuronIndex

__all__ = ["ActiveNeuronIndex"]
