"""Fuzzing the QONNX importer and `forma export`/`forma run` with malformed models.

Mutated example and hand-built models either import into a consistent layer list or raise one
FormaError sentence; through the CLI a refused model exits non-zero with one stderr line and
writes nothing. FORMA_FUZZ_EXAMPLES raises the per-test input count for deeper runs.
"""
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from forma.cli import main
from forma.errors import FormaError
from forma.generators import native_plan
from forma.generators.qonnx_import import execute_onnx, import_qonnx, load_model
from forma.sim.formats import FixedFormat, FloatFormat

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODELS = ["digits_mlp", "digits_cnn", "digits_fp8"]
EXAMPLE_COUNT = int(os.environ.get("FORMA_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples):
    return settings(max_examples=EXAMPLE_COUNT or examples, deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))


# --- models to mutate -------------------------------------------------------------------------
def _quant(name, src, dst, scale, bits, signed=1, narrow=0):
    inits = {f"{name}_s": np.float32(scale), f"{name}_z": np.float32(0),
             f"{name}_b": np.float32(bits)}
    node = helper.make_node("Quant", [src, f"{name}_s", f"{name}_z", f"{name}_b"], [dst], name=name,
                            domain="qonnx.custom_op.general", signed=signed, narrow=narrow,
                            rounding_mode="ROUND")
    return node, inits


def _float_quant(name, src, dst):
    values = dict(s=1.0, e=4.0, m=3.0, bias=7.0, max=448.0)
    node = helper.make_node("FloatQuant", [src] + [f"{name}_{k}" for k in values], [dst],
                            name=name, domain="qonnx.custom_op.general", has_inf=0, has_nan=1,
                            has_subnormal=1, saturation=1, rounding_mode="ROUND")
    return node, {f"{name}_{k}": np.float32(v) for k, v in values.items()}


def _model(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def hand_mlp():
    """x[1,4] -> Quant -> MatMul (4-bit weights) + bias -> Relu -> Quant."""
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    qw, iw = _quant("qw", "w", "wq", 0.25, 4, narrow=1)
    qb, ib = _quant("qb", "b", "bq", 2 ** -5, 16)
    qo, io = _quant("qout", "r", "y", 0.25, 8, signed=0)
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 4 - 1
    nodes = [qi, qw, qb, helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "bq"], ["ab"], name="bias"),
             helper.make_node("Relu", ["ab"], ["r"], name="relu"), qo]
    return _model(nodes, {**ii, **iw, **ib, **io, "w": w, "b": np.array([0.5, -0.25])},
                  (1, 4), (1, 2))


def hand_cnn():
    """x[1,1,4,4] -> Quant -> Conv 3x3 -> MaxPool 2 -> Flatten -> MatMul (FP8) -> FloatQuant."""
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    qw, iw = _quant("qw", "w", "wq", 0.5, 4)
    qc, ic = _quant("qc", "c", "cq", 0.25, 8)
    fw, fiw = _float_quant("fw", "d", "dq")
    fo, fio = _float_quant("fo", "mm", "y")
    w = (np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) % 5 - 2) / 2
    d = (np.arange(16, dtype=np.float32).reshape(8, 2) % 7 - 3) / 4
    nodes = [qi, qw, helper.make_node("Conv", ["xq", "wq"], ["cv"], name="conv",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                                      dilations=[1, 1], group=1),
             qc, helper.make_node("MaxPool", ["cq"], ["mp"], name="pool", kernel_shape=[2, 2],
                                  strides=[2, 2], pads=[0, 0, 0, 0]),
             helper.make_node("Flatten", ["mp"], ["fl"], name="flat"), fw,
             helper.make_node("MatMul", ["fl", "dq"], ["mm"], name="dense"), fo]
    qc.input[0] = "cv"
    return _model(nodes, {**ii, **iw, **ic, **fiw, **fio, "w": w, "d": d}, (1, 1, 4, 4), (1, 2))


