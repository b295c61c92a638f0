"""The da4ml side of `forma bench export` computes exactly what QONNX computes on the test set."""
from pathlib import Path

import numpy as np
import pytest

from forma.errors import FormaError
from forma.generators.backends import load_inputs
from forma.generators.qonnx_import import execute_onnx, import_qonnx
from forma.sim.bench_export import da4ml_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_da4ml_trace_of_the_digits_mlp_is_bit_exact():
    """Round-half-even built from truncation keeps da4ml's design equal to QONNX on all 450
    test images (da4ml itself rounds ties up, which disagrees on most images)."""
    x, _ = load_inputs(EXAMPLES / "digits_test.npz")
    network = import_qonnx(str(EXAMPLES / "digits_mlp.onnx"))
    logic, pipeline = da4ml_trace(network, latency_cutoff=5)
    got = np.asarray(logic.predict(x.reshape(len(x), -1))).reshape(len(x), -1)
    expected = execute_onnx(network.source, x).reshape(len(x), -1)
    assert np.array_equal(got, expected)
    assert len(pipeline.solutions) >= 2


def test_da4ml_comparison_refuses_layers_it_cannot_trace():
    network = import_qonnx(str(EXAMPLES / "digits_cnn.onnx"))
    with pytest.raises(FormaError, match="conv2d"):
        da4ml_trace(network, latency_cutoff=5)
