"""QONNX front end: the example models map onto exact layer lists; bad models fail before any build."""
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from forma.errors import FormaError, SpecError
from forma.generators.qonnx_import import execute_onnx, import_qonnx, reference_rounding

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = ["digits_mlp", "digits_cnn", "digits_fp8"]


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


@pytest.mark.parametrize("name", MODELS)
def test_example_models_import_and_reach_their_accuracy(name, digits):
    """Every example imports; QONNX's own execution classifies the digits test set well."""
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    assert net.layers[0].kind == "quant" and net.layers[0].inputs == (None,)
    assert net.output.name == net.layers[-1].output.name
    x, y = digits
    out = execute_onnx(net.source, x)
    assert out.shape == (len(x), 10)
    assert np.mean(out.argmax(1) == y) > 0.9


def test_mlp_layer_list_has_mixed_precision_and_exact_accumulators(digits):
    """W4A8 then W2A4: weights as integer codes with their formats; accumulators never overflow."""
    net = import_qonnx(EXAMPLES / "digits_mlp.onnx")
    dense = [l for l in net.layers if l.kind == "dense"]
    assert [l.weight_format.bits for l in dense] == [4, 2, 4]
    quants = [l.output.format for l in net.layers if l.kind == "quant"]
    assert [(f.bits, f.signed) for f in quants] == [(5, False), (8, False), (4, False), (8, True)]
    x = digits[0].astype(np.float64)
    for layer in dense[:1]:
        w = layer.weight_format.decode(layer.weight)
        acc = x @ w + layer.bias_format.decode(layer.bias)
        assert layer.output.format.min_value <= acc.min() and acc.max() <= layer.output.format.max_value
        assert np.all(acc * 2.0 ** layer.output.format.frac_bits % 1 == 0)  # on the accumulator grid
    shifts = [l.requant for l in net.layers if l.kind == "quant"]
    assert all(r.kind == "shift" and r.multiplier == 1 for r in shifts)


def test_fp8_weights_keep_their_minifloat_format():
    """QONNX's cleanup would fold FloatQuant weights into float32; the importer keeps E4M3."""
    net = import_qonnx(EXAMPLES / "digits_fp8.onnx")
    dense = [l for l in net.layers if l.kind == "dense"]
    assert [l.weight_format.name for l in dense] == ["float8_e4m3fn"] * 2
    assert [l.requant.kind for l in net.layers if l.kind == "quant"][1:] == ["minifloat"] * 2


def test_cnn_maps_conv_pool_flatten(digits):
    net = import_qonnx(EXAMPLES / "digits_cnn.onnx")
    kinds = [l.kind for l in net.layers if l.kind != "quant"]
    assert kinds == ["conv2d", "relu", "maxpool2d", "conv2d", "relu", "maxpool2d", "reshape", "dense"]
    conv = next(l for l in net.layers if l.kind == "conv2d")
    assert conv.attrs["kernel_shape"] == (3, 3) and conv.weight.shape == (8, 3, 3, 1)


