"""QONNX model validation: is a model one the importer can read and map (one sentence per refusal).

Checks the raw graph before QONNX sees it (`_check_graph`) and the cleaned graph after cleanup.
"""
from __future__ import annotations

import math

import numpy as np

from forma.errors import FormaError, SpecError
from forma.sim.formats.qonnx_map import (from_qonnx_floatquant, from_qonnx_intquant,
                                         qonnx_rounding)

#: ONNX ops the importer maps (after QONNX cleanup, channels-last conversion and GemmToMatMul)
SUPPORTED_OPS = ("Quant", "IntQuant", "BipolarQuant", "FloatQuant", "Trunc", "MatMul", "Gemm",
                 "Conv", "BatchNormalization", "Add", "Relu", "MaxPool", "GlobalAveragePool",
                 "Flatten", "Reshape", "Transpose", "Mul", "Div")


def _label(node) -> str:
    """'Cleaned_name' plus the exporter's own node name, kept in doc_string by
    `qonnx_import.clean`."""
    return f"'{node.name}'" + (f" ('{node.doc_string}')" if node.doc_string not in ("", node.name)
                               else "")


def _check_static_shapes(model):
    inits = {t.name for t in model.graph.initializer}
    for vi in [v for v in model.graph.input if v.name not in inits] + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims or any(d.dim_param or d.dim_value <= 0 for d in dims):
            raise SpecError(f"tensor '{vi.name}' has a dynamic shape "
                            f"({[d.dim_param or d.dim_value for d in dims]}); export with a fixed "
                            "input shape (batch 1)")
        kind = vi.type.tensor_type.elem_type
        if kind != TENSOR_FLOAT:
            from onnx import TensorProto
            kind = TensorProto.DataType.Name(kind) if kind in TensorProto.DataType.values() \
                else kind
            raise SpecError(f"tensor '{vi.name}' has element type {kind}; forma maps float32 "
                            "graph inputs and outputs (QONNX's convention)")
        size = math.prod(d.dim_value for d in dims)
        if size > MAX_TENSOR_ELEMENTS:
            raise SpecError(f"tensor '{vi.name}' has {size} elements (shape "
                            f"{[d.dim_value for d in dims]}); forma maps at most "
                            f"{MAX_TENSOR_ELEMENTS}")


def _check_single_io(model):
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise SpecError(f"the model has {len(model.graph.input)} inputs and "
                        f"{len(model.graph.output)} outputs; forma maps one input and one output")