def base_models():
    """name -> serialized model: the examples and the hand-built graphs."""
    models = {name: (EXAMPLES / f"{name}.onnx").read_bytes() for name in MODELS}
    models.update(hand_mlp=hand_mlp().SerializeToString(), hand_cnn=hand_cnn().SerializeToString())
    return models


BASES = base_models()


# --- mutations: each edits a ModelProto in place, drawing its choices -------------------------
NONSENSE = [0.0, -3.0, 1e9, math.nan, math.inf, -math.inf, 0.5, 2.5, -0.0, 1e-45, 3e38, 1.0, 2.0,
            7.0, 8.0, 24.0, 33.0, 64.0, 65.0, -1.0, 0.1, 0.75, 256.0]
DTYPES = [np.float16, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_, np.str_]
OPS = ["Quant", "IntQuant", "FloatQuant", "BipolarQuant", "Trunc", "MatMul", "Gemm", "Conv",
       "Add", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose", "Mul",
       "Div", "Softmax", "Sigmoid", "Identity", "Concat", "NoSuchOp", ""]
ATTRS = ["signed", "narrow", "rounding_mode", "kernel_shape", "strides", "pads", "perm", "group",
         "dilations", "axis", "has_inf", "has_nan", "saturation", "transB", "alpha", "shape"]
ATTR_VALUES = [0, 1, -1, 2, 1 << 40, 0.5, math.nan, "ROUND", "FLOOR", "UP", "bogus", "",
               [0], [1, 1], [2, 2], [0, 0, 0, 0], [-1, 5], [0, 2, 3, 1], [1] * 9, [0.5]]
DIMS = [0, 1, 2, 3, 7, 1 << 31, 10 ** 12, -1, "batch"]
ELEM_TYPES = [TensorProto.INT8, TensorProto.DOUBLE, TensorProto.STRING, TensorProto.BOOL,
              TensorProto.UNDEFINED, TensorProto.FLOAT16]


def _names(model):
    g = model.graph
    names = {n for node in g.node for n in list(node.input) + list(node.output)}
    names |= {t.name for t in g.initializer} | {v.name for v in list(g.input) + list(g.output)}
    return sorted(names - {""}) + ["no_such_tensor", ""]


def _node(model, draw):
    return model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]


def drop_node(model, draw):
    del model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]


def duplicate_node(model, draw):
    i = draw(st.integers(0, len(model.graph.node) - 1))
    model.graph.node.insert(draw(st.integers(0, len(model.graph.node))), model.graph.node[i])


def rewire_input(model, draw):
    """Point an input at any tensor: a later node's output makes a cycle, a new name dangles."""
    node = _node(model, draw)
    if not node.input:
        node.input.append(draw(st.sampled_from(_names(model))))
    else:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(_names(model)))


def make_cycle(model, draw):
    nodes = model.graph.node
    late = draw(st.integers(0, len(nodes) - 1))
    early = draw(st.integers(0, late))
    if nodes[early].input and nodes[late].output:
        nodes[early].input[0] = nodes[late].output[0]


def rename_output(model, draw):
    node = _node(model, draw)
    if node.output:
        node.output[0] = draw(st.sampled_from(_names(model)))


def change_inputs_count(model, draw):
    node = _node(model, draw)
    if draw(st.booleans()) and node.input:
        del node.input[-1]
    else:
        node.input.append(draw(st.sampled_from(_names(model))))


def change_op(model, draw):
    node = _node(model, draw)
    node.op_type = draw(st.sampled_from(OPS))
    if draw(st.booleans()):
        node.domain = draw(st.sampled_from(["", "qonnx.custom_op.general", "ai.onnx", "bogus"]))


def set_attribute(model, draw):
    node = _node(model, draw)
    name = draw(st.sampled_from(ATTRS + [a.name for a in node.attribute]))
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if draw(st.integers(0, 4)):  # else: the attribute is deleted
        node.attribute.append(helper.make_attribute(name, draw(st.sampled_from(ATTR_VALUES))))


