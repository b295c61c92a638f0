"""QONNX quantizer-like ops for the importer's walk: BipolarQuant, Trunc, BatchNormalization (folded
into the preceding MatMul/Conv) and the Quant that ends a float32 BatchNormalization or average.

Each handler takes the walk (`qonnx_import._Walk`) and the node, as the walk's own methods do.
"""
from __future__ import annotations

import warnings

import numpy as np

from forma.errors import SpecError
from forma.sim.formats import FixedFormat
from forma.sim.formats.qonnx_map import from_qonnx_intquant, qonnx_rounding

from .qonnx_exact import batchnorm_step, integer_form
from .qonnx_import import (_AP_QUANT_OF, FLOAT32_SIGNIFICAND, QTensor, Requant, _label, _round,
                           channel_bounds, exact_fixed, int_quant_format, pow2_exponent,
                           range_format, value_range)


def quant_step(walk, node, scale, bits, signed, narrow, mode):
    """A Quant of a float32 BatchNormalization/average result: the integer form proven equal
    to QONNX for every input (a BatchNormalization's folds into the preceding layer)."""
    step = walk.steps.pop(node.input[0])
    k = pow2_exponent(scale)
    if k is not None:
        fmt = int_quant_format(bits, signed, narrow, k, mode, _label(node))
        q_scale, out_scale = 2.0 ** k, 1.0
    elif scale.size == 1:
        fmt = FixedFormat(int(bits), int(bits), bool(signed),
                          quant=_AP_QUANT_OF.get(qonnx_rounding(mode), "RND_CONV"),
                          overflow="SAT_SYM" if narrow else "SAT")
        q_scale = out_scale = float(np.float32(scale.ravel()[0]))
    else:
        raise SpecError(f"node {_label(node)} (Quant): per-channel scales after {step.node} "
                        f"({step.op}) have no exact hardware form; use a per-tensor scale")
    rounding = qonnx_rounding(mode)
    lo = -(2 ** (int(bits) - 1)) + narrow if signed else 0
    form = integer_form(step, fmt, q_scale, rounding, _label(node), lo)
    if step.fold is not None:
        src = fold_form(walk, step, form)
        requant = Requant("shift", form.shift, 1, rounding, True, lo)
    else:
        src = step.source if not form.pre_multiplier else divide_exactly(walk, node, step, form)
        requant = Requant("dyadic", form.shift, int(form.multiplier[0]), rounding, True, lo)
    attrs = dict(qonnx_op=step.op)
    if not step.relu:
        return walk.emit("quant", node, [src], fmt, out_scale, requant=requant, attrs=attrs)
    pre = walk.emit("quant", node, [src], fmt, out_scale, output=node.output[0] + "_before_relu",
                    name=node.name, requant=requant, attrs=attrs)
    return walk.emit("relu", node, [pre], fmt, out_scale, name=node.name + "_relu")


def divide_exactly(walk, node, step, form) -> QTensor:
    """The first stage of a two-stage integer form: floor(r * 2**j / divisor) as its own quant
    layer (a multiply and a flooring shift), whose raw values the Quant's stage then rounds."""
    lo, hi = (int(v) for v in np.floor_divide(step.ranges[0] * form.pre_multiplier
                                              + form.pre_offset, 1 << form.pre_shift))
    fmt = _holding(np.array([lo, hi]), step.source.format.frac_bits, step.node)
    return walk.emit("quant", node, [step.source], fmt, output=node.output[0] + "_divided",
                     requant=Requant("dyadic", form.pre_shift, form.pre_multiplier, "floor", True,
                                     offset=form.pre_offset),
                     attrs=dict(qonnx_op=step.op))


def fold_form(walk, step, form) -> QTensor:
    """Scale the weights and bias of the dense/conv layer `step.fold` by the integer form's
    per-channel multipliers and add its offsets: its accumulator then holds r * M + C."""
    layer = step.fold
    fw = exact_fixed(layer.weight_format)
    frac = layer.output.format.frac_bits
    mult, off = form.multiplier, form.offset
    w = _raw_of(layer.weight_format, layer.weight)
    w = w * (mult[None, :] if layer.kind == "dense" else mult[:, None, None, None])
    bias = np.zeros(len(mult), np.int64) if layer.bias is None else \
        _raw_of(layer.bias_format, layer.bias) << (frac - exact_fixed(layer.bias_format).frac_bits)
    bias = bias * mult + off
    wfmt = _holding(w, fw.frac_bits, step.node)
    bfmt = _holding(bias, frac, step.node)
    ends = np.stack([step.ranges[:, 0] * mult, step.ranges[:, 1] * mult]) + off[None, :]
    acc = _holding(ends, frac, step.node)
    out = QTensor(layer.output.name, layer.output.shape, acc)
    layer.weight, layer.weight_format = wfmt.from_raw(w), wfmt
    layer.bias, layer.bias_format = bfmt.from_raw(bias), bfmt
    layer.output = out
    layer.attrs["folded"] = step.node
    return out