# --- bad inputs: one sentence naming the node and the reason ------------------------------
def _graph(nodes, inits, in_shape=(1, 4), out_shape=(1, 2), in_name="x", out_name="y"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        [helper.make_tensor(k, TensorProto.FLOAT, np.shape(v), np.ravel(v).tolist())
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _quant(name, src, dst, scale, bits, signed=1, narrow=0):
    inits = {f"{name}_s": np.float32(scale), f"{name}_z": np.float32(0), f"{name}_b": np.float32(bits)}
    node = helper.make_node("Quant", [src, f"{name}_s", f"{name}_z", f"{name}_b"], [dst], name=name,
                            domain="qonnx.custom_op.general", signed=signed, narrow=narrow,
                            rounding_mode="ROUND")
    return node, inits


def _mlp(weight_quantized=True, weight_scale=0.25, op="MatMul", act_quant=True, in_scale=0.125):
    qi, ii = _quant("qin", "x", "xq", in_scale, 8)
    qo, io = _quant("qout", "mm", "y", 0.25, 8)
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 4 - 1
    nodes, inits = [qi], {**ii, **io, "w": w}
    if weight_quantized:
        qw, iw = _quant("qw", "w", "wq", weight_scale, 4, narrow=1)
        nodes.append(qw)
        inits.update(iw)
    nodes.append(helper.make_node(op, ["xq" if act_quant else "x",
                                       "wq" if weight_quantized else "w"], ["mm"], name="mm"))
    nodes.append(qo)
    return _graph(nodes, inits)


def _unknown_op():
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    qo, io = _quant("qout", "sm", "y", 0.25, 8)
    return _graph([qi, helper.make_node("Softmax", ["xq"], ["sm"], name="sm"), qo], {**ii, **io},
                  out_shape=(1, 4))


def test_hand_built_mlp_is_exact_and_matches_qonnx():
    model = _mlp()
    net = import_qonnx(model)
    assert [l.kind for l in net.layers] == ["quant", "dense", "quant"]
    x = np.random.default_rng(1).integers(-128, 128, (64, 4)) / 8
    out = execute_onnx(model, x)
    w = net.layers[1].weight_format.decode(net.layers[1].weight)
    acc = np.clip(x, -16, 15.875) @ w
    assert np.array_equal(out, np.clip(np.round(acc / 0.25), -128, 127) * 0.25)


@pytest.mark.parametrize("build, message", [
    (lambda: _mlp(weight_quantized=False), "(MatMul).*is a float constant without a quantizer"),
    (lambda: _unknown_op(), "op Softmax is not supported; supported ops: Quant"),
    (lambda: _mlp(act_quant=False), r"is a float \(non-quantized\) tensor on the datapath"),
    (lambda: _mlp(weight_scale=float("nan")), "contains NaN or infinity"),
    (lambda: _mlp(weight_scale=0.3), "is not a power of two"),
])
def test_bad_models_fail_with_the_node_and_the_reason(build, message):
    with pytest.raises(SpecError, match=message) as info:
        import_qonnx(build())
    assert "\n" not in str(info.value) and "node '" in str(info.value)


def test_non_constant_weight_is_refused():
    qa, ia = _quant("qa", "x", "a", 0.125, 8)
    qb, ib = _quant("qb", "x", "b", 0.125, 8)
    mm = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    model = _graph([qa, qb, mm], {**ia, **ib}, in_shape=(4, 4), out_shape=(4, 4))
    with pytest.raises(SpecError, match=r"node 'MatMul_0' \('mm'\) \(MatMul\): weight .* is not a "
                                        "constant"):
        import_qonnx(model)


def test_truncated_and_dynamic_models_are_refused(tmp_path):
    data = (EXAMPLES / "digits_mlp.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(FormaError, match="is not a readable ONNX model"):
        import_qonnx(bad)
    with pytest.raises(FormaError, match="does not exist"):
        import_qonnx(tmp_path / "missing.onnx")
    model = _mlp()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(SpecError, match="dynamic shape"):
        import_qonnx(model)


def test_dyadic_requantization_reproduces_qonnx_float32():
    """A non-power-of-two output scale becomes an integer multiply + shift equal to QONNX's."""
    model = _mlp()
    for init in model.graph.initializer:
        if init.name == "qout_s":
            init.float_data[:] = [0.1]
    net = import_qonnx(model)
    rq = net.layers[-1].requant
    assert rq.kind == "dyadic" and rq.multiplier > 1
    assert net.output.scale == pytest.approx(0.1)
    x = np.random.default_rng(2).integers(-128, 128, (256, 4)) / 8
    acc_fmt = net.layers[1].output.format
    w = net.layers[1].weight_format.decode(net.layers[1].weight)
    raw = np.round(np.clip(x, -16, 15.875) @ w * 2.0 ** acc_fmt.frac_bits).astype(np.int64)
    codes = np.clip(np.round(raw * rq.multiplier / 2.0 ** rq.shift), -128, 127)
    assert np.array_equal(execute_onnx(model, x), (codes * np.float32(0.1)).astype(np.float32))


def test_scale_without_an_exact_dyadic_form_is_refused():
    """x / 0.75 in float32 rounds exact ties to even; no single multiply + shift does that."""
    model = _mlp()
    for init in model.graph.initializer:
        if init.name == "qout_s":
            init.float_data[:] = [0.75]
    with pytest.raises(SpecError, match="no integer multiply \\+ shift reproduces QONNX"):
        import_qonnx(model)


def _float_quant_mlp(rounding):
    """x -> Quant -> MatMul (FP8 E4M3 weights) -> FloatQuant(rounding) activations."""
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    values = dict(s=1.0, e=4.0, m=3.0, bias=7.0, max=448.0)
    inits = {**ii, "w": np.arange(8, dtype=np.float32).reshape(4, 2) / 4 - 1,
             **{f"fw_{k}": np.float32(v) for k, v in values.items()},
             **{f"fa_{k}": np.float32(v) for k, v in values.items()}}

    def fq(name, src, dst, mode):
        return helper.make_node("FloatQuant", [src] + [f"{name}_{k}" for k in values], [dst],
                                name=name, domain="qonnx.custom_op.general", has_inf=0,
                                has_nan=1, has_subnormal=1, saturation=1, rounding_mode=mode)
    nodes = [qi, fq("fw", "w", "wq", "ROUND"), helper.make_node("MatMul", ["xq", "wq"], ["mm"],
                                                                 name="mm"),
             fq("fa", "mm", "y", rounding)]
    return _graph(nodes, inits)


@pytest.mark.parametrize("mode", ["FLOOR", "CEIL", "UP", "DOWN"])
def test_floatquant_directed_rounding_is_refused_by_name(mode):
    """QONNX's FloatQuant picks the binade with a float32 log2, so directed rounding lands a
    grid step off just below powers of two (sim/formats tests): refused, naming the node."""
    with pytest.raises(SpecError, match=rf"node '\w+' \('fa'\) \(FloatQuant\): rounding_mode "
                                        rf"{mode} is not mapped"):
        import_qonnx(_float_quant_mlp(mode))
    assert import_qonnx(_float_quant_mlp("ROUND")).layers[-1].requant.kind == "minifloat"


def _pool_graph(h, w, transpose_twice=False):
    """x[1,2,h,w] -> Quant -> GlobalAveragePool -> Quant, optionally via two H/W swaps."""
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    qo, io = _quant("qout", "g", "y", 0.0625, 8)
    nodes, src = [qi], "xq"
    if transpose_twice:
        nodes += [helper.make_node("Transpose", ["xq"], ["t1"], name="t1", perm=[0, 1, 3, 2]),
                  helper.make_node("Transpose", ["t1"], ["t2"], name="t2", perm=[0, 1, 3, 2])]
        src = "t2"
    nodes += [helper.make_node("GlobalAveragePool", [src], ["g"], name="gap"), qo]
    return _graph(nodes, {**ii, **io}, in_shape=(1, 2, h, w), out_shape=(1, 2, 1, 1))


def test_global_average_pool_counts_the_positions_of_its_layout():
    """An NCHW pool divides by H*W (not C*H): 4x4 -> 16 positions, exact as a sum + LSB move."""
    net = import_qonnx(_pool_graph(4, 4, transpose_twice=True))
    pool = next(l for l in net.layers if l.kind == "global_avgpool")
    assert pool.attrs == dict(count=16, channels_last=False) and pool.float32_bits == 12
    x = np.random.default_rng(3).integers(-128, 128, (64, 2, 4, 4)) / 8
    want = execute_onnx(_pool_graph(4, 4, transpose_twice=True), x).reshape(64, 2)
    mean = np.clip(x, -16, 15.875).mean(axis=(2, 3))
    assert np.array_equal(want, np.clip(np.round(mean / 0.0625), -128, 127) * 0.0625)


@pytest.mark.parametrize("h, w, stages", [(3, 5, 1), (3, 4, 2)])
def test_global_average_pool_over_a_non_power_of_two_is_a_proven_dyadic_requantization(h, w,
                                                                                        stages):
    """15 positions: the exact sum times a multiplier and a shift; 12 positions, where sums 6n + 3
    are exact ties that QONNX rounds to even: an exact floor division by 3 first, then a rounding
    shift. Both equal QONNX's float32 mean and Quant for every sum (proven in the importer) and
    on 256 seeded random inputs."""
    from forma.generators import native_plan
    model = _pool_graph(h, w)
    net = import_qonnx(model)
    pool = next(i for i, l in enumerate(net.layers) if l.kind == "global_avgpool")
    assert [l.kind for l in net.layers[pool + 1:]] == ["quant"] * stages
    assert net.layers[pool + 1].requant.multiplier > 1
    x = np.random.default_rng(3).integers(-140, 140, (256, 2, h, w)) / 8
    got = native_plan.reference_outputs(net, native_plan.plan(net), x)
    assert np.array_equal(got, execute_onnx(model, x))


def test_global_average_pool_without_an_exact_form_is_refused():
    """Mean then a Quant of scale 0.1: float32 rounds some x / 0.1 onto a tie that no multiply +
    shift reproduces; sums wider than float32's significand are refused too."""
    for shape in ((3, 5), (3, 4)):
        model = _pool_graph(*shape)
        for init in model.graph.initializer:
            if init.name == "qout_s":
                init.float_data[:] = [0.1]
        with pytest.raises(SpecError, match=r"node '\w+' \('gap'\) \(GlobalAveragePool\): no "
                                            r"integer multiply \+ shift reproduces QONNX's "
                                            r"float32 GlobalAveragePool followed by the quantizer"):
            import_qonnx(model)
    qi, ii = _quant("qin", "x", "xq", 2 ** -15, 16)
    qo, io = _quant("qout", "g", "y", 2 ** -6, 8)
    wide = _graph([qi, helper.make_node("GlobalAveragePool", ["xq"], ["g"], name="gap"), qo],
                  {**ii, **io}, in_shape=(1, 1, 30, 30), out_shape=(1, 1, 1, 1))
    with pytest.raises(SpecError, match=r"dividing by 900 positions is exact here only for a "
                                        r"power-of-two count \(the input sums need 25 bits"):
        import_qonnx(wide)


def _qonnx_node(op, inputs, output, name, **attrs):
    return helper.make_node(op, inputs, [output], name=name, domain="qonnx.custom_op.general",
                            **attrs)


def _trunc_mlp(scale=0.25, zero=0.0, version=1):
    """x -> Quant -> MatMul -> Quant(2**-2, 8) -> Trunc: v1 8 -> 5 bits, FLOOR; v2 (the model
    imports QONNX opset 2): scale 2**-1 (coarser than the input: rounds half to even first),
    output scale 1 and 4 bits narrow, HALF_UP."""
    model = _mlp()
    if version == 1:
        inits = {"t_s": scale, "t_z": zero, "t_ib": 8, "t_ob": 5}
        attrs = dict(rounding_mode="FLOOR")
    else:
        inits = {"t_s": 0.5, "t_z": zero, "t_ib": 8, "t_os": 1.0, "t_ob": 4}
        attrs = dict(rounding_mode="HALF_UP", signed=1, narrow=1)
        model.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 2))
    model.graph.initializer.extend(helper.make_tensor(k, TensorProto.FLOAT, [], [float(v)])
                                   for k, v in inits.items())
    model.graph.node[-1].output[0] = "yq"
    model.graph.node.append(_qonnx_node("Trunc", ["yq", *inits], "y", "tr", **attrs))
    return model


@pytest.mark.parametrize("version, shifts", [(1, [3]), (2, [1, 1])])
def test_trunc_drops_lsbs_as_qonnx_does(version, shifts):
    """Trunc as rounding shifts (v2: half-to-even onto its scale, then HALF_UP into a narrow
    4-bit range), equal to QONNX on 256 seeded random inputs."""
    model = _trunc_mlp(version=version)
    net = import_qonnx(model)
    steps = [l.requant for l in net.layers[3:]]
    assert [q.shift for q in steps] == shifts
    x = np.random.default_rng(4).integers(-300, 300, (256, 4)) / 8
    from forma.generators import native_plan
    got = native_plan.reference_outputs(net, native_plan.plan(net), x)
    want = execute_onnx(model, x)
    assert np.array_equal(got, want) and len(np.unique(want)) > 5


@pytest.mark.parametrize("build, message", [
    (lambda: _trunc_mlp(scale=0.3), r"\(Trunc\): forma maps Trunc of a fixed-point tensor with a "
                                     "power-of-two scale and zero point 0"),
    (lambda: _trunc_mlp(zero=1.0), r"\(Trunc\): forma maps Trunc"),
])
def test_trunc_without_a_shift_form_is_refused(build, message):
    with pytest.raises(SpecError, match=message):
        import_qonnx(build())


def _bipolar_mlp(weight_scale=0.5):
    """x -> Quant -> MatMul by BipolarQuant weights -> BipolarQuant activations."""
    qi, ii = _quant("qin", "x", "xq", 0.125, 8)
    inits = {**ii, "w": np.arange(8, dtype=np.float32).reshape(4, 2) - 3.5,
             "bw_s": np.float32(weight_scale), "ba_s": np.float32(1.0)}
    nodes = [qi, _qonnx_node("BipolarQuant", ["w", "bw_s"], "wq", "bw"),
             helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="mm"),
             _qonnx_node("BipolarQuant", ["mm", "ba_s"], "y", "ba")]
    return _graph(nodes, inits)


