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
    """Fixed-width hex text, one value per line (vectorized: ~10 ms per million values).

    values: 1-D uint64, or 2-D (n, words) uint64 holding wider values as little-endian words.
    """
    digits = max(1, (width + 3) // 4)
    values = np.asarray(values, dtype=np.uint64)
    if values.ndim == 1:
        values = values[:, None]
    word = np.arange(digits - 1, -1, -1) // 16                   # the word each digit comes from
    if word[0] >= values.shape[1]:
        raise ValueError(f"{width}-bit values need {word[0] + 1} 64-bit words, got {values.shape[1]}")
    shifts = (np.arange(digits - 1, -1, -1, dtype=np.uint64) % np.uint64(16)) * np.uint64(4)
    nibbles = (values[:, word] >> shifts) & np.uint64(15)
    table = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((len(values), digits + 1), dtype=np.uint8)
    text[:, :digits] = table[nibbles]
    text[:, digits] = ord("\n")
    return text.tobytes()


def pack_fields(fields):
    """Pack (codes, width) fields, first in the lowest bits, into payloads: (payloads, width).

    Payloads are 1-D uint64 when the total width is at most 64 bits, else (n, words) uint64
    little-endian words (the form `run_bulk` takes)."""
    total = sum(width for _, width in fields)
    count = len(fields[0][0]) if fields else 0
    words = np.zeros((count, max(1, -(-total // 64))), dtype=np.uint64)
    offset = 0
    for codes, width in fields:
        codes = np.asarray(codes, dtype=np.uint64) & np.uint64((1 << width) - 1)
        word, shift = divmod(offset, 64)
        words[:, word] |= codes << np.uint64(shift)
        if shift + width > 64:
            words[:, word + 1] |= codes >> np.uint64(64 - shift)
        offset += width
    return (words[:, 0] if total <= 64 else words), total


@dataclass
class Streams:
    """Stateful designs: vectors form independent streams (e.g. a MAC's dot products between
    `last` beats) that must stay whole and in order on one lane.

    starts: bool per vector, True where a stream begins (the design's state is clear there);
    pad / pad_expected: a one-vector stream and its result, used to even out the lanes.
    """
    starts: np.ndarray
    pad: object
    pad_expected: int


def _layout(count, lanes, streams=None):
    """Chunks of the work: each a (lanes, per_lane) array of vector indices, -1 for padding.

    Without streams every chunk splits evenly (padding at its end); with streams, lane and chunk
    boundaries fall on stream starts only and each lane is padded to the longest one.
    """
    starts = np.ones(count, dtype=bool) if streams is None else np.asarray(streams.starts, dtype=bool)
    if count and not starts[0]:
        raise ValueError("the first vector must start a stream")
    cuts = np.append(np.flatnonzero(starts), count)   # allowed boundaries
    chunks, begin = [], 0
    while begin < count:
        end = int(cuts[np.searchsorted(cuts, begin + CHUNK_LIMIT, side="right") - 1])
        if end <= begin:
            raise ValueError(f"a stream of more than {CHUNK_LIMIT} vectors does not fit one chunk")
        size = end - begin
        targets = begin + np.arange(1, lanes) * -(-size // lanes)
        bounds = [begin] + [int(cuts[np.searchsorted(cuts, min(t, end))]) for t in targets] + [end]
        per_lane = max(max(b - a for a, b in zip(bounds, bounds[1:])), 1)
        grid = np.full((lanes, per_lane), -1, dtype=np.int64)
        for lane, (a, b) in enumerate(zip(bounds, bounds[1:])):
            grid[lane, :b - a] = np.arange(a, b)
        chunks.append(grid)
        begin = end
    return chunks


def checker_verilog(in_width, out_width, lanes, depth, lane_inputs=None):
    """The checker top `top`: loads stim.hex/expect.hex on `start`, runs every lane, raises `done`.

    Lane l consumes vectors [l*count, (l+1)*count) where count = vectors per lane (input port).
    `stall` makes each lane's output ready and input valid follow LFSR bits, exercising
    back-pressure and input gaps (so an output valid that rises without a result shows a stale
    payload where a result is expected).
    lane_inputs: {port name: width} of extra `dut` inputs, each a top input shared by every lane.
    """
    lane_inputs = lane_inputs or {}
    extra_ports = "".join(f" input [{w - 1}:0] {name}," for name, w in lane_inputs.items())
    extra_connections = "".join(f", .{name}({name})" for name in lane_inputs)
    captures = "\n".join(
        f"  output reg [31:0] err_index_{k},\n  output reg [{out_width - 1}:0] err_got_{k},"
        for k in range(CAPTURED))
    lane_wires = "\n".join(f"""
  wire v{l}_i_ready, v{l}_o_valid; wire [{out_width - 1}:0] v{l}_o_payload;
  reg [31:0] in_ptr_{l}, out_ptr_{l};
  wire v{l}_i_valid = running && in_ptr_{l} < count && (!stall || lfsr[{(l + 8) % 16}]);
  wire v{l}_o_ready = running && (!stall || lfsr[{l % 16}]);
  dut lane_{l}(.clk(clk), .rst(rst | start),
    .i__valid(v{l}_i_valid), .i__ready(v{l}_i_ready), .i__payload(stim[{l} * count + in_ptr_{l}]),
    .o__valid(v{l}_o_valid), .o__ready(v{l}_o_ready), .o__payload(v{l}_o_payload){extra_connections});""" for l in range(lanes))
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
  output reg clk, input rst, input start, input stall, input [31:0] count,{extra_ports}
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


@dataclass
class ChunkPlan:
    """The hex chunks `write_chunks` wrote: per chunk {start, real, count} (count = vectors per
    lane), `origin` maps each written position to its vector index (-1: padding), `depth` is
    the checker memory's size in vectors."""
    chunks: list
    origin: np.ndarray
    depth: int


def write_chunks(vectors, expected, in_width, out_width, chunk_dir, lanes, streams=None) -> ChunkPlan:
    """Write stim_<n>.hex / expect_<n>.hex for the bulk checker into `chunk_dir`.

    vectors/expected: packed payloads, uint64 (1-D) or (n, words) little-endian uint64 words
    (see `pack_fields`). The work is cut into chunks of up to CHUNK_LIMIT vectors, each split
    over `lanes`; `streams` (a Streams) keeps stateful streams whole on one lane.
    """
    vectors = np.asarray(vectors, dtype=np.uint64)
    expected = np.asarray(expected, dtype=np.uint64)
    if vectors.ndim not in (1, 2) or expected.ndim not in (1, 2) or len(vectors) != len(expected):
        raise ValueError("vectors and expected (1-D, or 2-D words) must have one entry per vector")
    chunk_dir = Path(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    chunks, origin, offset = [], [], 0
    for number, grid in enumerate(_layout(len(vectors), lanes, streams)):
        order = grid.ravel()
        pad = order < 0
        if streams is None:   # repeat the chunk's last vector; its result is known
            order = np.where(pad, order.max(), order)
            stim, want = vectors[order], expected[order]
        else:
            stim, want = vectors[np.where(pad, 0, order)], expected[np.where(pad, 0, order)]
            stim[pad], want[pad] = np.asarray(streams.pad, dtype=np.uint64), streams.pad_expected
        (chunk_dir / f"stim_{number}.hex").write_bytes(_hex_lines(stim, in_width))
        (chunk_dir / f"expect_{number}.hex").write_bytes(_hex_lines(want, out_width))
        chunks.append({"start": offset, "real": int((~pad).sum()), "count": grid.shape[1]})
        origin.append(np.where(pad, -1, order))
        offset += len(order)
    origin = np.concatenate(origin) if origin else np.zeros(0, dtype=np.int64)
    depth = max(chunk["count"] for chunk in chunks) * lanes if chunks else lanes
    return ChunkPlan(chunks, origin, depth)


def run_bulk(component, vectors, expected, in_width, out_width, build_dir, lanes=8,
             stall=False, streams=None) -> BulkResult:
    """Check `component` on Verilator: packed input payloads `vectors` must give `expected`.

    vectors/expected, lanes, streams: as for `write_chunks`.
    """
    build_dir = Path(build_dir).resolve()
    chunk_dir = build_dir / "chunks"
    plan = write_chunks(vectors, expected, in_width, out_width, chunk_dir, lanes, streams)
    manifest = build_dir / "manifest.json"
    manifest.write_text(json.dumps({"chunks": plan.chunks, "dir": str(chunk_dir), "stall": stall}))
    results = build_dir / "bulk_results.json"
    results.unlink(missing_ok=True)
    top = checker_verilog(in_width, out_width, lanes, plan.depth) + to_verilog(component, name="dut")
    run = run_cocotb(top, "forma.sim.tb_bulk", build_dir,
                     {"FORMA_BULK_MANIFEST": manifest, "FORMA_BULK_RESULTS": results},
                     timing=True)
    if not results.exists():
        raise RuntimeError(f"the bulk testbench did not finish; see {run['log']}")
    data = json.loads(results.read_text())
    first = [(int(plan.origin[index]), got) for index, got in data["first"]
             if plan.origin[index] >= 0]
    return BulkResult(int((plan.origin >= 0).sum()), data["mismatches"], first[:CAPTURED], data["seconds"],
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
