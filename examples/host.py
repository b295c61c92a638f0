"""Send inputs to a board running a forma native export over its UART and print the answers.

Usage: python examples/host.py REPORT_JSON DEVICE [INPUTS.npz|.npy] [--rows N]
(REPORT_JSON: the export's report.json, which states the protocol; DEVICE e.g. /dev/ttyUSB0).
"""
import argparse
import json
import os
import sys
import termios

import numpy as np

BAUDS = {115200: termios.B115200, 57600: termios.B57600, 9600: termios.B9600}


def open_serial(device: str, baud: int) -> int:
    """A raw 8N1 file descriptor for `device` at `baud` (termios, no extra packages)."""
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0                                                   # iflag: raw input
    attrs[1] = 0                                                   # oflag: raw output
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL        # cflag: 8N1
    attrs[3] = 0                                                   # lflag: no echo, no canon
    attrs[4] = attrs[5] = BAUDS[baud]
    attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 0, 20       # 2 s read timeout
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    termios.tcflush(fd, termios.TCIOFLUSH)
    return fd


def to_bytes(codes, per_code: int) -> bytes:
    """Codes (unsigned integers) as little-endian groups of `per_code` bytes."""
    return b"".join(int(c).to_bytes(per_code, "little") for c in codes)


def infer(fd: int, protocol: dict, codes) -> list[int]:
    """One inference: send the input codes, read the output codes (raw unsigned codes)."""
    os.write(fd, to_bytes(codes, protocol["input_bytes_per_code"]))
    want = protocol["output_codes"] * protocol["output_bytes_per_code"]
    data = b""
    while len(data) < want:
        chunk = os.read(fd, want - len(data))
        if not chunk:
            raise TimeoutError(f"the board sent {len(data)} of {want} bytes; reset it and retry")
        data += chunk
    n = protocol["output_bytes_per_code"]
    return [int.from_bytes(data[i:i + n], "little") for i in range(0, want, n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("device")
    parser.add_argument("inputs", nargs="?", default="examples/digits_test.npz")
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    from forma.generators import native_plan
    from forma.generators.qonnx_import import import_qonnx
    report = json.loads(open(args.report).read())
    protocol = report["host_interface"]
    if protocol is None:
        sys.exit(f"{args.report} is an estimate-only export; it has no host interface")
    network = import_qonnx(report["model"])
    data = np.load(args.inputs)
    x = data["x"] if hasattr(data, "files") else data
    codes = native_plan.input_codes(network, x[:args.rows])
    fd = open_serial(args.device, protocol["uart_baud"])
    try:
        for index, row in enumerate(codes):
            out = native_plan.output_values(network, np.array([infer(fd, protocol, row)]))
            print(index, out.ravel().tolist(), "argmax", int(out.argmax()))
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