def test_bipolar_weights_need_power_of_two_scales():
    """+-scale weights and the sign of the exact accumulator (0 gives +1, as in QONNX), equal to
    QONNX on 256 seeded random inputs; non-power-of-two weight scales are refused."""
    from forma.generators import native_plan
    model = _bipolar_mlp()
    net = import_qonnx(model)
    assert net.layers[-1].requant.kind == "bipolar"
    x = np.random.default_rng(6).integers(-8, 8, (256, 4)) / 8
    want = execute_onnx(model, x)
    assert np.array_equal(native_plan.reference_outputs(net, native_plan.plan(net), x), want)
    assert {-1.0, 1.0} <= set(np.unique(want))
    with pytest.raises(SpecError, match=r"node '\w+' \('bw'\) \(BipolarQuant\): weight scale "
                                        r"\[0.3\d*\] is not a power of two"):
        import_qonnx(_bipolar_mlp(weight_scale=0.3))


def _batchnorm_mlp(after_matmul=True, relu=False):
    """x -> Quant -> MatMul -> BatchNormalization (-> Relu) -> Quant, or the BatchNormalization
    on the quantized input (nothing to fold it into)."""
    model = _mlp()
    bn = dict(bn_g=[0.7, -1.3, 0.4, 1.1], bn_b=[0.2, 0.1, 0, 0], bn_m=[0.5, -0.5, 0, 0],
              bn_v=[1.5, 0.3, 1, 1])
    channels = 2 if after_matmul else 4
    model.graph.initializer.extend(helper.make_tensor(k, TensorProto.FLOAT, [channels],
                                                      v[:channels]) for k, v in bn.items())
    nodes = list(model.graph.node)
    if after_matmul:
        node = helper.make_node("BatchNormalization", ["mm", *bn], ["bn"], name="bn")
        nodes.insert(len(nodes) - 1, node)
        nodes[-1].input[0] = "bn"
        if relu:
            nodes.insert(len(nodes) - 1, helper.make_node("Relu", ["bn"], ["bn_relu"], name="r"))
            nodes[-1].input[0] = "bn_relu"
    else:
        node = helper.make_node("BatchNormalization", ["xq", *bn], ["bn"], name="bn")
        nodes.insert(1, node)
        nodes[-2].input[0] = "bn"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def test_batchnorm_folds_only_into_a_matmul_or_conv():
    """After a MatMul it folds (proven against onnxruntime for every accumulator value);
    elsewhere, or read by anything but a quantizer, it is refused with the node named."""
    from forma.generators import native_plan
    for relu in (False, True):
        model = _batchnorm_mlp(relu=relu)
        net = import_qonnx(model)
        assert net.layers[1].attrs["folded"] == "'BatchNormalization_0' ('bn')"
        assert [l.kind for l in net.layers[2:]] == ["quant"] + ["relu"] * relu
        x = np.random.default_rng(5).integers(-140, 140, (256, 4)) / 8
        want = execute_onnx(model, x)
        got = native_plan.reference_outputs(net, native_plan.plan(net), x)
        assert np.array_equal(got, want) and (np.min(want) < 0) != relu
    with pytest.raises(SpecError, match=r"node '\w+' \('bn'\) \(BatchNormalization\): its input "
                                        r"'\w+' is not the output of a MatMul/Conv read only by it"):
        import_qonnx(_batchnorm_mlp(after_matmul=False))