def drop_initializer(model, draw):
    inits = model.graph.initializer
    if inits:
        del inits[draw(st.integers(0, len(inits) - 1))]


def _replace_initializer(model, draw, edit):
    inits = model.graph.initializer
    if not inits:
        return
    i = draw(st.integers(0, len(inits) - 1))
    value = numpy_helper.to_array(inits[i])
    inits[i].CopyFrom(numpy_helper.from_array(np.asarray(edit(value)), inits[i].name))


def initializer_value(model, draw):
    """Nonsense values: bit widths 0, -3, 1e9, NaN, fractional; NaN/Inf/zero/negative scales."""
    fill = draw(st.sampled_from(NONSENSE))
    everywhere = draw(st.booleans())

    def edit(v):
        v = np.array(v, dtype=np.float64)
        if v.size:
            v.flat[0 if not everywhere else slice(None)] = fill
        return v.astype(np.float32)
    _replace_initializer(model, draw, edit)


def initializer_dtype(model, draw):
    dtype = draw(st.sampled_from(DTYPES))

    def edit(v):
        with np.errstate(all="ignore"):
            if v.dtype.kind in "USO":  # strings (as str or bytes) back to numbers first
                v = np.array([float(e) for e in v.ravel()], np.float64).reshape(v.shape)
            return v.astype(dtype)
    _replace_initializer(model, draw, edit)


def initializer_shape(model, draw):
    how = draw(st.sampled_from(["empty", "column", "tile", "scalar", "zero-dim", "huge-rank"]))

    def edit(v):
        return {"empty": lambda: np.zeros((0,), v.dtype), "column": lambda: v.reshape(-1, 1),
                "tile": lambda: np.concatenate([v.ravel(), v.ravel()[:1]]),
                "scalar": lambda: np.asarray(v.ravel()[0] if v.size else 0, v.dtype),
                "zero-dim": lambda: np.zeros((2, 0), v.dtype),
                "huge-rank": lambda: v.reshape((1,) * 7 + v.shape)}[how]()
    _replace_initializer(model, draw, edit)


def quant_parameter(model, draw):
    """A Quant/FloatQuant parameter set to nonsense, or made non-constant (a graph tensor)."""
    quants = [n for n in model.graph.node if n.op_type in ("Quant", "FloatQuant")]
    if not quants:
        return
    node = draw(st.sampled_from(quants))
    position = draw(st.integers(1, len(node.input) - 1))
    name = f"fuzz_param_{position}"
    if draw(st.integers(0, 3)):
        value = draw(st.sampled_from(NONSENSE))
        model.graph.initializer.append(numpy_helper.from_array(np.float32(value), name))
    else:  # computed at run time from the data
        name = draw(st.sampled_from([n for n in node.output] + _names(model)))
    node.input[position] = name


def graph_io(model, draw):
    g = model.graph
    how = draw(st.sampled_from(["dim", "dims", "elem", "extra_in", "extra_out", "no_out",
                                "no_in", "out_name", "empty"]))
    vi = g.input[0] if g.input else None
    if how == "dim" and vi is not None and vi.type.tensor_type.shape.dim:
        dims = vi.type.tensor_type.shape.dim
        d, value = dims[draw(st.integers(0, len(dims) - 1))], draw(st.sampled_from(DIMS))
        if isinstance(value, str):
            d.dim_param = value
        else:
            d.dim_value = value
    elif how == "dims" and vi is not None:
        shape = draw(st.lists(st.sampled_from([1, 2, 4, 16]), max_size=5))
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, TensorProto.FLOAT, shape))
    elif how == "elem" and vi is not None:
        vi.type.tensor_type.elem_type = draw(st.sampled_from(ELEM_TYPES))
    elif how == "extra_in":
        g.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 4]))
    elif how == "extra_out":
        g.output.append(helper.make_tensor_value_info(draw(st.sampled_from(_names(model))),
                                                      TensorProto.FLOAT, [1, 2]))
    elif how == "no_out":
        del g.output[:]
    elif how == "no_in":
        del g.input[:]
    elif how == "out_name" and g.output:
        g.output[0].name = draw(st.sampled_from(_names(model)))
    elif how == "empty":
        del g.node[:]


