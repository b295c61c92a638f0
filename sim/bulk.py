"""Bulk self-checking simulation: stream stimulus and expected results through `lanes` copies of a
design in Verilator, counting mismatches in hardware, so Python touches chunks, not vectors.

Any stream-in/stream-out component works: vectors are its packed input payloads, expectations
its packed output payloads, checked in order per lane (so stateful designs like MACs work too).
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..generators import to_verilog
from .runner import run_cocotb

CAPTURED = 8           # first mismatches recorded exactly (lane order within a cycle)
CHUNK_LIMIT = 1 << 20  # vectors per memory load


def _hex_lines(values, width):
    """Fixed-width hex text, one value per line (vectorized: ~10 ms per million values)."""
    digits = max(1, (width + 3) // 4)
    values = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(digits - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    nibbles = (values[:, None] >> shifts) & np.uint64(15)
    table = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((len(values), digits + 1), dtype=np.uint8)
    text[:, :digits] = table[nibbles]
    text[:, digits] = ord("\n")
    return text.tobytes()


def checker_verilog(in_width, out_width, lanes, depth):
    """The checker top `top`: loads stim.hex/expect.hex on `start`, runs every lane, raises `done`.

    Lane l consumes vectors [l*count, (l+1)*count) where count = vectors per lane (input port).
    `stall` makes each lane's output ready follow an LFSR bit, exercising back-pressure.
    """
    captures = "\n".join(
        f"  output reg [31:0] err_index_{k},\n  output reg [{out_width - 1}:0] err_got_{k},"
        for k in range(CAPTURED))
    lane_wires = "\n".join(f"""
  wire v{l}_i_ready, v{l}_o_valid; wire [{out_width - 1}:0] v{l}_o_payload;
  reg [31:0] in_ptr_{l}, out_ptr_{l};
  wire v{l}_i_valid = running && in_ptr_{l} < count;
  wire v{l}_o_ready = running && (!stall || lfsr[{l % 16}]);
  dut lane_{l}(.clk(clk), .rst(rst | start),
    .i__valid(v{l}_i_valid), .i__ready(v{l}_i_ready), .i__payload(stim[{l} * count + in_ptr_{l}]),
    .o__valid(v{l}_o_valid), .o__ready(v{l}_o_ready), .o__payload(v{l}_o_payload));""" for l in range(lanes))
    lane_steps = "\n".join(f"""
      if (v{l}_i_valid && v{l}_i_ready) in_ptr_{l} <= in_ptr_{l} + 1;
      if (v{l}_o_valid && v{l}_o_ready) begin
        out_ptr_{l} <= out_ptr_{l} + 1;
        if (v{l}_o_payload !== want[{l} * count + out_ptr_{l}]) begin
          bad = bad + 1;
          if (captured + bad <= {CAPTURED}) record({l} * count + out_ptr_{l}, v{l}_o_payload, captured + bad - 1);
        end
      end""" for l in range(lanes))
    all_done = " && ".join(f"out_ptr_{l} == count" for l in range(lanes))
    resets = " ".join(f"in_ptr_{l} <= 0; out_ptr_{l} <= 0;" for l in range(lanes))
    records = "\n".join(f"      {k}: begin err_index_{k} <= index; err_got_{k} <= got; end"
                        for k in range(CAPTURED))
    return f"""// forma bulk checker: {lanes} lanes, {in_width}-bit vectors, {out_width}-bit results
module top(
  output reg clk, input rst, input start, input stall, input [31:0] count,
  output reg done, output reg [63:0] mismatches, output reg [31:0] captured,
{captures}
  output reg [63:0] cycles
);
  reg [{in_width - 1}:0] stim [0:{depth - 1}];
  reg [{out_width - 1}:0] want [0:{depth - 1}];
  reg running;
  reg [15:0] lfsr;
  integer bad;
  // The clock runs inside the simulator (Verilator --timing): Python wakes only at `done`.
  initial begin clk = 0; forever #5 clk = ~clk; end
{lane_wires}

  task record(input [31:0] index, input [{out_width - 1}:0] got, input integer slot);
    case (slot)
{records}
      default: ;
    endcase
  endtask

  always @(posedge clk) begin
    lfsr <= {{lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]}};
    if (start) begin
      $readmemh("stim.hex", stim);
      $readmemh("expect.hex", want);
      {resets}
      running <= 1; done <= 0; mismatches <= 0; captured <= 0; cycles <= 0; lfsr <= 16'hace1;
    end else if (running) begin
      bad = 0;
      cycles <= cycles + 1;
{lane_steps}
      mismatches <= mismatches + bad;
      captured <= (captured + bad > {CAPTURED}) ? {CAPTURED} : captured + bad;
      if ({all_done}) begin running <= 0; done <= 1; end
    end
  end
