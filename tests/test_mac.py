"""Integer MAC: parameter checks, the reference against a plain loop, and cocotb on Verilator."""
import numpy as np
import pytest

from forma.errors import SpecError
from forma.generators import elaborate, to_verilog
from forma.sim.mac import mac_reference
from forma.sim.runner import run_cocotb, cocotb_env

# W2A8, W4A8, int8 x int8, 16-bit, unsigned, 1-bit, and a narrow accumulator that must wrap.
REGRESSION = [
    "mac a=uint8 w=int2",
    "mac a=uint8 w=int4 stages=2",
    "mac a=int8 w=int8 stages=3",
    "mac a=int16 w=int16 stages=2",
    "mac a=uint16 w=uint9 length=4096 stages=4",
    "mac a=int1 w=uint1",
    "mac a=int8 w=int8 acc=int18 stages=2",
]


@pytest.mark.sim
@pytest.mark.parametrize("spec", REGRESSION)
def test_mac_verilog_matches_reference(spec, seed, tmp_path_factory):
    build = tmp_path_factory.mktemp("mac")
    result = run_cocotb(to_verilog(elaborate(spec)), "forma.sim.tb_mac", build,
                        cocotb_env(spec, seed, 3000))
    assert result["tests"] == 1 and result["failed"] == 0, (
        f"{spec}: see {result['log']}; reproduce: forma sim {spec} --seed {seed} --vectors 3000")


def test_reference_equals_plain_loop(seed):
    mac = elaborate("mac a=int4 w=uint3 acc=int7")
    rng = np.random.default_rng(seed)
    a = rng.integers(-8, 7, 500, endpoint=True)
    w = rng.integers(0, 7, 500, endpoint=True)
    clear = rng.random(500) < 0.1
    acc, expected = 0, []
    for x, y, c in zip(a, w, clear):
        acc = (0 if c else acc) + int(x) * int(y)
        acc = (acc + 64) % 128 - 64  # int7 wraps
        expected.append(acc)
    assert list(mac_reference(a, w, clear, mac.acc_format)) == expected, f"seed {seed}"


@pytest.mark.parametrize("spec, default_acc", [
    ("mac a=int8 w=int8", "int26"),             # 1024 * (-128)^2 = 2^24 needs 26 bits signed
    ("mac a=uint8 w=uint8 length=1", "uint16"),
    ("mac a=uint8 w=int2 length=256", "int18"),  # -2*255*256 = -130560 < -2^16
])
def test_default_accumulator_is_exact(spec, default_acc):
    assert elaborate(spec).acc_format.name == default_acc


@pytest.mark.parametrize("spec, words", [
    ("mac a=int8 w=int0", "int0"),
    ("mac a=int8 w=int8 acc=int8", "narrower than the product"),
    ("mac a=int8 w=int8 stages=0", "stages=0"),
    ("mac a=int17 w=int8", "1..16"),
    ("mac a=int8 w=int8 length=x", "length=x"),
    ("mac a=int8 w=float8_e4m3fn", "integer formats"),
    ("mac a=int8 b=int8", "unknown parameter 'b'"),
    ("mul a=int8", "unknown design kind"),
])
def test_bad_parameters_are_one_clear_sentence(spec, words):
    with pytest.raises(SpecError, match=words):
        elaborate(spec)


def test_verilog_is_deterministic():
    spec = "mac a=int8 w=int4 acc=int24 stages=3"
    assert to_verilog(elaborate(spec)) == to_verilog(elaborate(spec))