def _one_line(error, limit=200) -> str:
    """An exception from ONNX/QONNX as one line: its type and its whitespace-collapsed text."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


#: op -> (fewest, most) inputs, for the ops the importer or QONNX's cleanup reads by position
_ARITY = {"Quant": (4, 4), "IntQuant": (4, 4), "FloatQuant": (6, 6), "BipolarQuant": (2, 2),
          "Trunc": (5, 6), "MatMul": (2, 2), "Gemm": (2, 3), "Conv": (2, 3), "Add": (2, 2),
          "Mul": (2, 2), "Div": (2, 2), "Relu": (1, 1), "MaxPool": (1, 1),
          "GlobalAveragePool": (1, 1), "Flatten": (1, 1), "Reshape": (2, 2), "Transpose": (1, 1),
          "BatchNormalization": (5, 5)}
#: attribute name -> the AttributeProto type the importer reads it as (on the ops above)
_ATTR_TYPES = {**dict.fromkeys(["signed", "narrow", "has_inf", "has_nan", "has_subnormal",
                                "saturation", "group", "axis", "transA", "transB"], "INT"),
               **dict.fromkeys(["kernel_shape", "strides", "pads", "dilations", "perm"], "INTS"),
               "rounding_mode": "STRING", "alpha": "FLOAT", "beta": "FLOAT"}
#: onnx.TensorProto.FLOAT, the element type of the graph input and output
TENSOR_FLOAT = 1
#: largest element count of the graph input/output (the backends build per-element tables)
MAX_TENSOR_ELEMENTS = 1 << 24


def _node_label(node, index) -> str:
    return f"node '{node.name}' ({node.op_type})" if node.name else \
        f"node #{index} ({node.op_type or 'no op type'})"


def _check_text(message, where):
    """Every string field decodes (protobuf checks UTF-8 only when a field is read)."""
    try:
        pending = [message]
        while pending:
            for fd, value in pending.pop().ListFields():
                if fd.type == fd.TYPE_STRING:  # undecodable text comes back as bytes
                    if any(isinstance(v, bytes) for v in ([value] if isinstance(value, (str, bytes))
                                                          else value)):
                        raise UnicodeDecodeError("utf-8", b"", 0, 1, fd.name)
                elif fd.message_type is not None:
                    pending.extend([value] if hasattr(value, "ListFields") else value)
    except UnicodeDecodeError as error:
        field = f" '{error.reason}'" if error.reason.isidentifier() else ""
        raise FormaError(f"{where} is not a readable ONNX model (a text field{field} is not "
                         "UTF-8); re-export it") from None


def _check_graph(proto, where):
    """Before QONNX sees the graph: text decodes, every node has the inputs its op reads and
    attributes of the right type, every tensor has one producer, initializers are numeric
    arrays, and the nodes form no cycle."""
    _check_text(proto, where)
    graph = proto.graph
    if not graph.node:
        raise FormaError(f"{where} is not a readable ONNX model (it has no graph nodes)")
    infos = [v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)]
    twice = sorted({n for n in infos if infos.count(n) > 1} - {v.name for v in graph.output
                                                              if v.name in
                                                              {i.name for i in graph.input}})
    if twice:
        raise FormaError(f"{where} declares tensor '{twice[0]}' more than once (graph inputs, "
                         "outputs and value_info must have distinct names); re-export it")
    _check_initializers(graph, where)
    producer = {t.name: "an initializer" for t in graph.initializer}
    producer.update({v.name: "a graph input" for v in graph.input if v.name not in producer})
    for index, node in enumerate(graph.node):
        _check_node(node, index)
        for name in node.output:
            if name and name in producer:
                raise FormaError(f"{_node_label(node, index)} writes tensor '{name}', which "
                                 f"{producer[name]} already provides; every tensor needs one "
                                 "producer")
            producer[name] = _node_label(node, index)
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in producer:
                raise FormaError(f"{_node_label(node, index)} reads '{name}', which no node, "
                                 "initializer or graph input provides (a missing initializer?)")
    for vi in graph.output:
        if vi.name not in producer:
            raise FormaError(f"the graph output '{vi.name}' is not computed by any node")
    _check_acyclic(graph)


def _check_node(node, index):
    if node.domain.startswith(("qonnx.custom_op", "finn.custom_op")):
        from qonnx.custom_op.registry import getCustomOp
        try:
            getCustomOp(node)
        except Exception:
            raise SpecError(f"{_node_label(node, index)}: op '{node.op_type}' is not an op of "
                            f"domain '{node.domain}'; supported ops: "
                            f"{', '.join(SUPPORTED_OPS)}") from None
    if node.op_type not in _ARITY:
        return
    lo, hi = _ARITY[node.op_type]
    given = len(node.input)
    if not lo <= given <= hi or not all(node.input[:lo]) or not node.output:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise SpecError(f"{_node_label(node, index)} has {given} inputs "
                        f"({sum(1 for n in node.input if n)} named) and {len(node.output)} "
                        f"outputs; {node.op_type} takes {want} inputs and one output")
    from onnx import AttributeProto
    for a in node.attribute:
        want = _ATTR_TYPES.get(a.name)
        if want is not None and a.type != getattr(AttributeProto, want):
            raise SpecError(f"{_node_label(node, index)}: attribute '{a.name}' is of type "
                            f"{AttributeProto.AttributeType.Name(a.type)}; it must be {want}")


def _check_initializers(graph, where):
    from onnx import TensorProto, numpy_helper
    for t in graph.initializer:
        try:
            value = numpy_helper.to_array(t)
        except Exception as error:
            raise FormaError(f"{where}: initializer '{t.name}' cannot be read as an array "
                             f"({_one_line(error, 80)}); re-export the model") from None
        if value.dtype.kind not in "biuf":
            raise SpecError(f"initializer '{t.name}' holds {TensorProto.DataType.Name(t.data_type)}"
                            " values; forma reads numeric (integer or float) constants only")


#: quantizer op -> names of its parameter inputs (after the data input), in order
_QUANT_PARAMETERS = {
    "Quant": ("scale", "zero point", "bit width"), "IntQuant": ("scale", "zero point", "bit width"),
    "FloatQuant": ("scale", "exponent bit width", "mantissa bit width", "exponent bias",
                   "max value")}


def _check_quantizer_parameters(model):
    """On the cleaned graph: each constant quantizer parameter is non-empty and broadcasts onto
    the quantized tensor; the format parameters (all but scale and zero point) hold one value;
    a constant it quantizes holds no NaN (no weight or bias code should stand for it)."""
    for node in model.graph.node:
        data = model.get_initializer(node.input[0]) if node.input else None
        if node.op_type in _QUANT_PARAMETERS and data is not None and \
                np.any(np.isnan(np.asarray(data, np.float64))):
            raise SpecError(f"node {_label(node)} ({node.op_type}): the constant it quantizes "
                            "contains NaN; re-export the model")
        for name, what in zip(node.input[1:], _QUANT_PARAMETERS.get(node.op_type, ())):
            value = model.get_initializer(name)
            if value is None:
                continue  # the walker names non-constant parameters
            value = np.asarray(value, dtype=np.float64)
            if value.size == 0:
                raise SpecError(f"node {_label(node)} ({node.op_type}): its {what} '{name}' is "
                                "an empty tensor; give one value (or one per channel)")
            shape = model.get_tensor_shape(node.input[0])
            try:
                fits = shape is None or np.broadcast_shapes(tuple(shape), value.shape) == \
                    tuple(shape)
            except ValueError:
                fits = False
            if not fits:
                raise SpecError(f"node {_label(node)} ({node.op_type}): its {what} has shape "
                                f"{list(value.shape)}, which does not broadcast onto the "
                                f"quantized tensor's shape {list(shape)}")
            if what not in ("scale", "zero point") and np.all(np.isfinite(value)) and \
                    np.any(value != value.flat[0]):
                raise SpecError(f"node {_label(node)} ({node.op_type}): its {what} holds "
                                f"several values ({np.unique(value)[:4].tolist()}); forma maps "
                                "one format per tensor")
        _check_quantizer_format(model, node)


def _check_quantizer_format(model, node):
    """The node's constant, finite format parameters and attributes map onto a forma format
    (the mapping's own SpecError, prefixed with the node)."""
    from onnx import helper
    names = _QUANT_PARAMETERS.get(node.op_type)
    if names is None:
        return
    values = [model.get_initializer(n) for n in node.input[2:]]
    if any(v is None or not np.all(np.isfinite(np.asarray(v, np.float64))) for v in values):
        return  # the walker names non-constant and NaN/infinite parameters
    first = [float(np.ravel(v)[0]) for v in values]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    try:
        qonnx_rounding(attrs.get("rounding_mode", b"ROUND").decode(errors="replace"))
        if node.op_type == "FloatQuant":
            from_qonnx_floatquant(*first, bool(attrs.get("has_inf", 0)),
                                  bool(attrs.get("has_nan", 0)))
        else:
            from_qonnx_intquant(first[1], int(attrs.get("signed", 1)), int(attrs.get("narrow", 0)))
    except SpecError as error:
        raise SpecError(f"node {_label(node)} ({node.op_type}): {error}") from None


def _check_transposes(model):
    """On the cleaned graph: each Transpose names its permutation, one of its input's axes."""
    from onnx import helper
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"),
                    None)
        shape = model.get_tensor_shape(node.input[0])
        if perm is None or (shape is not None and sorted(perm) != list(range(len(shape)))):
            axes = "its input's axes" if shape is None else f"its input's {len(shape)} axes"
            raise SpecError(f"node {_label(node)} (Transpose): perm {perm} is not a permutation "
                            f"of {axes}; give perm explicitly, one entry per axis")