endmodule
"""


@dataclass
class BulkResult:
    vectors: int
    mismatches: int
    first: list          # [(vector index, got payload)] for the first mismatches, in order
    sim_seconds: float   # simulation time from first start to last done (excludes the build)
    log: str
    waves: str | None

    @property
    def rate(self):
        return self.vectors / self.sim_seconds if self.sim_seconds else float("inf")


def run_bulk(component, vectors, expected, in_width, out_width, build_dir, lanes=8,
             stall=False) -> BulkResult:
    """Check `component` on Verilator: packed input payloads `vectors` must give `expected`.

    vectors/expected: uint64 arrays of packed payloads (payload widths ≤ 64 bits), in stream order
    per lane. The work is cut into chunks of up to CHUNK_LIMIT vectors, each split over `lanes`.
    """
    vectors = np.asarray(vectors, dtype=np.uint64)
    expected = np.asarray(expected, dtype=np.uint64)
    if vectors.shape != expected.shape or vectors.ndim != 1:
        raise ValueError("vectors and expected must be 1-D arrays of the same length")
    build_dir = Path(build_dir).resolve()
    chunk_dir = build_dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    per_chunk = min(CHUNK_LIMIT, -(-len(vectors) // lanes) * lanes)
    chunks = []
    for number, start in enumerate(range(0, len(vectors), per_chunk)):
        stim, want = vectors[start:start + per_chunk], expected[start:start + per_chunk]
        pad = -len(stim) % lanes  # repeat the last vector; its result is known
        stim = np.concatenate([stim, np.repeat(stim[-1:], pad)])
        want = np.concatenate([want, np.repeat(want[-1:], pad)])
        (chunk_dir / f"stim_{number}.hex").write_bytes(_hex_lines(stim, in_width))
        (chunk_dir / f"expect_{number}.hex").write_bytes(_hex_lines(want, out_width))
        chunks.append({"start": start, "real": int(min(per_chunk, len(vectors) - start)),
                       "count": len(stim) // lanes})
    manifest = build_dir / "manifest.json"
    manifest.write_text(json.dumps({"chunks": chunks, "dir": str(chunk_dir), "stall": stall}))
    results = build_dir / "bulk_results.json"
    results.unlink(missing_ok=True)
    top = checker_verilog(in_width, out_width, lanes, per_chunk) + to_verilog(component, name="dut")
    run = run_cocotb(top, "forma.sim.tb_bulk", build_dir,
                     {"FORMA_BULK_MANIFEST": manifest, "FORMA_BULK_RESULTS": results},
                     timing=True)
    if not results.exists():
        raise RuntimeError(f"the bulk testbench did not finish; see {run['log']}")
    data = json.loads(results.read_text())
    first = [(index, got) for index, got in data["first"] if index < len(vectors)]
    return BulkResult(len(vectors), data["mismatches"], first[:CAPTURED], data["seconds"],
                      run["log"], run["waves"])


def run_naive(component, vectors, expected, build_dir) -> BulkResult:
    """The same check with one Python await per vector (the baseline the benchmark compares)."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    setup, results = build_dir / "naive.json", build_dir / "naive_results.json"
    setup.write_text(json.dumps({"vectors": [int(v) for v in vectors],
                                 "expected": [int(v) for v in expected]}))
    results.unlink(missing_ok=True)
    run = run_cocotb(to_verilog(component, name="top"), "forma.sim.tb_naive", build_dir,
                     {"FORMA_NAIVE_SETUP": setup, "FORMA_NAIVE_RESULTS": results})
    if not results.exists():
        raise RuntimeError(f"the naive testbench did not finish; see {run['log']}")
    data = json.loads(results.read_text())
    return BulkResult(len(vectors), data["mismatches"], [], data["seconds"], run["log"], None)