def opset(model, draw):
    model.opset_import[0].version = draw(st.sampled_from([1, 7, 11, 13, 99]))
    if draw(st.booleans()):
        model.ir_version = draw(st.sampled_from([0, 3, 8, 10, 99]))


MUTATIONS = [drop_node, duplicate_node, rewire_input, make_cycle, rename_output,
             change_inputs_count, change_op, set_attribute, drop_initializer, initializer_value,
             initializer_dtype, initializer_shape, quant_parameter, graph_io, opset]


def mutated(base: str, data) -> onnx.ModelProto:
    """A copy of BASES[base] with 1-3 drawn mutations."""
    model = onnx.ModelProto.FromString(BASES[base])
    for mutation in data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
                              label="mutations"):
        if not model.graph.node and mutation not in (graph_io, opset, drop_initializer):
            continue
        mutation(model, data.draw)
    return model


def corrupted(base: str, data) -> bytes:
    """The serialized model truncated, with flipped bytes, with a garbage prefix, or random."""
    raw = BASES[base]
    how = data.draw(st.sampled_from(["truncate", "flip", "prefix", "random", "text"]), label="how")
    if how == "truncate":
        return raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    if how == "flip":
        out = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1))
            out[i] ^= data.draw(st.integers(1, 255))
        return bytes(out)
    if how == "prefix":
        return data.draw(st.binary(min_size=1, max_size=16), label="prefix") + raw
    if how == "random":
        return data.draw(st.binary(max_size=512), label="bytes")
    return data.draw(st.text(max_size=64), label="text").encode()


# --- the contract -----------------------------------------------------------------------------
def one_sentence(error) -> bool:
    text = str(error)
    return (0 < len(text) < 500 and "\n" not in text and "Traceback" not in text
            and " object at 0x" not in text)


def _check_network(net):
    """What the importer promises of a network it returns (the backends rely on it)."""
    assert net.layers, "a network without layers"
    assert net.layers[0].kind == "quant" and net.layers[0].inputs == (None,)
    assert len(net.input_shape) >= 1 and all(isinstance(d, int) and d > 0 for d in net.input_shape)
    produced = set()
    for layer in net.layers:
        out = layer.output
        assert all(isinstance(d, int) and d > 0 for d in out.shape), (layer.name, out.shape)
        assert isinstance(out.format, (FixedFormat, FloatFormat)), (layer.name, out.format)
        assert math.isfinite(out.scale) and out.scale > 0, (layer.name, out.scale)
        for x in layer.inputs:
            assert x is None or x.name in produced, f"{layer.name} reads '{x.name}' too early"
        if layer.weight is not None:
            codes = np.asarray(layer.weight)
            assert codes.size and np.all(layer.weight_format.valid_code_mask(codes)), layer.name
        if layer.bias is not None:
            assert np.all(layer.bias_format.valid_code_mask(np.asarray(layer.bias))), layer.name
        produced.add(out.name)
    assert net.output.name in produced, f"the output '{net.output.name}' has no layer"
    reasons = native_plan.unsupported(net)  # the backend's own checks: a list, never a crash
    assert all(one_sentence(r) for r in reasons), reasons


def outcome(model) -> str:
    """'imported' or 'refused'; anything else (a traceback, a multi-line message) fails."""
    try:
        net = import_qonnx(model)
    except FormaError as error:
        assert one_sentence(error), repr(str(error))
        return "refused"
    _check_network(net)
    return "imported"


def _report(record_property, path, counts):
    total = sum(counts.values())
    print(f"{path}: {total} inputs tried (hypothesis derandomized; FORMA_FUZZ_EXAMPLES raises "
          f"the count), {dict(counts)}")
    record_property(f"fuzz_inputs_{path}", total)
    assert counts["refused"], f"{path}: the fuzzer never reached a refusal"


