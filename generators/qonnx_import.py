"""QONNX front end: load and clean a quantized ONNX model, and turn it into a list of layers.

Every tensor gets one forma format; the layer list is what the hls4ml and native backends consume.
"""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from forma.errors import FormaError, SpecError
from forma.sim.formats import FixedFormat, FloatFormat, NumberFormat
from forma.sim.formats.integer import AP_QUANT
from forma.sim.formats.qonnx_map import (from_qonnx_floatquant, from_qonnx_intquant,
                                         qonnx_rounding)

from .qonnx_checks import (SUPPORTED_OPS, _check_conv_biases, _check_graph,
                           _check_quantizer_parameters, _check_shapes_inferred, _check_single_io,
                           _check_static_shapes, _check_transposes, _label, _one_line)
from .qonnx_exact import avgpool_step

#: quantizer ops that QONNX's constant folding must leave in place (their attributes are the formats)
QUANT_OPS = ["Quant", "IntQuant", "BipolarQuant", "FloatQuant", "Trunc", "QuantizeLinear",
             "DequantizeLinear"]
LAYOUT_OPS = ("Flatten", "Reshape", "Transpose")
#: FloatQuant rounding modes QONNX computes inexactly near powers of two (refused)
FLOATQUANT_DIRECTED = ("FLOOR", "CEIL", "UP", "DOWN")
#: forma rounding name -> ap_fixed quantization mode
_AP_QUANT_OF = {rnd: q for q, rnd in AP_QUANT.items()}
FLOAT32_SIGNIFICAND = 24


# --- the layer list ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QTensor:
    """A quantized tensor: its real value is `format.decode(code) * scale`.

    Power-of-two scales are folded into a FixedFormat (fixed<W,I>), so `scale` is 1.0 for them;
    `scale` differs from 1.0 only for a dyadic (non-power-of-two) output scale. `shape` is the
    channels-last shape with batch 1.
    """
    name: str
    shape: tuple
    format: NumberFormat
    scale: float = 1.0


@dataclass(frozen=True)
class Requant:
    """How a `quant` layer maps an exact input raw integer onto its output format.

    shift/dyadic: out_raw = saturate(round((in_raw * multiplier + offset) / 2**shift)) with
    `rounding` (a forma rounding name) and the output format's bounds; `shift` < 0 is an exact
    left shift.
    minifloat: out = output FloatFormat.encode(in_value, rounding, saturate).
    bipolar: out_raw = +1 if in_value >= 0 else -1 (QONNX BipolarQuant).
    `low`: the lowest output raw when it is not the format's (QONNX's narrow signed range).
    """
    kind: str
    shift: int = 0
    multiplier: int = 1
    rounding: str = "rne"
    saturate: bool = True
    low: int | None = None
    offset: int = 0


@dataclass(eq=False)
class Layer:
    """One step of the dataflow, in graph order.

    kind: quant, dense, conv2d, relu, maxpool2d, global_avgpool, add, shift, reshape, transpose.
    inputs: the data inputs (None for the float graph input of the first quant layer).
    dense: weight codes [in, out] in `weight_format`; conv2d: weight codes [out, kh, kw, in]
    (data channels-last); bias codes [out] in `bias_format` or None. The output of dense/conv2d/add
    is the exact accumulator (a FixedFormat that cannot overflow for any input).
    attrs: kernel_shape, strides, pads (conv2d, maxpool2d), perm (transpose), shift (shift layers:
    the output raw equals the input raw and the format's LSB moves), count and channels_last
    (global_avgpool: NHWC, else NCHW),
    bias_node (dense: the ONNX Add folded in as the bias).
    float32_bits (dense, conv2d, add, global_avgpool; else 0): significant bits that the exact
    result and every partial sum may need (see `reference_rounding`).
    origin: the node's name as the exporter wrote it (QONNX's cleanup renames nodes).
    """
    kind: str
    name: str
    inputs: tuple
    output: QTensor
    weight: np.ndarray | None = None
    weight_format: NumberFormat | None = None
    bias: np.ndarray | None = None
    bias_format: NumberFormat | None = None
    requant: Requant | None = None
    attrs: dict = field(default_factory=dict)
    float32_bits: int = 0
    origin: str = ""

    @property
    def label(self) -> str:
        """'cleaned name' plus ('exporter's name') when they differ: how messages name the node."""
        return f"'{self.name}'" + (f" ('{self.origin}')" if self.origin not in ("", self.name)
                                   else "")


@dataclass(eq=False)
class Network:
    """A cleaned QONNX model and its layer list; `input_name`/`input_shape` as the model declares.

    `source` is the model as loaded (before the channels-last conversion): pass it to
    `execute_onnx` for the reference. `input_perm`: the transpose the cleaned graph applies to
    the input before its first quantizer (None: none), i.e. the order of the quantized input.
    """
    model: object
    source: object
    layers: list
    input_name: str
    input_shape: tuple
    output: QTensor
    input_perm: tuple | None = None

    @property
    def formats(self) -> dict:
        """Tensor name -> QTensor for every quantized tensor on the datapath."""
        return {layer.output.name: layer.output for layer in self.layers}


