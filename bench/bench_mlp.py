"""pytest-benchmark cases for one training step (`pytest bench/bench_mlp.py`).

`bench/mlp_scaling.py` prints the full width sweep with slopes and a plot.
"""

import numpy as np
import pytest
from mlp_scaling import digits

from subquad import SparseMLPClassifier, effective_n_threads


@pytest.mark.parametrize("engine", ["sparse", "dense"])
@pytest.mark.parametrize("width", [2048, 4096])
@pytest.mark.parametrize("batch_size", [8, 128])
def test_training_step(record, engine, width, batch_size):
    X_train, _, y_train, _ = digits()
    clf = SparseMLPClassifier(hidden_layer_sizes=(width, width), engine=engine, max_iter=1,
                              random_state=0)
    clf.partial_fit(X_train[:256], y_train[:256], classes=np.arange(10))
    network = clf._network
    state = clf._training_state(network, continuing=True)
    X = clf._network_input(X_train[:batch_size])
    Y = clf._prepare_targets(y_train[:batch_size], True)
    bench = record(f"training step width={width} batch={batch_size}", dtype=np.float32,
                   n_threads=effective_n_threads(), width=width, batch=batch_size, engine=engine)
    bench(clf._step, network, X, Y, state)