def bipolar_quant(walk, node):
    """BipolarQuant: +scale where the input is >= 0, else -scale (weights or activations)."""
    scale = walk.init(node.input[1], node, "scale")
    if np.any(scale <= 0):
        raise SpecError(f"node {_label(node)} (BipolarQuant): scale must be positive")
    const = walk.model.get_initializer(node.input[0])
    if const is not None:
        value = np.asarray(const, np.float64)
        exps = np.array([pow2_exponent(v) for v in scale.ravel()], dtype=object)
        if any(e is None for e in exps):
            raise SpecError(f"node {_label(node)} (BipolarQuant): weight scale "
                            f"{scale.ravel()[:3]} is not a power of two; use power-of-two "
                            "scales for bipolar weights")
        exps = np.broadcast_to(exps.astype(np.int64).reshape(scale.shape), value.shape)
        kmin = int(exps.min())
        sign = np.where(value >= 0, 1, -1)
        extra = int(exps.max()) - kmin
        fmt = FixedFormat(2 + extra, 2 + extra + kmin, True)
        walk.consts[node.output[0]] = (fmt.from_raw(sign << (exps - kmin)), fmt,
                                       sign * np.broadcast_to(scale, value.shape))
        return None
    k = pow2_exponent(scale)
    if k is not None and k <= 0:
        fmt, out_scale = FixedFormat(2, 2 + k, True), 1.0
    elif scale.size == 1:
        fmt, out_scale = FixedFormat(2, 2, True), float(np.float32(scale.ravel()[0]))
    else:
        raise SpecError(f"node {_label(node)} (BipolarQuant): per-channel activation scales "
                        "have no exact hardware form; use one scale per tensor")
    if node.input[0] in walk.steps:  # the sign of a BatchNormalization (a binarized network)
        step = walk.steps.pop(node.input[0])
        if step.relu:
            raise SpecError(f"node {_label(node)} (BipolarQuant): a BipolarQuant after a Relu is "
                            "+1 everywhere; remove the Relu")
        form = integer_form(step, fmt, 1.0, "rne", _label(node), -1, bipolar=True)
        src = step.source if step.fold is None else fold_form(walk, step, form)
        return walk.emit("quant", node, [src], fmt, out_scale, requant=Requant("bipolar"),
                         attrs=dict(qonnx_op=step.op))
    src = walk.quant_source(node)
    return walk.emit("quant", node, [src], fmt, out_scale, requant=Requant("bipolar"),
                     attrs=dict(qonnx_op="BipolarQuant"))