def test_hls4ml_refuses_the_native_only_ops_by_node():
    from forma.generators.hls4ml_backend import inexpressible
    for model, op in ((_batchnorm_mlp(), "BatchNormalization"), (_trunc_mlp(), "Trunc"),
                      (_bipolar_mlp(), "BipolarQuant"), (_pool_graph(3, 5), "global_avgpool")):
        reasons = inexpressible(import_qonnx(model))
        assert reasons and op in reasons[0] and "use the native backend" in reasons[0], reasons


# --- QONNX's float32 reference ----------------------------------------------------------------
def _wide_dense(in_bits=16, in_scale=2 ** -15):
    """x[1,2] -> Quant(in_bits) -> MatMul by [0.5, 2**-11] (12-bit weights) -> Quant(2**-6, 8):
    with 16-bit inputs the exact sums need 26 significant bits."""
    qi, ii = _quant("qin", "x", "xq", in_scale, in_bits)
    qw, iw = _quant("qw", "w", "wq", 2 ** -11, 12)
    qo, io = _quant("qout", "mm", "y", 2 ** -6, 8)
    w = np.array([[0.5], [2 ** -11]], dtype=np.float32)
    nodes = [qi, qw, helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="wide_mm"), qo]
    return _graph(nodes, {**ii, **iw, **io, "w": w}, in_shape=(1, 2), out_shape=(1, 1))