# --- loading and cleaning ---------------------------------------------------------------------
def load_model(model):
    """A ModelWrapper for a path, ModelProto or ModelWrapper; FormaError for unreadable files
    and for graphs that are not well formed (see `_check_graph`)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    if isinstance(model, ModelWrapper):
        return model
    where = "the model"
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise FormaError(f"model file {path} does not exist")
        if not path.is_file():
            raise FormaError(f"model file {path} is not a file; give the path of an .onnx file")
        try:
            model = onnx.load(str(path))
        except Exception as error:  # truncated or not protobuf at all
            raise FormaError(f"{path} is not a readable ONNX model ({type(error).__name__}); "
                             "re-export it") from None
        where = str(path)
    if not isinstance(model, onnx.ModelProto):
        raise FormaError(f"cannot load a model from a {type(model).__name__}; give an .onnx path, "
                         "an onnx.ModelProto or a QONNX ModelWrapper")
    _check_graph(model, where)
    try:
        return ModelWrapper(model)
    except Exception as error:
        raise FormaError(f"{where} is not a model QONNX can read: {_one_line(error)}") from None


def clean(model, channels_last=True):
    """QONNX cleanup + channels-last + GemmToMatMul + cleanup, keeping every quantizer node.

    Same transformations as qonnx.util.cleanup.cleanup_model, except that constant folding keeps
    every op in QUANT_OPS, so weight formats survive (cleanup_model would fold them).
    channels_last=False gives only the cleanup (the graph as exported, for execution).
    """
    import warnings

    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.general import (GiveReadableTensorNames, GiveUniqueNodeNames,
                                              GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                              RemoveUnusedTensors, SortGraph)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    model = load_model(model)
    _check_static_shapes(model)
    for node in model.graph.node:  # QONNX renames nodes: keep the exporter's names for messages
        node.doc_string = node.doc_string or node.name

    def cleanup(m):
        for t in (InferShapes(), GiveUniqueParameterTensors(), FoldConstants(QUANT_OPS),
                  FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs(),
                  GiveUniqueNodeNames(), GiveReadableTensorNames()):
            m = m.transform(t)
        return m

    try:
        with warnings.catch_warnings(), _ir_version_cap():
            warnings.simplefilter("ignore")
            inferred = model.transform(InferShapes())
            _check_shapes_inferred(inferred)
            model = cleanup(_give_transposes_perms(inferred))
            if channels_last:
                # ConvertToChannelsLastAndClean folds constants with QONNX's default exclusions
                # (Quant, BipolarQuant), which would turn IntQuant/FloatQuant/Trunc weights into
                # plain float32: let them pass as Quant (elementwise too, never folded).
                _disguise_as_quant(model)
                model = model.transform(ConvertToChannelsLastAndClean())
                model = model.transform(GemmToMatMul())
                _undisguise(model)  # before cleanup, which names nodes by op type
                model = cleanup(model)
            model = model.transform(SortGraph())
        _check_single_io(model)
        _check_quantizer_parameters(model)
        _check_transposes(model)
        _check_conv_biases(model)
    except FormaError:
        raise
    except Exception as error:
        raise FormaError(f"QONNX could not clean the model: {_one_line(error)}") from None
    return model


#: quantizers QONNX's default constant folding keeps (ConvertToChannelsLastAndClean uses it)
_KEPT_BY_QONNX = ("Quant", "BipolarQuant")
_OP_TYPE_TAG = "forma_op_type"


def _disguise_as_quant(model):
    """Retype the QUANT_OPS nodes QONNX's default folding would fold as Quant, tagged with
    their op type (an attribute) for `_undisguise`."""
    from onnx import helper
    for node in model.graph.node:
        if node.op_type in QUANT_OPS and node.op_type not in _KEPT_BY_QONNX:
            node.attribute.append(helper.make_attribute(_OP_TYPE_TAG, node.op_type))
            node.op_type = "Quant"


def _undisguise(model):
    for node in model.graph.node:
        tags = [a for a in node.attribute if a.name == _OP_TYPE_TAG]
        for tag in tags:
            node.op_type = tag.s.decode()
            node.attribute.remove(tag)


def _give_transposes_perms(model):
    """Write ONNX's default perm (the input's axes reversed) on each Transpose that has none,
    so QONNX's passes and the walker read one explicit permutation."""
    from onnx import AttributeProto, helper
    for node in model.graph.node:
        shape = model.get_tensor_shape(node.input[0]) if node.input else None
        if node.op_type == "Transpose" and shape is not None and \
                all(a.name != "perm" for a in node.attribute):
            node.attribute.append(helper.make_attribute("perm", list(range(len(shape)))[::-1],
                                                        attr_type=AttributeProto.INTS))
    return model


# --- formats ----------------------------------------------------------------------------------
def pow2_exponent(scale):
    """k with scale == 2**k for every element (all equal), else None."""
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(s != s[0]):
        return None
    mant, exp = np.frexp(s[0])
    return int(exp) - 1 if mant == 0.5 else None