# --- the tests --------------------------------------------------------------------------------
def _fuzz_mutants(base, examples, record_property):
    counts = Counter()

    @fuzz_settings(examples)
    @given(data=st.data())
    def run(data):
        counts[outcome(mutated(base, data))] += 1
    run()
    _report(record_property, f"import-{base}", counts)
    assert counts["imported"], f"{base}: no mutant imported; the fuzzer only scratches the surface"


@pytest.mark.parametrize("base", sorted(BASES))
def test_mutated_models_import_or_raise_one_sentence(base, record_property):
    """Graph, attribute, initializer and I/O mutations of each base model."""
    _fuzz_mutants(base, 150, record_property)


@pytest.mark.bench
@pytest.mark.parametrize("base", sorted(BASES))
def test_mutated_models_deep(base, record_property):
    """The same with 2000 mutants per base model (`make bench`)."""
    _fuzz_mutants(base, 2000, record_property)


def test_corrupted_files_load_or_raise_one_sentence(tmp_path, record_property):
    """Truncated, bit-flipped, prefixed, random and text files through the file path."""
    counts = Counter()
    path = tmp_path / "model.onnx"

    @fuzz_settings(300)
    @given(base=st.sampled_from(MODELS), data=st.data())
    def run(base, data):
        path.write_bytes(corrupted(base, data))
        counts[outcome(path)] += 1
    run()
    _report(record_property, "file", counts)


def _edited(edit, build=hand_mlp):
    model = build()
    edit(model)
    return model


def _set_init(name, value):
    def edit(model):
        for t in model.graph.initializer:
            if t.name == name:
                t.CopyFrom(numpy_helper.from_array(np.asarray(value), name))
    return edit


def _node_named(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _three_conv_biases(model):
    """hand_cnn's Conv (2 output channels) gets a quantized bias of 3 values."""
    node, inits = _quant("qcb", "cb", "cbq", 0.125, 8)
    model.graph.node.insert(2, node)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k)
                                   for k, v in {**inits, "cb": np.zeros(3)}.items())
    _node_named(model, "conv").input.append("cbq")