def test_reference_rounding_names_layers_wider_than_float32():
    """QONNX sums in float32 (24-bit significand): layers whose exact sums may need more bits are
    named with the bits they need; the example MLP and CNN need at most 15, digits_fp8's second
    layer 31 (fixed<32,14>)."""
    assert reference_rounding(import_qonnx(EXAMPLES / "digits_mlp.onnx")) == {}
    assert reference_rounding(import_qonnx(EXAMPLES / "digits_cnn.onnx")) == {}
    fp8 = import_qonnx(EXAMPLES / "digits_fp8.onnx")
    assert reference_rounding(fp8) == {"MatMul_1": 31}
    assert [l.float32_bits for l in fp8.layers if l.kind == "dense"] == [18, 31]
    assert reference_rounding(import_qonnx(_wide_dense(in_bits=8, in_scale=2 ** -7))) == {}
    wide = import_qonnx(_wide_dense())
    assert reference_rounding(wide) == {"MatMul_0": 26} and wide.layers[1].origin == "wide_mm"


def test_flagged_reference_really_rounds():
    """The flag is not hypothetical: 0.515625 * 0.5 + 2**-15 * 2**-11 = 0.2578125 + 2**-26 lies
    just above a tie of the 2**-6 grid (exact: rounds up to 0.265625), but float32 drops the
    2**-26 (a tie at its own LSB, to even) and QONNX's Quant then rounds the tie down to 0.25."""
    x = np.array([[0.5 + 2 ** -6, 2 ** -15], [0.5 + 2 ** -6, 0.0]])
    exact = x @ np.array([0.5, 2 ** -11])  # float64: exact for these few bits
    assert exact[0] == 0.2578125 + 2 ** -26
    assert np.round(exact / 2 ** -6).tolist() == [17, 16]
    assert execute_onnx(_wide_dense(), x).ravel().tolist() == [0.25, 0.25]