def int_quant_format(bitwidth, signed, narrow, exponent, rounding_mode, node) -> FixedFormat:
    """FixedFormat of a QONNX Quant with scale 2**exponent: fixed<b, b+exponent> with the node's
    rounding (as an ap_fixed Q mode) and saturation (SAT, or SAT_SYM for narrow range)."""
    from_qonnx_intquant(bitwidth, signed, narrow)  # validates the bit width
    b = int(bitwidth)
    rnd = qonnx_rounding(rounding_mode)
    if rnd not in _AP_QUANT_OF:
        raise SpecError(f"node {node}: rounding_mode {rounding_mode} has no fixed-point form; "
                        f"use one of ROUND, FLOOR, HALF_UP")
    if exponent > 0:
        raise SpecError(f"node {node}: scale 2**{exponent} > 1 puts the LSB above 1, which no "
                        "fixed<W,I> format holds; use a scale <= 1 (more bits)")
    if narrow and not signed:
        raise SpecError(f"node {node}: unsigned narrow range [0, 2**{b}-2] has no fixed-point "
                        "form; use narrow=0 for unsigned quantizers")
    return FixedFormat(b, b + exponent, bool(signed), quant=_AP_QUANT_OF[rnd],
                       overflow="SAT_SYM" if narrow else "SAT")


def exact_fixed(fmt: NumberFormat) -> FixedFormat:
    """The narrowest signed FixedFormat holding every finite value of `fmt` exactly."""
    if isinstance(fmt, FixedFormat):
        return fmt
    if isinstance(fmt, FloatFormat):
        frac = -(fmt.emin - fmt.man_bits)
        ibits = math.frexp(fmt.max_value)[1] + 1
        return FixedFormat(ibits + frac, ibits, True)
    raise SpecError(f"format {fmt.name} has no exact fixed-point form")


def range_format(lo: float, hi: float, frac: int) -> FixedFormat:
    """Narrowest signed fixed format with `frac` fraction bits holding [lo, hi] (exact values)."""
    raw_lo, raw_hi = int(round(lo * 2.0 ** frac)), int(round(hi * 2.0 ** frac))
    bits = max(raw_hi.bit_length(), (-raw_lo - 1).bit_length() if raw_lo < 0 else 0) + 1
    if bits > 64:
        raise SpecError(f"an exact accumulator needs {bits} bits (over 64); use fewer bits")
    return FixedFormat(bits, bits - frac, True)


def value_range(t: QTensor):
    f = exact_fixed(t.format) if isinstance(t.format, FloatFormat) else t.format
    return (-f.max_value if isinstance(t.format, FloatFormat) else f.min_value) * t.scale, \
        f.max_value * t.scale


