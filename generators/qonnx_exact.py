"""Exact integer forms of QONNX's float32 steps between an exact integer tensor and a quantizer:
BatchNormalization and average pooling over any count, proven against onnxruntime exhaustively.

The float step is executed by onnxruntime itself over every raw value its input can take; the
quantizer that follows is QONNX's float32 `round(v / scale)`; the integer form found reproduces both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError
from forma.sim.formats import FixedFormat
from forma.sim.formats.base import round_shift

#: most raw values a proof enumerates (all channels together)
PROOF_VALUES = 1 << 22
#: widest intermediate of the integer form (int64 reference, |m| < 2**62)
MAX_PRODUCT_BITS = 61


@dataclass(eq=False)
class FloatStep:
    """A float32 step QONNX computes on an exact integer tensor, waiting for its quantizer.

    `source`: the exact tensor (raw r, value r * 2**-frac_bits of `source.format`); `ranges`:
    [channels, 2] inclusive raw bounds per channel; `slope`/`offset`: per-channel real
    approximations of the step (value = slope * r + offset); `execute(raw [channels, n])` gives
    onnxruntime's float32 results. `relu`: a Relu follows the step (exact on the quantized
    result). `node`: how messages name the step's node; `op`: its ONNX op. `fold`: the dense/conv
    layer whose weights and bias take the integer form (None: a multiplier after the step).
    `fix`: what to change in the model when no integer form exists. `divisor`: an odd integer the
    step divides by exactly (an average's count without its power-of-two part; 1: none).
    """
    source: object
    ranges: np.ndarray
    slope: np.ndarray
    offset: np.ndarray
    execute: object
    node: str
    op: str
    fix: str = ""
    relu: bool = False
    fold: object = None
    divisor: int = 1


@dataclass(frozen=True)
class IntegerForm:
    """out = clamp(round((r * multiplier[c] + offset[c]) / 2**shift)) for channel c; with a
    `pre_multiplier`, r is first replaced by floor((r * pre_multiplier + pre_offset) /
    2**pre_shift), which equals floor(r * 2**j / divisor) exactly (j = divisor.bit_length()): an
    exact division that keeps QONNX's ties (r / divisor halfway between two results) exact."""
    shift: int
    multiplier: np.ndarray
    offset: np.ndarray
    pre_shift: int = 0
    pre_multiplier: int = 0
    pre_offset: int = 0


def _ort_run(node, inputs: dict, inits: dict, out_shape):
    """Run one standard ONNX node in onnxruntime (as QONNX executes non-QONNX nodes)."""
    import onnxruntime as rt
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [node], "proof",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape))
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, list(out_shape))],
        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel().tolist())
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = rt.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})[0]


def batchnorm_step(source, frac_bits, ranges, params, epsilon, node) -> FloatStep:
    """The BatchNormalization `params` (scale, bias, mean, var as float32) on channel c of an
    exact tensor with `frac_bits`: slope and offset from QONNX's BatchNormToAffine."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.util.basic import qonnx_make_model
    names = ["scale", "bias", "mean", "var"]
    channels = len(params[0])
    bn = helper.make_node("BatchNormalization", ["x"] + names, ["y"], epsilon=float(epsilon))
    inits = {n: np.asarray(p, np.float32).ravel() for n, p in zip(names, params)}

    def execute(raw):
        x = (raw.astype(np.float64) * 2.0 ** -frac_bits).astype(np.float32)
        return _ort_run(bn, {"x": x[None, :, :, None]}, inits, (1, *raw.shape, 1))[0, :, :, 0]

    graph = helper.make_graph(
        [bn], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])],
        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel().tolist())
         for k, v in inits.items()])
    affine = ModelWrapper(qonnx_make_model(graph)).transform(BatchNormToAffine())
    consts = {n.op_type: affine.get_initializer(n.input[1]).ravel() for n in affine.graph.node}
    slope = consts["Mul"].astype(np.float64) * 2.0 ** -frac_bits
    return FloatStep(source, np.asarray(ranges, np.int64), slope,
                     consts["Add"].astype(np.float64), execute, node, "BatchNormalization",
                     fix="merge the BatchNormalization into the preceding layer's weights before "
                         "quantizing them, or follow it by a quantizer whose scale divides its "
                         "output exactly")


def avgpool_step(source, frac_bits, raw_lo, raw_hi, spatial, node) -> FloatStep:
    """GlobalAveragePool over `spatial` (H, W) positions of an exact tensor with `frac_bits`:
    the step takes the exact sum r of a channel (all partial sums exact in float32) to the mean."""
    from onnx import helper
    count = int(np.prod(spatial))
    pool = helper.make_node("GlobalAveragePool", ["x"], ["y"])

    def execute(raw):
        sums = raw.ravel()
        q, rem = np.divmod(sums, count)  # rem positions hold q + 1, the rest q: sum r exactly
        rows = q[:, None] + (np.arange(count)[None, :] < rem[:, None])
        x = (rows.astype(np.float64) * 2.0 ** -frac_bits).astype(np.float32)
        x = x.reshape(len(sums), 1, *spatial)
        return _ort_run(pool, {"x": x}, {}, (len(sums), 1, 1, 1)).reshape(raw.shape)

    ranges = np.array([[raw_lo * count, raw_hi * count]], np.int64)
    return FloatStep(source, ranges, np.array([2.0 ** -frac_bits / count]), np.zeros(1), execute,
                     node, "GlobalAveragePool", divisor=count >> ((count & -count).bit_length() - 1),
                     fix="use a power-of-two output scale (and a power-of-two number of positions "
                         "for other scales), or MaxPool")


def _qonnx_quant(values32, scale, rounding, lo, hi):
    """QONNX's Quant of float32 values: float32 division by the scale, rounding, clamping."""
    from .qonnx_import import _round
    codes = _round((values32 / np.float32(scale)).astype(np.float64), rounding)
    return np.clip(codes, lo, hi).astype(np.int64)


