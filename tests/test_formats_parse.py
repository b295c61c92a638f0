"""Format strings: canonical names round-trip; bad strings raise SpecError naming part and range."""
import pytest

from forma import parse_format
from forma.errors import SpecError

GOOD = ["int8", "uint4", "int1", "uint32", "int8_narrow", "uint8_narrow", "fixed<8,3>", "ufixed<8,3>",
        "fixed<8,3,RND>", "fixed<8,3,RND_CONV,SAT>", "fixed<6,-2>", "fixed<64,10>", "float8_e4m3fn",
        "float8_e5m2", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn", "float8_e8m0fnu",
        "float8_e4m3", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz", "float8_e3m4",
        "bfloat16", "float16", "float32", "float8_e4m3_b11", "float8_e4m3_nosub",
        "float8_e4m3_b11_fnuz_nosub", "float5_e2m2", "float6_e3m2_finite", "mxfp8_e4m3",
        "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"]


@pytest.mark.parametrize("text", GOOD)
def test_canonical_round_trip(text):
    f = parse_format(text)
    assert parse_format(f.name) == f and hash(parse_format(f.name)) == hash(f)
    assert parse_format(text) is f                    # cached


def test_aliases():
    assert parse_format("ap_fixed<8,3>") == parse_format("fixed<8,3>")
    assert parse_format("fixed<8, 3, AP_RND, AP_SAT>").name == "fixed<8,3,RND,SAT>"
    assert parse_format("float8_e4m3_b11_fnuz").name == "float8_e4m3b11fnuz"
    assert parse_format("float16_e5m10").name == "float16"
    assert parse_format("fixed<8,8,RND_CONV>") == parse_format("int8")   # same rules, same format


@pytest.mark.parametrize("text, words", [
    ("float8_e9m3", ["float8_e9m3", "exponent+mantissa bits (12)", "bits-1 (7)"]),
    ("float12_e9m2", ["exponent bits (9)", "[1, 8]"]),
    ("fixed<4,9>", ["fixed<4,9>", "integer bits I (9)", "[-60, W=4]"]),
    ("fixed<0,0>", ["width W (0)", "[1, 64]"]),
    ("fixed<8,3,RND,FOO>", ["overflow mode", "WRAP"]),
    ("fixed<8,3,ROUNDY>", ["quantization mode", "RND_CONV"]),
    ("int0", ["int0", "integer width (0)", "[1, 64]"]),
    ("int65", ["int65", "integer width (65)", "[1, 64]"]),
    ("float8_e4m3_b999", ["bias (999)", "[-256, 256]"]),
    ("float8_e4m3_xyz", ["option 'xyz'", "nosub"]),
    ("float4_e3m0", ["ieee style", "M >= 1"]),
    ("banana16", ["unknown number format 'banana16'", "int8", "float8_e4m3fn"]),
])
def test_bad_strings(text, words):
    with pytest.raises(SpecError) as info:
        parse_format(text)
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), str(info.value)