# --- the walk ---------------------------------------------------------------------------------
class _Walk:
    """Walks the cleaned graph in order, giving each datapath tensor a QTensor."""

    def __init__(self, model):
        self.model = model
        self.tensors: dict[str, QTensor] = {}
        self.consts: dict[str, tuple] = {}   # name -> (codes, format, values)
        self.layers: list[Layer] = []
        self.floats = {model.graph.input[0].name}  # float tensors before the first quantizer
        self.transposes: dict[tuple, QTensor] = {}  # (input name, perm) -> output
        self.float_perms: dict[str, tuple | None] = {}  # float tensor -> transpose of the input
        self.input_perm = None
        self.steps = {}  # float32 BatchNormalization/average results -> FloatStep (await a Quant)

    def shape(self, name):
        s = self.model.get_tensor_shape(name)
        if s is None or any((not isinstance(d, int)) or d <= 0 for d in s):
            raise SpecError(f"tensor '{name}' has no static shape after shape inference; export "
                            "with a fixed input shape")
        return tuple(s)

    def attr(self, node, name, default=None):
        from onnx import helper
        for a in node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    def init(self, name, node, what):
        value = self.model.get_initializer(name)
        if value is None:
            raise SpecError(f"node {_label(node)} ({node.op_type}): {what} '{name}' is not a "
                            "constant; forma needs constant quantizer parameters")
        v = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise SpecError(f"node {_label(node)} ({node.op_type}): {what} contains NaN or "
                            "infinity; re-export the model")
        return v

    def data(self, name, node):
        """QTensor of a datapath input; errors for float tensors and unquantized constants."""
        if name in self.tensors:
            return self.tensors[name]
        if name in self.steps:
            step = self.steps[name]
            raise SpecError(f"node {_label(node)} ({node.op_type}) reads the float32 result of "
                            f"{step.node} ({step.op}), which has no exact integer form on its own; "
                            f"put a quantizer (Quant) directly after the {step.op}")
        if name in self.consts or self.model.get_initializer(name) is not None:
            raise SpecError(f"node {_label(node)} ({node.op_type}): constant '{name}' is used as "
                            "data; forma maps constants only as weights and biases")
        raise SpecError(f"node {_label(node)} ({node.op_type}): input '{name}' is a float "
                        "(non-quantized) tensor on the datapath; put a quantizer (Quant) before it")

    def weight(self, name, node):
        """(codes, format, values) of a quantized constant input."""
        if name in self.consts:
            return self.consts[name]
        if self.model.get_initializer(name) is not None:
            raise SpecError(f"node {_label(node)} ({node.op_type}): weight '{name}' is a float "
                            "constant without a quantizer; quantize weights (Quant/FloatQuant)")
        raise SpecError(f"node {_label(node)} ({node.op_type}): weight '{name}' is not a constant "
                        "(it is computed at run time); forma needs constant weights")

    def emit(self, kind, node, inputs, fmt, scale=1.0, output=None, name=None, **kw):
        """Append a layer for `node`. A node mapped to several layers gives each an `output`
        tensor with a suffix (e.g. '_divided') and the layer the same suffix, or its own `name`."""
        output = output or node.output[0]
        name = name or node.name + output.removeprefix(node.output[0])
        if any(layer.name == name for layer in self.layers):
            raise FormaError(f"node {_label(node)}: the importer named two layers '{name}'")
        out = QTensor(output, self.shape(node.output[0]), fmt, scale)
        self.tensors[out.name] = out
        self.layers.append(Layer(kind, name, tuple(inputs), out, origin=node.doc_string, **kw))
        return out

    # --- quantizers
    def quant(self, node):
        x = node.input[0]
        const = self.model.get_initializer(x)
        scale = self.init(node.input[1], node, "scale")
        zero = self.init(node.input[2], node, "zero point")
        if np.any(zero != 0):
            raise SpecError(f"node {_label(node)} (Quant): zero point {zero.ravel()[:4]} is not 0; "
                            "forma maps symmetric quantizers only (zero_point=0)")
        if np.any(scale <= 0):
            raise SpecError(f"node {_label(node)} (Quant): scale must be positive")
        bits = self.init(node.input[3], node, "bit width")
        signed, narrow = int(self.attr(node, "signed", 1)), int(self.attr(node, "narrow", 0))
        mode = self.attr(node, "rounding_mode", "ROUND")
        if const is not None:
            return self.const_quant(node, np.asarray(const, np.float64), scale, float(bits.ravel()[0]),
                                    signed, narrow, mode)
        if x in self.steps:
            from .qonnx_quantizers import quant_step
            return quant_step(self, node, scale, float(bits.ravel()[0]), signed, narrow, mode)
        src = self.quant_source(node)
        k = pow2_exponent(scale)
        low = -(2 ** (int(bits.ravel()[0]) - 1)) + 1 if narrow and signed else None
        if k is not None:
            fmt = int_quant_format(float(bits.ravel()[0]), signed, narrow, k, mode, _label(node))
            return self.emit("quant", node, [src], fmt,
                             requant=replace(self.shift_requant(src, fmt, mode), low=low))
        if scale.size != 1:
            raise SpecError(f"node {_label(node)} (Quant): per-channel scales that are not one "
                            "power of two have no exact hardware form; use a per-tensor "
                            "power-of-two scale (Brevitas *FixedPoint quantizers)")
        fmt = FixedFormat(int(bits.ravel()[0]), int(bits.ravel()[0]), bool(signed),
                          quant=_AP_QUANT_OF.get(qonnx_rounding(mode), "RND_CONV"),
                          overflow="SAT_SYM" if narrow else "SAT")
        requant = dyadic_requant(src, float(np.float32(scale.ravel()[0])), fmt, mode, _label(node))
        return self.emit("quant", node, [src], fmt, scale=float(np.float32(scale.ravel()[0])),
                         requant=replace(requant, low=low))

    def quant_source(self, node):
        name = node.input[0]
        if name in self.floats:
            self.input_perm = self.float_perms.get(name)
            return None
        return self.data(name, node)

    def shift_requant(self, src, fmt, mode):
        if src is None:
            return Requant("shift", 0, 1, qonnx_rounding(mode), True)
        f_in = exact_fixed(src.format)
        return Requant("shift", f_in.frac_bits - fmt.frac_bits, 1, qonnx_rounding(mode), True)

    def const_quant(self, node, value, scale, bits, signed, narrow, mode):
        from_qonnx_intquant(bits, signed, narrow)
        exps = [pow2_exponent(v) for v in scale.ravel()]
        if None in exps:
            raise SpecError(f"node {_label(node)} (Quant): weight scale {scale.ravel()[:3]} is not "
                            "a power of two; QONNX then computes in float32 with no exact integer "
                            "form; use power-of-two weight quantizers (Brevitas "
                            "Int8WeightPerTensorFixedPoint)")
        exps = np.array(exps).reshape(scale.shape)
        kmin = int(np.min(exps))
        lo = -(2 ** (int(bits) - 1)) + narrow if signed else 0
        hi = 2 ** (int(bits) - 1) - 1 if signed else 2 ** int(bits) - 1 - narrow
        codes_int = np.clip(_round(value / scale, qonnx_rounding(mode)), lo, hi)
        values = codes_int * scale
        raw = (codes_int * 2.0 ** (exps - kmin)).astype(np.int64)
        extra = int(np.max(exps) - kmin)
        if extra == 0:
            fmt = int_quant_format(bits, signed, narrow, kmin, mode, _label(node))
        else:  # per-channel power-of-two scales: one common LSB, wider codes
            fmt = FixedFormat(int(bits) + extra, int(bits) + extra + kmin, bool(signed))
        self.consts[node.output[0]] = (fmt.from_raw(raw), fmt, values)

    def float_quant(self, node):
        names = ["scale", "exponent bit width", "mantissa bit width", "exponent bias", "max value"]
        scale, e, m, bias, max_val = (self.init(n, node, w) for n, w in zip(node.input[1:], names))
        if np.any(scale != 1.0):
            raise SpecError(f"node {_label(node)} (FloatQuant): scale {scale.ravel()[:3]} is not "
                            "1; forma maps unscaled minifloats (Brevitas Fp8e4m3OCP* quantizers)")
        fmt = from_qonnx_floatquant(float(e.ravel()[0]), float(m.ravel()[0]),
                                    float(bias.ravel()[0]), float(max_val.ravel()[0]),
                                    bool(self.attr(node, "has_inf", 0)),
                                    bool(self.attr(node, "has_nan", 0)))
        mode = str(self.attr(node, "rounding_mode", "ROUND")).upper()
        if mode in FLOATQUANT_DIRECTED:
            raise SpecError(f"node {_label(node)} (FloatQuant): rounding_mode {mode} is not "
                            "mapped: QONNX picks the binade with a float32 log2, so just below a "
                            "power of two its directed rounding lands one grid step off the "
                            "exact result; use ROUND")
        rounding = qonnx_rounding(mode)
        saturate = bool(self.attr(node, "saturation", 1))
        const = self.model.get_initializer(node.input[0])
        if const is not None:
            codes = fmt.encode(np.asarray(const, np.float64), rounding=rounding, saturate=saturate)
            self.consts[node.output[0]] = (codes, fmt, fmt.decode(codes))
            return None
        src = self.quant_source(node)
        return self.emit("quant", node, [src], fmt,
                         requant=Requant("minifloat", rounding=rounding, saturate=saturate))

    # --- compute
    def matmul(self, node):
        x = self.data(node.input[0], node)
        codes, wfmt, w = self.weight(node.input[1], node)
        if w.ndim != 2:
            raise SpecError(f"node {_label(node)} (MatMul): weight of rank {w.ndim}; forma maps "
                            "2-D weights [in, out]")
        acc = accumulator(x, w, wfmt, None, None)
        return self.emit("dense", node, [x], acc, weight=codes, weight_format=wfmt,
                         float32_bits=float32_bits(x, w, wfmt, None, None))

    def conv(self, node):
        x = self.data(node.input[0], node)
        codes, wfmt, w = self.weight(node.input[1], node)
        if w.ndim != 4:  # channels-last: [out, kh, kw, in]
            raise SpecError(f"node {_label(node)} (Conv): {w.ndim - 2}-D convolution; forma maps "
                            "2-D convolutions (1-D: use a 1xK kernel)")
        if int(self.attr(node, "group", 1)) != 1 or any(d != 1 for d in self.attr(
                node, "dilations", [1, 1])):
            raise SpecError(f"node {_label(node)} (Conv): groups/dilations other than 1 are not "
                            "supported")
        bias = self.weight(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        terms = (x, w.reshape(w.shape[0], -1).T, wfmt, *(bias[1:] if bias else (None, None)))
        acc = accumulator(*terms)
        attrs = dict(kernel_shape=tuple(w.shape[1:3]), strides=tuple(self.attr(node, "strides", [1, 1])),
                     pads=tuple(self.attr(node, "pads", [0, 0, 0, 0])))
        return self.emit("conv2d", node, [x], acc, weight=codes, weight_format=wfmt,
                         bias=bias[0] if bias else None, bias_format=bias[1] if bias else None,
                         attrs=attrs, float32_bits=float32_bits(*terms))

    def add(self, node):
        a, b = node.input[:2]
        const = [n for n in (a, b) if n in self.consts or self.model.get_initializer(n) is not None]
        if const:
            data_name = b if const[0] == a else a
            codes, bfmt, bias = self.weight(const[0], node)
            prev = self.layers[-1] if self.layers else None
            if (prev is None or prev.kind != "dense" or prev.output.name != data_name
                    or prev.bias is not None or bias.size != prev.output.shape[-1]):
                raise SpecError(f"node {_label(node)} (Add): a constant is added to '{data_name}', "
                                "which is not a dense layer's output; forma maps constant adds "
                                "only as a MatMul bias")
            x = prev.inputs[0]
            _, _, w = self.consts[self.model.find_producer(data_name).input[1]]
            acc = accumulator(x, w, prev.weight_format, bfmt, bias.ravel())
            self.layers.pop()
            del self.tensors[data_name]
            out = QTensor(node.output[0], self.shape(node.output[0]), acc)
            self.tensors[out.name] = out
            bits = float32_bits(x, w, prev.weight_format, bfmt, bias.ravel())
            self.layers.append(Layer("dense", prev.name, prev.inputs, out, weight=prev.weight,
                                     weight_format=prev.weight_format, bias=codes.ravel(),
                                     bias_format=bfmt, origin=prev.origin, float32_bits=bits,
                                     attrs=dict(bias_node=node.name)))
            return out
        x, y = self.data(a, node), self.data(b, node)
        if x.scale != 1.0 or y.scale != 1.0:
            raise SpecError(f"node {_label(node)} (Add): an input has a non-power-of-two scale; "
                            "QONNX adds in float32 with no exact integer form")
        fx, fy = exact_fixed(x.format), exact_fixed(y.format)
        (lx, hx), (ly, hy) = value_range(x), value_range(y)
        frac = max(fx.frac_bits, fy.frac_bits)
        fmt = range_format(lx + ly, hx + hy, frac)
        return self.emit("add", node, [x, y], fmt,
                         float32_bits=_significant_bits(lx + ly, hx + hy, frac))

    def relu(self, node):
        if node.input[0] in self.steps:  # relu(v) then Quant == Quant then relu: after the Quant
            step = self.steps.pop(node.input[0])
            step.relu = True
            self.steps[node.output[0]] = step
            return None
        x = self.data(node.input[0], node)
        return self.emit("relu", node, [x], x.format, x.scale)

    def maxpool(self, node):
        x = self.data(node.input[0], node)
        attrs = dict(kernel_shape=tuple(self.attr(node, "kernel_shape")),
                     strides=tuple(self.attr(node, "strides", self.attr(node, "kernel_shape"))),
                     pads=tuple(self.attr(node, "pads", [0, 0, 0, 0])))
        if any(attrs["pads"]) and not isinstance(x.format, FixedFormat):
            raise SpecError(f"node {_label(node)} (MaxPool): padding needs a fixed-point input")
        return self.emit("maxpool2d", node, [x], x.format, x.scale, attrs=attrs)

    def global_avgpool(self, node):
        x = self.data(node.input[0], node)
        channels_last = node.domain.endswith("channels_last")
        count = int(np.prod(x.shape[1:-1] if channels_last else x.shape[2:]))
        k = pow2_exponent(count)
        f = exact_fixed(x.format)
        lo, hi = value_range(x)
        bits = _significant_bits(lo * count, hi * count, f.frac_bits)
        attrs = dict(count=count, channels_last=channels_last)
        if k is not None and x.scale == 1.0:
            return self.emit("global_avgpool", node, [x], range_format(lo, hi, f.frac_bits + k),
                             attrs=attrs, float32_bits=bits)
        if x.scale != 1.0 or bits > FLOAT32_SIGNIFICAND:
            raise SpecError(f"node {_label(node)} (GlobalAveragePool): dividing by {count} "
                            "positions is exact here only for a power-of-two count (the input "
                            f"{'has a non-power-of-two scale' if x.scale != 1.0 else 'sums need'} "
                            f"{'' if x.scale != 1.0 else f'{bits} bits, over float32 24'}); use a "
                            "power-of-two spatial size, narrower inputs or MaxPool")
        # the exact sum, divided by the Quant that follows (an integer form proven against QONNX)
        total = self.emit("global_avgpool", node, [x], range_format(lo * count, hi * count,
                                                                    f.frac_bits),
                          attrs=dict(attrs, qonnx_op="GlobalAveragePool"), float32_bits=bits)
        del self.tensors[total.name]
        spatial = tuple(x.shape[1:-1] if channels_last else x.shape[2:])
        self.steps[total.name] = avgpool_step(total, f.frac_bits, int(round(lo * 2.0 ** f.frac_bits)),
                                              int(round(hi * 2.0 ** f.frac_bits)), spatial,
                                              _label(node))
        return total

    def scale_by_constant(self, node):
        a, b = node.input[:2]
        c = self.model.get_initializer(b)
        if c is None:
            raise SpecError(f"node {_label(node)} ({node.op_type}): both inputs are data; forma "
                            "multiplies/divides by constant scales only")
        k = pow2_exponent(c)
        if k is None:
            raise SpecError(f"node {_label(node)} ({node.op_type}): constant {np.ravel(c)[:3]} is "
                            "not one power of two; fold non-power-of-two scales into a quantizer")
        k = -k if node.op_type == "Div" else k
        x = self.data(a, node)
        f = exact_fixed(x.format)
        if f.frac_bits - k < f.bits - 64 or f.int_bits + k > f.bits:
            raise SpecError(f"node {_label(node)} ({node.op_type}): scaling by 2**{k} leaves "
                            "the fixed-point range")
        fmt = FixedFormat(f.bits, f.int_bits + k, f.signed)
        return self.emit("shift", node, [x], fmt, attrs=dict(shift=k))

    def layout(self, node):
        name = node.input[0]
        if name in self.steps and node.op_type != "Transpose" and self.steps[name].fold is None:
            step = self.steps.pop(name)  # the average's shape changes, not its values' order
            step.source = self.emit("reshape", node, [step.source], step.source.format)
            del self.tensors[step.source.name]
            self.steps[node.output[0]] = step
            return None
        if name in self.floats:  # a layout change of the float graph input
            self.floats.add(node.output[0])
            perm = self.float_perms.get(name)
            if node.op_type == "Transpose":
                step = tuple(self.attr(node, "perm"))
                perm = step if perm is None else tuple(perm[i] for i in step)
            elif perm is not None:
                raise SpecError(f"node {_label(node)} ({node.op_type}): reshapes the transposed "
                                "float input; quantize the input before changing its layout")
            self.float_perms[node.output[0]] = perm
            return None
        if name in self.consts and node.op_type == "Transpose":  # a quantized weight, transposed
            perm = self.attr(node, "perm")
            codes, fmt, values = self.consts[name]
            self.consts[node.output[0]] = (codes.transpose(perm), fmt, values.transpose(perm))
            return None
        x = self.data(name, node)
        if node.op_type == "Transpose":
            perm = tuple(self.attr(node, "perm"))
            twin = self.transposes.get((name, perm))
            if twin is not None:  # QONNX's channels-last pass transposes a forked tensor twice
                self.tensors[node.output[0]] = twin
                return twin
            out = self.emit("transpose", node, [x], x.format, x.scale, attrs=dict(perm=perm))
            self.transposes[(name, perm)] = out
            return out
        return self.emit("reshape", node, [x], x.format, x.scale)

    def run(self):
        from . import qonnx_quantizers as quantizers
        handlers = {"Quant": self.quant, "IntQuant": self.quant, "FloatQuant": self.float_quant,
                    **{op: (lambda node, f=f: f(self, node)) for op, f in (
                        ("BipolarQuant", quantizers.bipolar_quant), ("Trunc", quantizers.trunc),
                        ("BatchNormalization", quantizers.batchnorm))},
                    "MatMul": self.matmul, "Conv": self.conv, "Add": self.add, "Relu": self.relu,
                    "MaxPool": self.maxpool, "GlobalAveragePool": self.global_avgpool,
                    "Mul": self.scale_by_constant, "Div": self.scale_by_constant,
                    **{op: self.layout for op in LAYOUT_OPS}}
        for node in self.model.graph.node:
            if node.op_type not in handlers:
                raise SpecError(f"node {_label(node)}: op {node.op_type} is not supported; "
                                f"supported ops: {', '.join(SUPPORTED_OPS)}")
            handlers[node.op_type](node)
        out = self.model.graph.output[0].name
        if out not in self.tensors:
            raise SpecError(f"the graph output '{out}' is not a quantized tensor; end the model "
                            "with a quantizer")
        for layer in self.layers:
            for x in layer.inputs:
                if x is not None and x.scale != 1.0 and layer.kind in ("dense", "conv2d"):
                    raise SpecError(f"node '{layer.name}': input '{x.name}' has the non-power-of-"
                                    f"two scale {x.scale}; QONNX computes this layer in float32 "
                                    "with no exact integer form; use power-of-two scale "
                                    "quantizers (Brevitas *FixedPoint)")
        return self.tensors[out]


def _round(x, rounding):
    """Round float64 values to integers with a forma rounding name (QONNX's set)."""
    fns = {"rne": np.round, "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
           "away": lambda v: np.sign(v) * np.ceil(np.abs(v)),
           "half_away": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
           "half_zero": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}
    return fns[rounding](x)


def accumulator(x: QTensor, w: np.ndarray, wfmt, bfmt, bias) -> FixedFormat:
    """Exact accumulator format of sum_i x_i * w[i, j] (+ bias_j) for any x in x's range.

    The fraction bits are those of the exact products (and bias); the integer bits come from the
    largest possible sum for the actual weights, so no input can overflow it.
    """
    fx, fw = exact_fixed(x.format), exact_fixed(wfmt)
    frac = fx.frac_bits + fw.frac_bits
    if bias is not None:
        frac = max(frac, exact_fixed(bfmt).frac_bits)
    bot, top = channel_bounds(x, w, bias)
    return range_format(float(np.min(bot)), float(np.max(top)), frac)


def channel_bounds(x: QTensor, w: np.ndarray, bias) -> tuple:
    """Per output channel j, the least and greatest sum_i x_i * w[i, j] (+ bias_j) over x's range."""
    lo, hi = value_range(x)
    top = np.sum(np.maximum(w * lo, w * hi), axis=0)
    bot = np.sum(np.minimum(w * lo, w * hi), axis=0)
    if bias is not None:
        top, bot = top + bias, bot + bias
    return bot, top


def _significant_bits(lo: float, hi: float, frac: int) -> int:
    """Bits of the largest magnitude in [lo, hi] on the grid 2**-frac: every value of the range
    has at most this many significant bits."""
    return max(abs(int(round(lo * 2.0 ** frac))), abs(int(round(hi * 2.0 ** frac)))).bit_length()


def float32_bits(x: QTensor, w: np.ndarray, wfmt, bfmt, bias) -> int:
    """Significant bits that any partial sum of sum_i x_i * w[i, j] (then + bias_j) may need,
    for x in x's range and any summation order: all are multiples of the exact products' (and
    bias') LSB, bounded by the sums of the positive and of the negative terms."""
    fx, fw = exact_fixed(x.format), exact_fixed(wfmt)
    lo, hi = value_range(x)
    frac = fx.frac_bits + fw.frac_bits
    pos = np.sum(np.maximum(np.maximum(w * lo, w * hi), 0), axis=0)
    neg = np.sum(np.minimum(np.minimum(w * lo, w * hi), 0), axis=0)
    ends = [pos, neg]
    if bias is not None:
        frac = max(frac, exact_fixed(bfmt).frac_bits)
        ends += [pos + bias, neg + bias]
    return _significant_bits(min(float(np.min(e)) for e in ends),
                             max(float(np.max(e)) for e in ends), frac)


def reference_rounding(network: Network) -> dict:
    """Layers whose QONNX reference may round: QONNX computes MatMul/Conv/Add/average pooling in
    float32, exact only while every partial sum fits its 24-bit significand. Layer name ->
    significant bits the exact result may need (only layers needing more than 24)."""
    return {layer.name: layer.float32_bits for layer in network.layers
            if layer.float32_bits > FLOAT32_SIGNIFICAND}


def dyadic_requant(src: QTensor, scale: float, fmt: FixedFormat, mode, node) -> Requant:
    """Integer multiply + shift that reproduces QONNX's float32 `round(x / scale)` for every x.

    Checked exhaustively over the input's raw range (at most 2**24 values); SpecError if no
    multiplier of at most 32 bits matches.
    """
    rounding = qonnx_rounding(mode)
    if src is None:
        raise SpecError(f"node {node} (Quant): the input quantizer has the non-power-of-two "
                        f"scale {scale}; use a power-of-two input scale")
    f = exact_fixed(src.format)
    lo, hi = value_range(src)
    raw = np.arange(int(round(lo * 2.0 ** f.frac_bits)), int(round(hi * 2.0 ** f.frac_bits)) + 1,
                    dtype=np.int64)
    if raw.size > 1 << 24 or f.bits > FLOAT32_SIGNIFICAND:
        raise SpecError(f"node {node} (Quant): the non-power-of-two scale {scale} follows a "
                        f"{f.bits}-bit accumulator, too wide to prove a dyadic requantization "
                        "exact; use a power-of-two scale quantizer")
    x32 = (raw.astype(np.float64) * 2.0 ** -f.frac_bits).astype(np.float32)
    want = np.clip(_round((x32 / np.float32(scale)).astype(np.float64), rounding),
                   fmt.raw_min, fmt.raw_max).astype(np.int64)
    for shift in range(f.frac_bits, f.frac_bits + 48):
        mult = int(round(2.0 ** (shift - f.frac_bits) / scale))
        if mult.bit_length() > 32:
            break
        got = np.clip(_round(raw.astype(np.float64) * mult / 2.0 ** shift, rounding),
                      fmt.raw_min, fmt.raw_max)
        if np.array_equal(got, want):
            return Requant("dyadic", shift, mult, rounding, True)
    raise SpecError(f"node {node} (Quant): no integer multiply + shift reproduces QONNX's "
                    f"float32 division by the scale {scale}; use a power-of-two scale quantizer")


def import_qonnx(model) -> Network:
    """Clean a QONNX model (path, ModelProto or ModelWrapper) and map it onto a layer list.

    Raises SpecError/FormaError naming the node and the reason for anything forma cannot map
    exactly (unsupported op, non-constant weight, float datapath tensor, dynamic shape).
    """
    source = load_model(model)
    cleaned = clean(source.model.__deepcopy__())
    walk = _Walk(cleaned)
    out = walk.run()
    name = cleaned.graph.input[0].name
    return Network(cleaned, source, walk.layers, name, tuple(cleaned.get_tensor_shape(name)), out,
                   walk.input_perm)


# --- the reference --------------------------------------------------------------------------
@contextlib.contextmanager
def _ir_version_cap(cap=10):
    """qonnx 1.0 on onnx 1.23 writes IR 14 node models that onnxruntime rejects: cap the version."""
    import qonnx.util.basic as basic
    original = basic.qonnx_make_model

    def capped(*args, **kwargs):
        made = original(*args, **kwargs)
        made.ir_version = min(made.ir_version, cap)
        return made

    patched = [m for m in list(sys.modules.values()) if m is not None and
               getattr(m, "__name__", "").startswith("qonnx") and
               getattr(m, "qonnx_make_model", None) is original]
    for module in patched:
        module.qonnx_make_model = capped
    try:
        yield
    finally:
        for module in patched:
            module.qonnx_make_model = original


def execute_onnx(model, x) -> np.ndarray:
    """QONNX's own execution (float32) of a model as exported (path, proto or wrapper), on a batch.

    The model gets QONNX cleanup only (no layout change). `x` has shape (N, *input_shape[1:]) or
    (N, prod(input_shape)); the result is (N, *output_shape[1:]) float32 in the model's output
    scale: the reference both backends are compared against.
    """
    import qonnx.core.onnx_exec as oxe
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    model = clean(model, channels_last=False)
    name = model.graph.input[0].name
    shape = model.get_tensor_shape(name)
    x = np.asarray(x, dtype=np.float32).reshape(-1, *shape[1:])
    batch = ModelWrapper(model.model.__deepcopy__()).transform(ChangeBatchSize(len(x)))
    batch = batch.transform(InferShapes())
    with _ir_version_cap():
        out = oxe.execute_onnx(batch, {name: x})
    return np.asarray(out[batch.graph.output[0].name], dtype=np.float32)