def integer_form(step: FloatStep, fmt: FixedFormat, scale: float, rounding: str,
                 quant_node: str, low: int, bipolar: bool = False) -> IntegerForm:
    """The smallest shift (and its per-channel multipliers and offsets) with which
    clamp(round((r * M + C) / 2**shift), low, fmt.raw_max) equals QONNX's quantizer of the step's
    float32 result for every raw value r of every channel; SpecError naming the node if none.
    bipolar: the quantizer is a BipolarQuant, matched by the sign of r * M + C (>= 0: +1)."""
    ranges = step.ranges
    sizes = ranges[:, 1] - ranges[:, 0] + 1
    if int(sizes.sum()) > PROOF_VALUES:
        raise SpecError(f"node {step.node} ({step.op}): its input takes {int(sizes.sum())} values, "
                        f"too many to prove an exact integer form (at most {PROOF_VALUES}); use "
                        "narrower weights or activations before it")
    width = int(sizes.max())
    raw = ranges[:, :1] + np.minimum(np.arange(width)[None, :], sizes[:, None] - 1)
    values = step.execute(raw)
    want = np.where(values >= 0, 1, -1) if bipolar else \
        _qonnx_quant(values, scale, rounding, low, fmt.raw_max)
    top = int(np.abs(ranges).max())
    for shift in range(0, MAX_PRODUCT_BITS):
        mult = np.round(step.slope / scale * 2.0 ** shift).astype(np.int64)
        off = np.round(step.offset / scale * 2.0 ** shift).astype(np.int64)
        if (top * int(np.abs(mult).max()) + int(np.abs(off).max())).bit_length() > MAX_PRODUCT_BITS:
            break
        total = raw * mult[:, None] + off[:, None]
        got = np.where(total >= 0, 1, -1) if bipolar else \
            np.clip(round_shift(total, shift, rounding), low, fmt.raw_max)
        if np.array_equal(got, want):
            return IntegerForm(shift, mult, off)
    form = None if bipolar or step.fold is not None or step.divisor == 1 else \
        _divided_form(step, raw, want, scale, rounding, low, fmt.raw_max)
    if form is not None:
        return form
    raise SpecError(f"node {step.node} ({step.op}): no integer multiply + shift reproduces "
                    f"QONNX's float32 {step.op} followed by the quantizer {quant_node} for every "
                    f"input (float32 rounds some results onto ties); {step.fix}")


def _divided_form(step, raw, want, scale, rounding, low, high):
    """The two-stage form of one channel group: an exact floor division by the step's odd divisor,
    then a rounding shift (the rest of the slope must be a power of two); None if it differs."""
    c = step.divisor
    j = c.bit_length()
    exact = np.floor_divide(raw << j, c)
    top = int(np.abs(raw).max())
    lowest = min(int(raw.min()), 0)
    for pre_shift in range(MAX_PRODUCT_BITS):
        pre = -(-(1 << (pre_shift + j)) // c)  # ceil(2**(pre_shift + j) / c)
        excess = pre * c - (1 << (pre_shift + j))  # pre = 2**(pre_shift + j) / c + excess / c
        pre_offset = (-lowest * excess + c - 1) // c  # lifts r * excess / c to >= 0 for r < 0
        if (top * pre + pre_offset).bit_length() > MAX_PRODUCT_BITS:
            return None
        if np.array_equal((raw * pre + pre_offset) >> pre_shift, exact):
            break
    else:
        return None
    mant, exp = np.frexp(step.slope[0] * c * 2.0 ** -j / scale)
    if mant != 0.5 or np.any(step.offset != 0):
        return None
    shift = 1 - int(exp)  # codes per unit of `exact` = 2**-shift
    got = exact << -shift if shift <= 0 else round_shift(exact, shift, rounding)
    if not np.array_equal(np.clip(got, low, high), want):
        return None
    return IntegerForm(shift, np.ones(1, np.int64), np.zeros(1, np.int64), pre_shift, pre,
                       pre_offset)