def trunc(walk, node):
    """Trunc (QONNX v1 or v2, as the model's opset selects): rounds the input to its scale
    (half to even), drops LSBs with the node's rounding_mode and rescales; v2 also clamps."""
    with warnings.catch_warnings():  # a model without a QONNX opset import gets version 1
        warnings.simplefilter("ignore")
        v2 = type(walk.model.get_customop_wrapper(node)).__name__ == "Trunc_v2"
    x = walk.data(node.input[0], node)
    names = ["scale", "zero point", "input bit width"] + \
        (["output scale", "output bit width"] if v2 else ["output bit width"])
    if len(node.input) != len(names) + 1:
        raise SpecError(f"node {_label(node)} (Trunc): has {len(node.input)} inputs; Trunc "
                        f"version {2 if v2 else 1} (the model's opset) takes {len(names) + 1}")
    params = dict(zip(names, (walk.init(n, node, w) for n, w in zip(node.input[1:], names))))
    k = pow2_exponent(params["scale"])
    if np.any(params["zero point"] != 0) or k is None or x.scale != 1.0 or \
            not isinstance(x.format, FixedFormat):
        raise SpecError(f"node {_label(node)} (Trunc): forma maps Trunc of a fixed-point "
                        "tensor with a power-of-two scale and zero point 0; quantize its "
                        "input with a power-of-two Quant")
    rounding = qonnx_rounding(walk.attr(node, "rounding_mode", "FLOOR"))
    if v2:
        k_out = pow2_exponent(params["output scale"])
        if k_out is None:
            raise SpecError(f"node {_label(node)} (Trunc): output scale "
                            f"{params['output scale'].ravel()[:3]} is not one power of two; "
                            "use a power-of-two output scale")
        drop = k_out - k
    else:
        drop = float(params["input bit width"].ravel()[0] -
                     params["output bit width"].ravel()[0])
        if drop != int(drop):
            raise SpecError(f"node {_label(node)} (Trunc): input minus output bit width "
                            f"{drop} is not a whole number of bits")
        drop, k_out = int(drop), k
    f = x.format.frac_bits
    src = x
    if k_out > 0:
        raise SpecError(f"node {_label(node)} (Trunc): output scale 2**{k_out} > 1 puts the "
                        "LSB above 1; use an output scale <= 1")
    if f + k > 0:  # the input is finer than the scale: QONNX first rounds half to even
        lo, hi = value_range(x)
        src = walk.emit("quant", node, [x], range_format(lo, hi, -k),
                        output=node.output[0] + "_on_scale",
                        requant=Requant("shift", f + k, 1, "rne", True))
        f = -k
    lo, hi = value_range(src)
    if v2:
        bits = int(params["output bit width"].ravel()[0])
        signed, narrow = int(walk.attr(node, "signed", 1)), int(walk.attr(node, "narrow", 0))
        from_qonnx_intquant(bits, signed, narrow)
        fmt = FixedFormat(bits, bits + k_out, bool(signed), overflow="SAT")
        low = -(2 ** (bits - 1)) + narrow if signed else 0
    else:
        ends = [float(_round(np.array(v * 2.0 ** -k_out / 2.0 ** drop), rounding))
                for v in (lo, hi)]
        fmt = range_format(ends[0] * 2.0 ** k_out, ends[1] * 2.0 ** k_out, -k_out)
        low = None
    return walk.emit("quant", node, [src], fmt,
                     requant=Requant("shift", f + k + drop, 1, rounding, True, low),
                     attrs=dict(qonnx_op="Trunc"))


def batchnorm(walk, node):
    """BatchNormalization right after a dense/conv layer: a float32 step that the next
    Quant turns into an integer form folded into that layer's weights and bias."""
    x = walk.data(node.input[0], node)
    prev = walk.layers[-1] if walk.layers else None
    if prev is None or prev.kind not in ("dense", "conv2d") or prev.output.name != x.name \
            or len(walk.model.find_consumers(x.name)) != 1 or x.scale != 1.0:
        raise SpecError(f"node {_label(node)} (BatchNormalization): its input '{x.name}' is "
                        "not the output of a MatMul/Conv read only by it; forma folds "
                        "BatchNormalization into the preceding MatMul/Conv")
    if prev.float32_bits > FLOAT32_SIGNIFICAND:
        raise SpecError(f"node {_label(node)} (BatchNormalization): QONNX's float32 "
                        f"{prev.kind} before it may round (its sums need {prev.float32_bits} bits, "
                        "over 24), so no exact fold exists; use narrower weights or activations")
    params = [walk.init(n, node, w) for n, w in zip(node.input[1:5],
                                                    ("scale", "bias", "mean", "variance"))]
    w = prev.weight_format.decode(prev.weight)
    w = w if prev.kind == "dense" else w.reshape(w.shape[0], -1).T
    bias = None if prev.bias is None else prev.bias_format.decode(prev.bias)
    bot, top = channel_bounds(prev.inputs[0], w, bias)
    frac = x.format.frac_bits
    ranges = np.round(np.stack([bot, top], axis=1) * 2.0 ** frac).astype(np.int64)
    step = batchnorm_step(x, frac, ranges, params, walk.attr(node, "epsilon", 1e-5),
                          _label(node))
    step.fold = prev
    walk.steps[node.output[0]] = step


def _raw_of(fmt, codes) -> np.ndarray:
    """Raw integers of codes in exact_fixed(fmt) (value = raw * 2**-frac_bits)."""
    if isinstance(fmt, FixedFormat):
        return fmt.to_raw(np.asarray(codes)).astype(np.int64)
    return (fmt.decode(np.asarray(codes)) * 2.0 ** exact_fixed(fmt).frac_bits).astype(np.int64)


def _holding(raw: np.ndarray, frac: int, node) -> FixedFormat:
    """The narrowest signed FixedFormat with `frac` fraction bits holding the raw integers."""
    lo, hi = int(np.min(raw)), int(np.max(raw))
    bits = max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1
    if bits > 62:
        raise SpecError(f"node {node}: folding it needs {bits}-bit weights or accumulators (over "
                        "62); use narrower weights or activations before it")
    return FixedFormat(bits, bits - frac, True)
