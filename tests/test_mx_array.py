"""MX block-format arrays: the mx_matmul reference against independent oracles (numpy float32 sums
of exact float64 block dots; Fractions with the exact rounding oracle), parameter checks, and a
2x2 array on Verilator compared bit-exactly with the reference, its MACs/cycle measured.
"""
import json
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from forma.errors import SpecError
from forma.generators import elaborate, parameters_of, spec_of, to_verilog
from forma.generators.designs import cocotb_module_for
from forma.hdl.mx_array import MXSystolicArray
from forma.sim import matmul
from forma.sim.cases_mx import DotCase
from forma.sim.formats import parse_format
from forma.sim.formats.exact import NAN, NINF, PINF, round_float, value
from forma.sim.runner import cocotb_env, run_cocotb
from forma.sim.tb_mx_array import DOT_ITEMS, item_tiles, sum_items

SCALE_CORNERS = (0, 1, 127, 128, 254, 255)


def random_operands(rng, fmt, m, k, n, specials=True, centre=127):
    """(a_scales, a, w_scales, w): element codes uniform (NaN/inf included when `specials`),
    scales within 5 of `centre` so block dots overlap, with scale corners sprinkled in."""
    blocks = -(-k // fmt.block_size)
    codes = np.arange(1 << fmt.bits)
    finite = codes[np.isfinite(fmt.element_format.decode(codes))]
    pool = codes if specials else finite

    def elements(shape):
        return np.where(rng.random(shape) < 0.01, rng.choice(pool, shape), rng.choice(finite, shape))

    def scales(shape):
        near = rng.integers(centre - 5, centre + 6, shape)
        return np.where(rng.random(shape) < 0.1, rng.choice(SCALE_CORNERS, shape), near)

    return scales((m, blocks)), elements((m, k)), scales((blocks, n)), elements((k, n))


def padded(x, k, axis):
    widths = [(0, 0), (0, 0)]
    widths[axis] = (0, (-x.shape[axis]) % k)
    return np.pad(x, widths)


# --- oracle 1: exact float64 block dots, numpy float32 sums --------------------------------------
ML_DTYPES = {"mxfp8_e4m3": ml_dtypes.float8_e4m3fn, "mxfp4": ml_dtypes.float4_e2m1fn}


def float32_oracle(fmt, sa, a, sw, w):
    """C as float32 values: each block dot summed exactly in float64 (math.fsum, asserted exact:
    these formats' 32 products span fewer than 53 bits) times its scales, rounded once to float32
    by numpy, then the blocks added left to right in numpy float32."""
    k = fmt.block_size
    a, w = padded(a, k, 1), padded(w, k, 0)
    dtype = ML_DTYPES[fmt.name]
    elem = np.vectorize(lambda c: float(np.array([c], np.uint8).view(dtype)[0].astype(np.float64)))
    av, wv = elem(a), elem(w)
    scale = np.vectorize(lambda s: float(np.array([s], np.uint8).view(ml_dtypes.float8_e8m0fnu)[0]))
    out = np.zeros((a.shape[0], w.shape[1]), dtype=np.float32)
    for i in range(a.shape[0]):
        for j in range(w.shape[1]):
            total = None
            for kb in range(a.shape[1] // k):
                x, y = av[i, kb * k:(kb + 1) * k], wv[kb * k:(kb + 1) * k, j]
                with np.errstate(invalid="ignore"):
                    products = x * y
                if np.isnan(products).any() or (np.inf in products and -np.inf in products):
                    exact = np.nan
                elif np.isinf(products).any():
                    exact = products[np.isinf(products)][0]
                else:
                    exact = math.fsum(products)
                    assert Fraction(exact) == sum(Fraction(p) for p in products)
                    exact = exact + 0.0                   # an exact zero sum is +0
                block = np.float32(exact * scale(sa[i, kb]) * scale(sw[kb, j]))
                total = block if total is None else np.float32(total + block)
            out[i, j] = total
    return out


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp4"])
def test_mx_matmul_against_float32_oracle(name, seed):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    fmt, out = parse_format(name), parse_format("float32")
    compared = 0
    # (m, k, n, scale centre): mid-range sums, then sums around float32's subnormals and max.
    shapes = [(3, 32, 2, 127), (4, 64, 3, 127), (6, 96, 5, 127), (5, 71, 6, 127),
              (4, 128, 4, 127), (5, 5, 1, 127), (8, 64, 8, 58), (8, 64, 8, 186)]
    for m, k, n, centre in shapes:
        sa, a, sw, w = random_operands(rng, fmt, m, k, n, centre=centre)
        got = out.decode(matmul.mx_matmul(sa, a, sw, w, fmt, out)).astype(np.float32)
        want = float32_oracle(fmt, sa, a, sw, w)
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), f"seed {seed}: {m}x{k} @ {k}x{n}: C{tuple(np.argwhere(~same)[0])}"
        compared += got.size
    print(f"{compared} outputs of {name} -> float32 equal the oracle's")


# --- oracle 2: Fractions from the bit fields, the exact rounding oracle ---------------------------
def fraction_add(out, x, y):
    """out code of x + y (out codes) from their exact values: NaN and infinity rules of IEEE,
    -0 only for (-0) + (-0), else one rounding by the exact oracle."""
    vx, vy = value(out, x), value(out, y)
    if NAN in (vx, vy) or {vx, vy} == {PINF, NINF}:
        return round_float(out, NAN)
    if isinstance(vx, str) or isinstance(vy, str):
        return round_float(out, vx if isinstance(vx, str) else vy)
    if vx == 0 and vy == 0:
        sign = 1 << (out.bits - 1)
        return x & y & sign
    return round_float(out, vx + vy)


def fraction_block_dot(fmt, out, sa, a, sb, b):
    """out code of one block pair's dot: exact Fractions, the MX special rules, one rounding."""
    if 255 in (sa, sb):
        return round_float(out, NAN)
    pairs = [(value(fmt.element_format, int(x)), value(fmt.element_format, int(y)))
             for x, y in zip(a, b)]
    infinities = set()
    for x, y in pairs:
        if NAN in (x, y) or (x in (PINF, NINF) and y == 0) or (y in (PINF, NINF) and x == 0):
            return round_float(out, NAN)
        if isinstance(x, str) or isinstance(y, str):
            negative = (x == NINF or (not isinstance(x, str) and x < 0)) != \
                       (y == NINF or (not isinstance(y, str) and y < 0))
            infinities.add(NINF if negative else PINF)
    if len(infinities) == 2:
        return round_float(out, NAN)
    if infinities:
        return round_float(out, infinities.pop())
    exact = sum(x * y for x, y in pairs) * Fraction(2) ** (int(sa) + int(sb) - 254)
    return round_float(out, exact)


@pytest.mark.parametrize("name, out_name, centre", [("mxfp8_e5m2", "float16", 115),
                                                    ("mxint8", "bfloat16", 127),
                                                    ("mxfp6_e3m2", "float16", 120)])
def test_mx_matmul_against_fraction_oracle(name, out_name, centre, seed):
    """Scales centred so that the sums span the output's overflow, normal and subnormal ranges."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    fmt, out = parse_format(name), parse_format(out_name)
    k = fmt.block_size
    for m, length, n in [(3, 96, 3), (4, 50, 3)]:
        sa, a, sw, w = random_operands(rng, fmt, m, length, n, centre=centre)
        got = matmul.mx_matmul(sa, a, sw, w, fmt, out)
        a, w = padded(a, k, 1), padded(w, k, 0)
        for i in range(m):
            for j in range(n):
                total = None
                for kb in range(a.shape[1] // k):
                    cut = slice(kb * k, (kb + 1) * k)
                    block = fraction_block_dot(fmt, out, sa[i, kb], a[i, cut], sw[kb, j], w[cut, j])
                    total = block if total is None else fraction_add(out, total, block)
                assert int(got[i, j]) == total, f"seed {seed}: {name} C[{i},{j}]"


def test_blocks_are_summed_one_rounding_each_in_order():
    """1 + 2**-24 + 2**-24 in float32: each addition rounds back to 1 (a single rounding of the
    exact sum would give 1 + 2**-23); and a -0 block dot stays -0 when added to -0."""
    fmt, out = parse_format("mxfp4"), parse_format("float32")
    one = int(fmt.element_format.encode(np.array([1.0]))[0])
    a = np.zeros((1, 96), dtype=np.int64)
    a[0, [0, 32, 64]] = one
    w = a.T.copy()
    c = matmul.mx_matmul([[127, 115, 115]], a, [[127], [112], [112]], w, fmt, out)
    assert out.decode(c)[0, 0] == 1.0
    half = int(fmt.element_format.encode(np.array([0.5]))[0])
    minus = int(fmt.element_format.encode(np.array([-0.5]))[0])
    a[0, [0, 32, 64]] = half
    w[[0, 32, 64], 0] = minus
    c = matmul.mx_matmul([[0, 0, 0]], a, [[0], [0], [0]], w, fmt, out)   # -2**-256 -> -0
    assert int(c[0, 0]) == 0x80000000


def test_stacked_matmuls_equal_each_alone(seed):
    """mx_matmul over a stack of matmuls (leading dimensions) equals each matmul computed alone."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    fmt = parse_format("mxfp6_e3m2")
    stack = [random_operands(rng, fmt, 3, 64, 2) for _ in range(5)]
    stacked = matmul.mx_matmul(*(np.stack([s[part] for s in stack]) for part in range(4)), fmt,
                               "bfloat16")
    assert stacked.shape == (5, 3, 2)
    for index, operands in enumerate(stack):
        assert (stacked[index] == matmul.mx_matmul(*operands, fmt, "bfloat16")).all(), index


def test_partial_last_block_is_zero_padded():
    rng = np.random.default_rng(1)
    fmt = parse_format("mxfp8_e4m3")
    sa, a, sw, w = random_operands(rng, fmt, 3, 40, 2, specials=False)
    padded_c = matmul.mx_matmul(sa, padded(a, 32, 1), sw, padded(w, 32, 0), fmt, "float32")
    assert (matmul.mx_matmul(sa, a, sw, w, fmt, "float32") == padded_c).all()


@pytest.mark.parametrize("spec, words", [
    ("array a=mxfp8_e4m3 w=int8", "w=int8: an MX array .a=mxfp8_e4m3. takes MX block formats"),
    ("array a=float8_e4m3fn w=mxfp4", "a=float8_e4m3fn: an MX array"),
    ("array a=mxfp8_e4m3 w=mxfp4", "w=mxfp4: the MX dot PE takes one format"),
    ("array a=nvfp4 w=nvfp4", "a=nvfp4: its float8_e4m3fn scales are not powers of two"),
    ("array a=mxfp4 out=int8", "out=int8: MX arrays sum their block dots in a float format"),
    ("array a=mxfp4 out=posit(16,1)", "out=posit.16,1.: MX arrays"),
    ("array a=mxfp4 out=float8_e8m0fnu", "out=float8_e8m0fnu: MX arrays"),
    ("array a=mxfp4 out=float6_e3m2fn", "out=float6_e3m2fn: MX arrays need an out format with"),
    ("array a=mxfp4 dataflow=ws", "dataflow=ws: MX arrays are output-stationary"),
    ("array a=mxfp4 acc=int32", "acc=int32: MX arrays take"),
    ("array a=mxfp4 packing=2", "packing=2: MX arrays take"),
    ("array a=mxfp4 rows=0", "rows=0: the array side"),
    ("array a=mxfp4 cols=65", "cols=65"),
])
def test_bad_parameters_name_the_parameter(spec, words):
    with pytest.raises(SpecError, match=words):
        elaborate(spec)


def test_spec_builds_the_mx_array_and_its_testbench():
    array = elaborate("array rows=2 cols=3 a=mxfp4 out=bfloat16")
    assert isinstance(array, MXSystolicArray)
    assert (array.rows, array.cols, array.w_format.name, array.out_format.name) == (2, 3, "mxfp4", "bfloat16")
    assert (array.block_bits, array.latency, array.macs_per_beat) == (32 * 4 + 8, 2 + 3 + 5, 192)
    assert cocotb_module_for(spec_of("array rows=2 cols=3 a=mxfp4")) == "forma.sim.tb_mx_array"
    assert cocotb_module_for(spec_of("array a=int8 w=int8")) == "forma.sim.tb_array"


def test_verilog_is_deterministic():
    spec = "array rows=1 cols=1 a=mxfp4 w=mxfp4 out=float16"
    assert to_verilog(elaborate(spec)) == to_verilog(elaborate(spec))


@pytest.mark.parametrize("rows, cols", [(2, 2), (3, 2), (1, 3), (2, 4)])
def test_item_tiles_bring_every_item_to_every_pe(rows, cols):
    """Each item of the MX array's item phases meets itself (its own A and W blocks, its own
    result) on every PE, in max(rows, cols) tiles per item (whole tiles of min(rows, cols))."""
    array = parameters_of(f"array rows={rows} cols={cols} a=mxfp4 out=float16")
    items = tuple(part[:7] for part in sum_items(array, 400, 1))
    tiles = item_tiles(array, *items)
    side = min(rows, cols)
    assert len(tiles) == max(rows, cols) * -(-7 // side) * side
    for p in range(7):
        alone = matmul.mx_matmul(items[0][p][None], items[1][p].reshape(1, -1),
                                 items[2][p][:, None], items[3][p].reshape(-1, 1),
                                 array.format, array.out_format)[0, 0]
        seen = set()
        for _, tsa, ta, tsw, tw in tiles:
            result = matmul.mx_matmul(tsa, ta, tsw, tw, array.format, array.out_format)
            for r in range(rows):
                for c in range(cols):
                    if ((ta[r] == items[1][p].ravel()).all() and (tsa[r] == items[0][p]).all()
                            and (tw[:, c] == items[3][p].ravel()).all()
                            and (tsw[:, c] == items[2][p]).all()):
                        assert result[r, c] == alone
                        seen.add((r, c))
        assert seen == {(r, c) for r in range(rows) for c in range(cols)}, p


def run_mx_array(spec, seed, vectors, build):
    stats = build / "stats.json"
    result = run_cocotb(to_verilog(elaborate(spec)), "forma.sim.tb_mx_array", build,
                        {**cocotb_env(spec, seed, vectors), "FORMA_ARRAY_STATS": stats})
    assert result["tests"] == 1 and result["failed"] == 0, (
        f"{spec}: see {result['log']}; reproduce: forma sim {spec} --seed {seed} "
        f"--vectors {vectors}")
    stats = json.loads(stats.read_text())
    print(f"seed {seed}: {stats}")
    return stats


@pytest.mark.sim
@pytest.mark.parametrize("spec", [
    "array rows=2 cols=2 a=mxfp4 w=mxfp4 out=float16",
    pytest.param("array rows=2 cols=2 a=mxfp8_e4m3 w=mxfp8_e4m3 out=float32",
                 marks=pytest.mark.bench)])
def test_mx_array_matches_reference(spec, seed, tmp_path_factory):
    """2x2 arrays: full-rate tiles (MACs/cycle >= 95% of 2*2*32, fill as documented), then
    ragged 1-3-block matmuls with scale/element corners under stalls, then the dot PE's block
    pairs (all of its sweep and corners, up to DOT_ITEMS) and exact block-dot sums through
    every PE."""
    stats = run_mx_array(spec, seed, 1000, tmp_path_factory.mktemp("mx_array"))
    assert stats["macs_per_cycle"] >= 0.95 * stats["ideal"], stats
    assert min(stats["outputs_by_blocks"].values()) > 0
    array = parameters_of(spec)
    sweep = len(DotCase(array.format, array.out_format, 1).exhaustive()[0])
    assert stats["dot_items"] == min(sweep, DOT_ITEMS) and stats["sum_items"] > 1000, stats


@pytest.mark.sim
@pytest.mark.bench
@pytest.mark.parametrize("spec", ["array rows=2 cols=3 a=mxfp8_e5m2 out=float16",
                                  "array rows=3 cols=2 a=mxint8 out=bfloat16",
                                  "array rows=4 cols=4 a=mxfp4 out=float32"])
def test_other_mx_arrays(spec, seed, tmp_path_factory):
    stats = run_mx_array(spec, seed, 2000, tmp_path_factory.mktemp("mx_array"))
    assert stats["macs_per_cycle"] >= 0.95 * stats["ideal"], stats