# Each defect the fuzzer found (a traceback or a message without the node) as a fixed case.
DEFECTS = {
    "missing input (walker IndexError)":
        (lambda m: _node_named(m, "qin").input.pop(), r"node 'qin' \(Quant\) has 3 inputs"),
    "one-input Add (walker ValueError)":
        (lambda m: _node_named(m, "bias").input.pop(), r"node 'bias' \(Add\) has 1 inputs"),
    "empty scale (walker IndexError)":
        (_set_init("qin_s", np.zeros(0, np.float32)), r"\('qin'\) \(Quant\): its scale .* empty"),
    "scale not broadcasting (walker ValueError)":
        (_set_init("qw_s", np.ones(3, np.float32)), r"\('qw'\) \(Quant\): its scale has shape"),
    "duplicate value_info (QONNX AssertionError)":
        (lambda m: m.graph.value_info.append(m.graph.input[0]),
         "declares tensor 'x' more than once"),
    "attribute of the wrong type (walker TypeError)":
        (lambda m: _node_named(m, "qin").attribute.append(helper.make_attribute("signed", "yes")),
         r"node 'qin' \(Quant\): attribute 'signed' is of type STRING"),
    "bit width 0 (no node named)":
        (_set_init("qin_b", np.float32(0)), r"\('qin'\) \(Quant\): QONNX IntQuant bitwidth 0"),
    "per-element bit widths (silently the first)":
        (_set_init("qw_b", np.array([[4, 8]] * 4, np.float32)),
         r"\('qw'\) \(Quant\): its bit width holds several values"),
    "opset without shape inference (no node named)":
        (lambda m: m.opset_import[0].__setattr__("version", 1), r"\(Quant\): shape inference finds "
                                                                  "no shape"),
    "unknown QONNX custom op (no node named)":
        (lambda m: _node_named(m, "qw").__setattr__("op_type", "FmoatQuant"),
         r"node 'qw' \(FmoatQuant\): op 'FmoatQuant' is not an op of domain"),
    "NaN weight (from_raw ValueError)":
        (_set_init("w", np.full((4, 2), np.nan, np.float32)),
         r"\('qw'\) \(Quant\): the constant it quantizes contains NaN"),
    "NaN FP8 weight (range_format ValueError)":
        (_set_init("d", np.full((8, 2), np.nan, np.float32)),
         r"\('fw'\) \(FloatQuant\): the constant it quantizes contains NaN", hand_cnn),
    "Transpose whose perm is no permutation":
        (lambda m: m.graph.node.insert(1, helper.make_node("Transpose", ["xq"], ["xt"], name="t",
                                                           perm=[0, 0])),
         r"node 't' \(Transpose\): shape inference finds no shape for its output 'xt'"),
    "Conv bias of the wrong length (walker ValueError)":
        (_three_conv_biases, r"\('conv'\) \(Conv\): its bias has shape \[3\]; it needs one "
                             r"value per output channel \(2\)", hand_cnn),
    "cycle": (lambda m: _node_named(m, "qin").input.__setitem__(0, "r"),
              r"\((Quant|Relu)\) depends on its own output"),
    "missing initializer": (lambda m: m.graph.initializer.pop(0),
                            r"node 'qin' \(Quant\) reads 'qin_s', which no node"),
    "int8 graph input": (lambda m: m.graph.input[0].type.tensor_type.__setattr__(
        "elem_type", TensorProto.INT8), "tensor 'x' has element type INT8"),
    "huge batch (MemoryError in QONNX)":
        (lambda m: m.graph.input[0].type.tensor_type.shape.dim[0].__setattr__("dim_value", 1 << 31),
         "tensor 'x' has 8589934592 elements"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defects_found_by_fuzzing_raise_one_sentence(defect):
    edit, message, *build = DEFECTS[defect]
    with pytest.raises(FormaError, match=message) as info:
        import_qonnx(_edited(edit, *build))
    assert one_sentence(info.value), str(info.value)


def _weight_transposed_mlp(perm):
    """hand_mlp with its weight stored [out, in] and transposed by a Transpose (perm or none)."""
    model = hand_mlp()
    w = next(t for t in model.graph.initializer if t.name == "w")
    w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), "w"))
    model.graph.node.insert(2, helper.make_node("Transpose", ["wq"], ["wt"], name="wt",
                                                **({} if perm is None else dict(perm=perm))))
    _node_named(model, "mm").input[1] = "wt"
    return model


def test_transpose_without_perm_reverses_the_axes():
    """ONNX's default perm: a weight Transpose without perm imports as with perm [1, 0], and the
    importer's integer reference equals QONNX on 256 seeded random inputs (seed 11)."""
    explicit, default = (import_qonnx(_weight_transposed_mlp(p)) for p in ([1, 0], None))
    assert [l.kind for l in default.layers] == ["quant", "dense", "relu", "quant"]
    dense = [next(l for l in n.layers if l.kind == "dense") for n in (explicit, default)]
    assert np.array_equal(dense[0].weight, dense[1].weight) and dense[1].weight.shape == (4, 2)
    x = np.random.default_rng(11).integers(-140, 140, (256, 4)) / 8
    got = native_plan.reference_outputs(default, native_plan.plan(default), x)
    assert np.array_equal(got, execute_onnx(_weight_transposed_mlp(None), x))


def test_invalid_utf8_text_is_refused(tmp_path):
    """protobuf hands undecodable text back as bytes (QONNX then raised UnicodeDecodeError)."""
    model = hand_mlp()
    model.graph.node[1].doc_string = "AAAA"
    path = tmp_path / "utf.onnx"
    path.write_bytes(model.SerializeToString().replace(b"AAAA", b"\xb4AAA"))
    with pytest.raises(FormaError, match="text field 'doc_string' is not UTF-8"):
        import_qonnx(path)