def _check_conv_biases(model):
    """On the cleaned graph: a Conv bias has one value per output channel (ONNX's shape
    inference does not check it)."""
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or not node.input[2]:
            continue
        weight, bias = (model.get_tensor_shape(n) for n in node.input[1:3])
        if weight and bias is not None and math.prod(bias) != weight[0]:
            raise SpecError(f"node {_label(node)} (Conv): its bias has shape {list(bias)}; it "
                            f"needs one value per output channel ({weight[0]})")


def _check_shapes_inferred(model):
    """After ONNX/QONNX shape inference every node output has a shape; else name the first
    node without one (an attribute, input or opset the inference cannot use)."""
    for node in model.graph.node:
        for name in node.output:
            if name and model.get_tensor_shape(name) is None:
                opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}"
                                   for o in model.model.opset_import)
                raise SpecError(f"node {_label(node)} ({node.op_type or 'no op type'}): shape "
                                f"inference finds no shape for its output '{name}' (opsets: "
                                f"{opsets}); check its inputs, attributes and the model's opset")


def _check_acyclic(graph):
    """Kahn's order over the node graph; the first node left over sits on (or after) a cycle."""
    producers = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    waiting = [{producers[n] for n in node.input if n in producers} for node in graph.node]
    readers = [[] for _ in graph.node]
    for i, deps in enumerate(waiting):
        for d in deps:
            readers[d].append(i)
    ready = [i for i, deps in enumerate(waiting) if not deps]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for r in readers[i]:
            waiting[r].discard(i)
            if not waiting[r]:
                ready.append(r)
    if done < len(graph.node):
        stuck = next(i for i, deps in enumerate(waiting) if deps)
        raise SpecError(f"{_node_label(graph.node[stuck], stuck)} depends on its own output "
                        "(the graph has a cycle); export an acyclic graph")
