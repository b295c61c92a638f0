"""`forma bench pe`: the PE list and depths it builds, and one real build through its table code.

The full table (every PE, both depths, two boards) runs in `make bench`.
"""
import pytest

from forma.errors import SpecError
from forma.sim import bench_pe


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_entries_and_deepest_pipelines():
    table = {(e.pe, e.label): e for e in bench_pe.entries()}
    for op in ("mul", "add", "fma"):
        assert all((f"float {op}", f) in table for f in bench_pe.FLOATS)
        assert all((f"posit {op}", p) in table for p in bench_pe.POSITS)
    assert table["float mul", "float8_e4m3fn"].deepest() == 5
    assert table["float add", "bfloat16"].deepest() == 7
    assert table["float fma", "float16"].deepest() == 8
    assert table["kulisch mac", "float8_e4m3fn -> float16"].deepest() == 7
    assert table["convert", "float8_e4m3fn -> fixed<8,3>"].deepest() == 2
    assert table["convert", "float16 -> float8_e4m3fn"].deepest() == 4
    chosen = bench_pe.select(bench_pe.entries(), quick=True, only=["posit"])
    assert [(e.pe, e.label) for e in chosen] == [("posit mul", "posit(8,0)")]


def test_only_filter_that_matches_nothing_names_the_option():
    with pytest.raises(SpecError, match="--only"):
        bench_pe.main(["--only", "no such pe", "--boards", "ulx3s-85f"])


def test_one_row_from_a_real_build(tmp_path):
    """float4 mul at stages=1 on the ULX3S: cells, flip-flops and Fmax land in the table."""
    entry = next(e for e in bench_pe.entries() if (e.pe, e.label) == ("float mul", "float4_e2m1fn"))
    row = bench_pe.build_row(entry, 1, "ulx3s-85f", tmp_path / "build")
    assert row["fits"] and row["latency"] == 1
    assert row["LUT4"] > 0 and row["ffs"] >= 5 and row["comb_placed"] >= row["LUT4"]
    assert 10 < row["fmax_mhz"] < 1000
    text = bench_pe.table([row])
    assert "| float mul | float4_e2m1fn | ulx3s-85f | 1 | 1 |" in text
    print(text)