@pytest.mark.parametrize("which", ["qin", "qout"])
def test_narrow_activation_quantizers_clamp_symmetrically(which):
    """QONNX's narrow signed range is [-(2**(b-1)-1), 2**(b-1)-1]: the input encoding and the
    requantizers clamp there (not at -2**(b-1)); 500 seeded random inputs beyond the range."""
    from forma.generators import native_plan
    model = _mlp()
    node = next(n for n in model.graph.node if n.name == which)
    next(a for a in node.attribute if a.name == "narrow").i = 1
    net = import_qonnx(model)
    x = np.random.default_rng(7).integers(-300, 300, (500, 4)) / 8
    want = execute_onnx(model, x)
    assert np.array_equal(native_plan.reference_outputs(net, native_plan.plan(net), x), want)


@pytest.mark.parametrize("build, names", [
    (lambda: _batchnorm_mlp(relu=True), ["Quant_2", "Quant_2_relu"]),
    (lambda: _pool_graph(3, 4), ["GlobalAveragePool_0", "Quant_1_divided", "Quant_1"]),
    (lambda: _trunc_mlp(version=2), ["Quant_2", "Trunc_0_on_scale", "Trunc_0"]),
])
def test_a_node_mapped_to_several_layers_names_each_once(build, names):
    """The per-layer report lists layers by name: a quantizer that becomes quant + relu, a
    two-stage division or a rounding onto Trunc's scale gives each of its layers its own name."""
    net = import_qonnx(build())
    assert [l.name for l in net.layers[-len(names):]] == names
    assert len({l.name for l in net.layers}) == len(net.layers)


def test_every_quantizer_op_survives_the_channels_last_cleanup():
    """QONNX's channels-last conversion folds constants except Quant/BipolarQuant; IntQuant
    weights must still reach the importer (not become unquantized float32), and every node keeps
    a name of its own op type."""
    from forma.generators.qonnx_import import clean
    model = _mlp()
    next(n for n in model.graph.node if n.name == "qw").op_type = "IntQuant"
    cleaned = clean(model)
    assert [n.op_type for n in cleaned.graph.node] == ["Quant", "IntQuant", "MatMul", "Quant"]
    assert [n.name for n in cleaned.graph.node][1] == "IntQuant_0"
    assert all(a.name != "forma_op_type" for n in cleaned.graph.node for a in n.attribute)
    net, reference = import_qonnx(model), import_qonnx(_mlp())
    assert net.layers[1].weight_format == reference.layers[1].weight_format
    assert np.array_equal(net.layers[1].weight, reference.layers[1].weight)
