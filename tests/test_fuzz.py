"""Fuzzing and properties: parsers never traceback, the reference obeys its algebraic laws.

Every parser input either parses (and round-trips its canonical name) or raises SpecError with
one sentence; the reference keeps sign symmetry, commutativity, monotonic rounding, nearest
decode(encode(x)) and order-independent exact accumulation.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forma import parse_format
from forma.errors import SpecError
from forma.generators import elaborate
from forma.sim.formats import dot

FUZZ = settings(max_examples=600, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)

# Pieces of real format names, so the fuzzer reaches deep into each family's parser.
PIECES = ["int", "uint", "fixed<", "ufixed<", ">", ",", "float", "_e", "m", "_b", "_fn", "_fnuz",
          "_nosub", "_finite", "posit(", ")", "mx", "fp", "nvfp4", "_narrow", "RND", "SAT",
          "-", "0", "1", "2", "3", "4", "5", "7", "8", "9", "16", "32", "64", "99", " ", "x"]
format_text = st.one_of(st.text(max_size=24), st.lists(st.sampled_from(PIECES), max_size=8).map("".join))


def one_sentence(error):
    text = str(error)
    return text and "\n" not in text and "Traceback" not in text


@FUZZ
@given(format_text)
def test_parse_format_parses_or_raises_one_sentence(text):
    try:
        fmt = parse_format(text)
    except SpecError as error:
        assert one_sentence(error), repr(str(error))
        return
    assert parse_format(fmt.name) == fmt


SPEC_PIECES = ["mac", "array", "a=", "w=", "acc=", "stages=", "length=", "int8", "uint4", "int0",
               "float8_e4m3fn", "posit(8,0)", "0", "1", "-1", "99", "x", "=", "a", " "]


@FUZZ
@given(st.lists(st.sampled_from(SPEC_PIECES), max_size=10).map("".join))
def test_design_spec_elaborates_or_raises_one_sentence(text):
    try:
        elaborate(text.split())
    except SpecError as error:
        assert one_sentence(error), repr(str(error))


SYMMETRIC = ["float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float4_e2m1fn", "posit(8,0)",
             "posit(8,2)", "float16", "posit(16,1)", "bfloat16", "float8_e4m3_b11_nosub"]


def codes(fmt, data, size=64):
    drawn = np.array(data.draw(st.lists(st.integers(0, (1 << fmt.bits) - 1), min_size=size,
                                        max_size=size)), dtype=np.uint64)
    return drawn[fmt.valid_code_mask(drawn)].astype(fmt.code_dtype)


@pytest.mark.parametrize("name", SYMMETRIC)
@PROPERTY
@given(data=st.data())
def test_mul_and_add_commute_and_are_sign_symmetric(name, data):
    fmt = parse_format(name)
    a, b = codes(fmt, data), codes(fmt, data)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert np.array_equal(fmt.mul(a, b), fmt.mul(b, a))
    assert np.array_equal(fmt.add(a, b), fmt.add(b, a))
    finite = np.isfinite(fmt.decode(a)) & np.isfinite(fmt.decode(b))
    product, negated = fmt.mul(fmt.neg(a), b), fmt.neg(fmt.mul(a, b))
    # -(a*b) == (-a)*b by value: signed zeros compare equal, NaN (overflow in fn formats) matches NaN
    assert np.array_equal(fmt.decode(product[finite]), fmt.decode(negated[finite]), equal_nan=True)


ENCODE = ["float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "posit(8,0)", "posit(10,1)",
          "fixed<8,3,RND_CONV,SAT>", "int8", "float8_e4m3fnuz"]


@pytest.mark.parametrize("name", ENCODE)
@PROPERTY
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=40))
def test_encode_is_monotonic_and_nearest(name, values):
    fmt = parse_format(name)
    x = np.sort(np.array(values))
    decoded = fmt.decode(fmt.encode(x, rounding="rne", saturate=True))
    assert np.all(np.diff(decoded) >= 0), "rounding must be monotonic"
    grid = fmt.decode(fmt.all_codes())
    grid = np.unique(grid[np.isfinite(grid)])
    inside = (x >= grid[0]) & (x <= grid[-1])
    nearest = np.abs(grid[None, :] - x[inside, None]).min(axis=1)
    if fmt.family != "posit":  # posits round on the bit pattern, not by value distance
        assert np.array_equal(np.abs(decoded[inside] - x[inside]), nearest)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "posit(8,0)", "float4_e2m1fn", "int4"])
@PROPERTY
@given(data=st.data())
def test_exact_accumulation_is_order_independent(name, data):
    fmt = parse_format(name)
    a, b = codes(fmt, data, 32), codes(fmt, data, 32)
    n = min(len(a), len(b))
    order = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    out = parse_format("float16") if fmt.family != "posit" else fmt
    first = dot(a[:n], b[:n], fmt, fmt, out)
    assert np.array_equal(first, dot(a[:n][order], b[:n][order], fmt, fmt, out))
