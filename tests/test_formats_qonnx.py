"""QONNX 1.0 IntQuant and FloatQuant execution equals f.encode + f.decode of the mapped format."""
import numpy as np
import pytest
from qonnx.custom_op.general.floatquant import float_quant
from qonnx.custom_op.general.quant import quant

from forma.errors import SpecError
from forma.sim.formats.qonnx_map import from_qonnx_floatquant, from_qonnx_intquant, qonnx_rounding

SEED = 20261122
INT_MODES = ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


def inputs(span):
    rng = np.random.default_rng(SEED)
    grid = np.arange(-4 * span, 4 * span, 0.25)
    return np.concatenate([grid, rng.uniform(-3 * span, 3 * span, 4000), [0.0]]).astype(np.float32)


@pytest.mark.parametrize("bits, signed, narrow", [(8, 1, 0), (8, 1, 1), (4, 0, 0), (4, 0, 1), (2, 1, 1), (3, 1, 0)])
@pytest.mark.parametrize("mode", INT_MODES)
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_intquant(bits, signed, narrow, mode, scale):
    f = from_qonnx_intquant(bits, signed, narrow)
    x = inputs(2 ** bits) * np.float32(scale)
    want = quant(x, np.float32(scale), np.float32(0), np.float32(bits), signed, narrow, mode)
    got = f.decode(f.encode(x.astype(np.float64) / scale, rounding=qonnx_rounding(mode), saturate=True)) * scale
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{f.name} {mode}: x={x[bad[0]]!r} got {got[bad[0]]} want {want[bad[0]]} seed={SEED}"


def test_intquant_bipolar_rejected():
    with pytest.raises(SpecError, match="bipolar"):
        from_qonnx_intquant(1, 1, 0)


FLOATS = [  # (e, m, bias, max_val, has_inf, has_nan) -> expected canonical name
    ((4, 3, 7, 448.0, 0, 1), "float8_e4m3fn"),
    ((5, 2, 15, 57344.0, 1, 1), "float8_e5m2"),
    ((4, 3, 11, 30.0, 0, 1), "float8_e4m3b11fnuz"),
    ((4, 3, 11, 28.0, 0, 1), "float8_e4m3_b11_fn"),
    ((2, 1, 1, 6.0, 0, 0), "float4_e2m1fn"),
    ((3, 2, 3, 28.0, 0, 0), "float6_e3m2fn"),
    ((4, 3, 7, 480.0, 0, 0), "float8_e4m3_finite"),
]


@pytest.mark.parametrize("params, name", FLOATS)
@pytest.mark.parametrize("mode", ["ROUND", "CEIL", "FLOOR"])
@pytest.mark.parametrize("saturation", [1, 0])
def test_floatquant(params, name, mode, saturation):
    e, m, bias, max_val, has_inf, has_nan = params
    f = from_qonnx_floatquant(e, m, bias, max_val, has_inf, has_nan)
    assert f.name == name
    if not saturation and not (has_inf or has_nan):
        pytest.skip("QONNX raises for non-saturating formats without inf/NaN")
    # float32 inputs: every value and midpoint of the format, neighbours, random and overflow
    v = f.decode(f.all_codes())
    v = np.unique(v[np.isfinite(v)])
    pts = np.concatenate([v, (v[:-1] + v[1:]) / 2, v * 1.5, [max_val * 1.01, max_val * 4]]).astype(np.float32)
    rng = np.random.default_rng(SEED)
    x = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)), np.nextafter(pts, np.float32(0)),
                        (rng.standard_normal(3000) * max_val / 4).astype(np.float32)])
    x = np.concatenate([x, -x])
    want = float_quant(x.copy(), np.float32(1.0), np.float32(e), np.float32(m), np.float32(bias), True,
                       np.float32(max_val), has_inf, has_nan, True, mode, saturation).astype(np.float64)
    got = f.decode(f.encode(x.astype(np.float64), rounding=qonnx_rounding(mode), saturate=bool(saturation)))
    ok = (got == want) | (np.isnan(got) & np.isnan(want))
    # Oracle disagreement, decided for IEEE 754 §7.4: non-saturating CEIL of x < -max (FLOOR of
    # x > max) rounds toward zero, whose overflow result is -max (+max). QONNX applies its
    # inf/NaN overflow to any rounded value beyond max. Exactly that class differs:
    directed_toward_zero = ((mode == "CEIL") & (x < 0)) | ((mode == "FLOOR") & (x > 0))
    ieee_class = (not saturation) & directed_toward_zero & (np.abs(got) == f.max_value) & ~np.isfinite(want)
    ok |= ieee_class
    # QONNX picks the binade with float32 log2: just below a power of two log2 rounds up to the
    # integer and FLOOR/CEIL then use the next binade's coarser grid. Those inputs (and only
    # those) are excluded; see the report: QONNX's result there is off by one grid step.
    ax = np.abs(x.astype(np.float64))
    near_pow2 = (np.floor(np.log2(ax.astype(np.float32) + np.finfo(np.float32).tiny)) != np.floor(np.log2(np.where(ax > 0, ax, 1))))
    assert np.all(ok | near_pow2), f"{name} {mode} sat={saturation}: x={x[~(ok | near_pow2)][0]!r} seed={SEED}"
    if mode == "ROUND":   # to nearest, the coarser grid still lands on the same value: no exclusions
        assert np.all(ok), f"{name}: x={x[~ok][0]!r} seed={SEED}"


def test_floatquant_bad_max_val():
    with pytest.raises(SpecError, match="max_val 300.0 must be one of 448"):
        from_qonnx_floatquant(4, 3, 7, 300.0, False, True)