def test_load_model_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(FormaError, match="does not exist"):
        load_model(tmp_path / "absent.onnx")
    with pytest.raises(FormaError, match="is not a file"):
        load_model(tmp_path)
    with pytest.raises(FormaError, match="ModelProto"):
        load_model(42)


# --- through the CLI: exit non-zero, one line on stderr, nothing written ----------------------
def _malformed_files(tmp_path):
    """One file per defect class the CLI must refuse before any build."""
    raw = BASES["digits_mlp"]
    cycle = onnx.ModelProto.FromString(raw)
    cycle.graph.node[0].input[0] = cycle.graph.node[-1].output[0]
    nan_scale = hand_mlp()
    nan_scale.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.float32(math.nan), "qin_s"))
    files = {"truncated": raw[: len(raw) // 2], "random": bytes(range(256)) * 3,
             "text": b"not an onnx model\n", "empty": b"", "cycle": cycle.SerializeToString(),
             "nan_scale": nan_scale.SerializeToString()}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (tmp_path / f"{name}.onnx").write_bytes(data)
    return sorted(tmp_path.glob("*.onnx"))


def _refused_without_writing(argv, out, capsys):
    """main(argv) fails with one stderr line and leaves `out` as it was (absent or unchanged)."""
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None)
                    for p in out.rglob("*")) if out.exists() else None
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code != 0, f"{argv}: exit 0"
    assert len(lines) == 1 and lines[0].startswith("forma: error: "), captured.err
    assert one_sentence(lines[0])
    after = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None)
                   for p in out.rglob("*")) if out.exists() else None
    assert after == before, f"{argv}: the output folder changed"


def test_cli_refuses_malformed_files_in_a_subprocess(tmp_path):
    """The real entry point: no traceback, exit 2, one stderr line, --out never created."""
    for path in _malformed_files(tmp_path / "models")[:4]:
        out = tmp_path / f"out-{path.stem}"
        result = subprocess.run([sys.executable, "-m", "forma.cli", "export", str(path),
                                 "--backend", "native", "--out", str(out)],
                                capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, (path.stem, result.returncode, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, \
            (path.stem, result.stderr)
        assert result.stdout == "" and not out.exists(), path.stem
    assert not list(tmp_path.glob("build")), "a default output folder was created"


@pytest.mark.parametrize("command", ["export", "run"])
def test_cli_refuses_fuzzed_models_and_writes_nothing(command, tmp_path, capsys,
                                                      record_property):
    """Mutated and corrupted models through `forma export`/`forma run` (both backends), into an
    absent and into an existing --out folder; models that would reach a build are not run."""
    counts = Counter()
    model, out = tmp_path / "model.onnx", tmp_path / "out"
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 64), np.float32))

    @fuzz_settings(60)
    @given(base=st.sampled_from(sorted(BASES)), corrupt=st.booleans(),
           backend=st.sampled_from(["native", "hls4ml"]), existing=st.booleans(), data=st.data())
    def run(base, corrupt, backend, existing, data):
        if corrupt:
            model.write_bytes(corrupted(base if base in MODELS else "digits_mlp", data))
        else:
            model.write_bytes(mutated(base, data).SerializeToString())
        try:
            net = import_qonnx(model)
        except FormaError:
            net = None
        if net is not None and (backend == "hls4ml" or not native_plan.unsupported(net)):
            counts["would build (not run)"] += 1
            return
        if existing:
            out.mkdir(exist_ok=True)
            (out / "report.md").write_text("an earlier, complete export\n")
        argv = [command, str(model), "--backend", backend, "--out", str(out)]
        argv += ["--inputs", str(inputs), "--outputs", str(tmp_path / "y.npy")] \
            if command == "run" else []
        _refused_without_writing(argv, out, capsys)
        assert not (tmp_path / "y.npy").exists()
        counts["refused"] += 1
    run()
    _report(record_property, f"cli-{command}", counts)
