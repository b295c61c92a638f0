"""`forma verify dot`: MX block dot products (two blocks of k elements, two E8M0 scales, one result
rounded to an output format) as a verification case: stimulus, reference results, notation.

"Exhaustive" for dot means the element-pair sweep: every pair (a, b) of element codes stands in
every one of the k positions once (element space ** 2 blocks, each holding k consecutive pairs
of an order sorted by product magnitude, with NaN/inf pairs spread out), at scales that put each
block's sum mid-range of the output format; then every scale-corner pair (0, 1, 2, 126, 127,
128, 253, 254, 255 = NaN) and scales that put sums on the output's overflow, smallest-normal and
smallest-subnormal edges (and in every subnormal binade, and as many binades past each end as
the sums have bits), over a fixed set of blocks and blocks whose sums set each accumulator bit
alone; and blocks whose dots are the output's rounding ties, at every binade a block reaches.
Random runs replace the sweep by seeded random blocks (specials in one block in eight) after the
same corners.
"""
from fractions import Fraction
from functools import cached_property

import numpy as np

from ..errors import SpecError
from .formats import parse_format
from .formats.integer import FixedFormat
from .formats.minifloat import FloatFormat
from .formats.mx import MXFormat
from .bulk import pack_fields
from .cases_mac import (bit_targets, greedy_pairs, negations, signed_sums, tie_targets,
                        unit_products)

CORNER_BLOCKS = 64      # sweep (or random) blocks that every scale corner is applied to


def _top_exponent(m, e):
    """floor(log2|m * 2**e|) for nonzero integer m (exact, Python ints)."""
    return int(e) + abs(int(m)).bit_length() - 1


def _odd_significand(value):
    """(n, e) with n odd and n * 2**e == value, for a nonzero dyadic value (float or Fraction)."""
    ratio = Fraction(value)
    zeros = (ratio.numerator & -ratio.numerator).bit_length() - 1
    return ratio.numerator >> zeros, zeros - (ratio.denominator.bit_length() - 1)


def output_edges(out, depth=0):
    """Exponents of the output format's edges a sum should land on: the largest value's, one
    above (overflow), the smallest normal's and one below, the smallest step's and two below;
    for floats every exponent in between too, so each subnormal binade's rounding is met. Then
    `depth` more beyond each end (past overflow, below the step), where a sum whose leading one
    the normalization misplaces by up to `depth` bits would come back into range."""
    if isinstance(out, FloatFormat):
        top, normal = out.emax, out.emin
        step = out.emin - out.man_bits if out.has_subnormals else out.emin
        edges = {top, top + 1, *range(step - 2, normal + 1)}
    else:
        if isinstance(out, FixedFormat):
            top = out.raw_max.bit_length() - 1 - out.frac_bits
            normal = step = -out.frac_bits
        else:                                         # posit
            top, normal, step = out.max_scale, 0, out.min_scale
        edges = {top, top + 1, normal, normal - 1, step, step - 1, step - 2}
    return sorted(edges | set(range(top + 2, top + 2 + depth))
                  | set(range(step - 2 - depth, step - 2)))


def _mid_exponent(out):
    """An exponent comfortably inside the output format's range (where it is most precise)."""
    if isinstance(out, FixedFormat):
        return max(out.raw_max.bit_length() - 3 - out.frac_bits, -out.frac_bits)
    return 0


class DotCase:
    """`dot FORMAT [--out OUT]`: MXDotPE(FORMAT, OUT) against FORMAT.block_dot. Operands are
    (sa, ea, sb, eb): scale codes (n,) and element codes (n, k) of the two blocks."""

    op = "dot"
    exhaustive_seeded = False
    default_lanes = 2          # a PE holds 2k decoders: few lanes build faster, run as fast

    def __init__(self, fmt, out, stages):
        self.format, self.out, self.stages = fmt, out, stages
        self.formats = (fmt,)
        self.element = fmt.element_format
        self.k = fmt.block_size
        scales = fmt.scale_format
        self.bias, self.scale_nan = scales.bias, scales.nan_code
        self.scale_top = scales.nan_code - 1          # the largest finite scale code
        self.scale_corners = (0, 1, 2, self.bias - 1, self.bias, self.bias + 1,
                              self.scale_top - 1, self.scale_top, self.scale_nan)

    @classmethod
    def parse(cls, names, out=None, stages=1):
        if len(names) != 1:
            raise SpecError(f"dot takes one MX format (e.g. mxfp8_e4m3), got {len(names)}")
        fmt = parse_format(names[0])
        if not isinstance(fmt, MXFormat):
            raise SpecError(f"dot {fmt.name}: dot takes an MX format (mxfp8_e4m3, mxfp8_e5m2, "
                            f"mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8)")
        return cls(fmt, parse_format(out or "float32"), stages)

    @property
    def title(self):
        return f"dot {self.format.name} -> {self.out.name}"

    @property
    def space(self):
        """Element pairs: the sweep's size (the full input space is far beyond enumeration)."""
        return (1 << self.element.bits) ** 2

    def component(self):
        from ..hdl.mx_pe import MXDotPE
        return MXDotPE(self.format, self.out, stages=self.stages)

    # --- stimulus -----------------------------------------------------------------------------
    def _unit_sums(self, ea, eb):
        """Exact block sums with unit scales: (mantissa, exponent) per block (Python ints)."""
        unit = np.full(len(ea), self.bias)
        m, e, _ = self.format.block_dot_exact(unit, ea.ravel(), unit, eb.ravel())
        return m, e

    def _centered_scales(self, ea, eb, spread):
        """Scales putting each block's sum mid-range of the output, split unevenly between sa
        and sb by `spread` (ints, one per block)."""
        m, e = self._unit_sums(ea, eb)
        mid = _mid_exponent(self.out)
        shift = np.array([mid - _top_exponent(mi, ei) if mi else 0 for mi, ei in zip(m, e)])
        sa = np.clip(self.bias + shift // 2 + spread, 0, self.scale_top)
        sb = np.clip(2 * self.bias + shift - sa, 0, self.scale_top)
        return sa.astype(np.uint64), sb.astype(np.uint64)

    def _split(self, shift):
        """Scale pairs (sa, sb) with sa + sb - 2 bias = shift: an even split, and one with sa
        as far from the bias as the range allows (none when the shift is out of reach)."""
        total = 2 * self.bias + shift
        if not 0 <= total <= 2 * self.scale_top:
            return []
        extreme = min(self.scale_top, total) if shift > 0 else max(0, total - self.scale_top)
        return [(total // 2, total - total // 2), (extreme, total - extreme)]

    def _sweep(self):
        """The element-pair sweep, (ea, eb) blocks: window j holds pairs j..j+k-1 of every pair
        ordered by product magnitude (ties in a fixed scattered order, so signs mix), so each pair
        stands in each position once and a block's products are alike in size; NaN/inf pairs
        come last. Then each NaN/inf pair once more, alone among finite pairs, at position
        (its rank mod k), so every lane's special detection is seen unmasked."""
        codes = self.element.all_codes().astype(np.uint64)
        a, b = (g.ravel() for g in np.meshgrid(codes, codes, indexing="ij"))
        with np.errstate(all="ignore"):
            product = np.abs(self.element.decode(a) * self.element.decode(b))
        count = len(a)
        scatter = (np.arange(count) * 40503) % count     # 40503 is odd: a bijection
        order = np.lexsort((scatter, np.where(np.isfinite(product), product, np.inf),
                            ~np.isfinite(product)))
        windows = (np.arange(count)[:, None] + np.arange(self.k)[None, :]) % count
        finite = order[np.isfinite(product[order])]
        special = order[~np.isfinite(product[order])]
        alone = finite[(np.arange(len(special))[:, None] * 997 + np.arange(self.k)) % len(finite)]
        alone[np.arange(len(special)), np.arange(len(special)) % self.k] = special
        blocks = np.concatenate([order[windows], alone])
        return a[blocks], b[blocks]

    def _corners(self, ea, eb):
        """Every scale-corner pair and the output-edge scales (as deep beyond the ends as the
        sums have bits) over CORNER_BLOCKS of the given blocks (evenly spaced), plus all-zero,
        all-max, cancelling and bit blocks; then the tie blocks."""
        pick = np.linspace(0, len(ea) - 1, min(CORNER_BLOCKS, len(ea))).astype(np.int64)
        codes = self.element.all_codes()
        values = self.element.decode(codes)
        finite = np.isfinite(values)
        top = codes[finite][np.argmax(values[finite])]
        low = codes[finite][np.argmin(np.where(values[finite] > 0, values[finite], np.inf))]
        negative = self.element.encode(-self.element.decode(np.array([top], dtype=np.uint64)))[0]
        zero = self.element.encode(np.zeros(1))[0]
        extra = [np.full(self.k, zero), np.full(self.k, top), np.full(self.k, low),
                 np.where(np.arange(self.k) % 2, top, negative)]
        bits_a, bits_b = self._bit_blocks(zero)
        base_a = np.concatenate([ea[pick], np.array(extra, dtype=np.uint64), bits_a])
        base_b = np.concatenate([eb[pick], np.full((len(extra), self.k), top, dtype=np.uint64),
                                 bits_b])
        grid = np.array([(x, y) for x in self.scale_corners for y in self.scale_corners],
                        dtype=np.uint64)
        rows = np.repeat(np.arange(len(base_a)), len(grid))
        sa, sb = np.tile(grid[:, 0], len(base_a)), np.tile(grid[:, 1], len(base_a))
        parts = [(sa, base_a[rows], sb, base_b[rows])]
        m, e = self._unit_sums(base_a, base_b)
        edges = output_edges(self.out, max(abs(int(x)).bit_length() for x in m))
        edge_rows, edge_sa, edge_sb = [], [], []
        for row, (mi, ei) in enumerate(zip(m, e)):
            if not mi:
                continue
            for target in edges:
                for x, y in self._split(target - _top_exponent(mi, ei)):
                    edge_rows.append(row)
                    edge_sa.append(x)
                    edge_sb.append(y)
        edge_rows = np.array(edge_rows, dtype=np.int64)
        parts.append((np.array(edge_sa, dtype=np.uint64), base_a[edge_rows],
                      np.array(edge_sb, dtype=np.uint64), base_b[edge_rows]))
        return parts + [self._tie_blocks()]

    def _tie_blocks(self):
        """Block pairs whose exact dots are the output format's ties (tie_targets: halfway
        above each power of two from two binades below its smallest step to its overflow, even
        and odd, and with each lower bit alone breaking the tie), both signs, where block pairs
        reach them (value_blocks)."""
        edges = output_edges(self.out)
        unit = Fraction(2) ** edges[0]
        reach = self.k * max(self.products[1])        # the largest odd significand in reach
        ties = [float(t * unit) for t in tie_targets(self.out, unit, edges[-1] - edges[0] + 1)
                if _odd_significand(t * unit)[0] <= reach]
        return self.value_blocks(ties + [-t for t in ties])[0]

    @cached_property
    def products(self):
        """(unit exponent, {product in units: (a code, b code)}): the element format's positive
        products, in units of its smallest product (unit_products)."""
        from ..hdl.float_mac import lsb_exponent
        unit = 2 * lsb_exponent(self.element)
        return unit, unit_products(self.element, self.element, Fraction(2) ** unit)

    def _bit_blocks(self, zero):
        """(ea, eb) blocks whose exact sums are +-2**j and 2**j - 1 product units for every
        accumulator bit j a block reaches (signed_sums; the rest of a block zero codes, the
        products rotated through the positions), so every leading-one position and run of low
        ones meets the scale corners and output edges."""
        products = self.products[1]
        bits = (self.k * max(products, default=0)).bit_length()
        lists = signed_sums(self.element, products, bit_targets(bits), self.k)
        ea = np.full((len(lists), self.k), zero, dtype=np.uint64)
        eb = ea.copy()
        for row, (a, b) in enumerate(lists):
            places = (row + np.arange(len(a))) % self.k
            ea[row, places], eb[row, places] = a, b
        return ea, eb

    def value_blocks(self, values):
        """(sa, ea, sb, eb) block pairs whose exact dot is each of `values` (finite floats), and
        the indices of the values they make. A value n * 2**e (n odd) is a greedy sum of at most
        k products (greedy_pairs) equal to n shifted left as little as the scale range allows,
        the A elements negated for a negative value, the products rotated through the positions
        and the scales splitting the rest evenly; a zero is two blocks of zero codes. Values no
        block pair reaches (too many significant bits for k products, or beyond the scales'
        range) are left out."""
        unit, products = self.products
        sizes = sorted(products)
        negate = negations(self.element, {a for a, _ in products.values()})
        zero = int(self.element.encode(np.zeros(1))[0])
        reach, room = self.k * sizes[-1], self.scale_top - self.bias
        made, sa, ea, sb, eb = [], [], [], [], []
        for index, value in enumerate(values):
            if not np.isfinite(value):
                continue
            pairs, shift = [], 0
            if value:
                odd, exponent = _odd_significand(abs(value))
                exponent -= unit
                for left in range(max(0, exponent - 2 * room), reach.bit_length()):
                    if exponent - left < -2 * self.bias or (odd << left) > reach:
                        break
                    pairs = greedy_pairs(products, sizes, odd << left, self.k)
                    if pairs and (value > 0 or all(a in negate for a, _ in pairs)):
                        shift = exponent - left
                        break
                    pairs = []
                if not pairs:
                    continue
            places = (index + np.arange(len(pairs))) % self.k
            row_a, row_b = np.full(self.k, zero), np.full(self.k, zero)
            row_a[places] = [a if value > 0 else negate[a] for a, _ in pairs]
            row_b[places] = [b for _, b in pairs]
            total = 2 * self.bias + shift
            made.append(index)
            sa.append(total // 2)
            sb.append(total - total // 2)
            ea.append(row_a)
            eb.append(row_b)
        def stack(rows):
            return np.array(rows, dtype=np.uint64).reshape(-1, self.k)
        operands = (np.array(sa, dtype=np.uint64), stack(ea), np.array(sb, dtype=np.uint64),
                    stack(eb))
        return operands, np.array(made, dtype=np.int64)

    @staticmethod
    def _join(parts):
        return tuple(np.concatenate(pieces) for pieces in zip(*parts))

    def exhaustive(self, seed=None):
        ea, eb = self._sweep()
        spread = (np.arange(len(ea)) * 7) % 41 - 20
        sa, sb = self._centered_scales(ea, eb, spread)
        return self._join([(sa, ea, sb, eb)] + self._corners(ea, eb))

    def random(self, count, seed):
        rng = np.random.default_rng(seed)
        ea, eb = (self._random_blocks(CORNER_BLOCKS, rng) for _ in "ab")
        corners = self._join(self._corners(ea, eb))
        rest = max(count - len(corners[0]), 0)
        ea, eb = (self._random_blocks(rest, rng) for _ in "ab")
        sa, sb = self._centered_scales(ea, eb, rng.integers(-40, 41, rest))
        wild = rng.random(rest) < 0.25                # any scale, NaN and extremes included
        sa[wild] = rng.integers(0, 256, int(wild.sum()))
        sb[wild] = rng.integers(0, 256, int(wild.sum()))
        joined = self._join([corners, (sa, ea, sb, eb)])
        return tuple(x[:count] for x in joined)

    def _random_blocks(self, count, rng):
        """Uniform valid element codes; non-finite ones kept in one block in eight only."""
        codes = self.element.all_codes().astype(np.uint64)
        blocks = codes[rng.integers(0, len(codes), (count, self.k))]
        finite_codes = codes[np.isfinite(self.element.decode(codes))]
        tame = (rng.random(count) >= 0.125)[:, None] & ~np.isfinite(self.element.decode(blocks))
        blocks[tame] = finite_codes[rng.integers(0, len(finite_codes), int(tame.sum()))]
        return blocks

    # --- reference and payloads ---------------------------------------------------------------
    def reference(self, operands):
        """MXFormat.block_dot; a NaN the output format cannot encode gives code 0, as the hardware
        encoder does (rows that yield NaN or infinity are computed apart, so one refusal
        cannot spoil the finite rows)."""
        sa, ea, sb, eb = operands
        out = np.zeros(len(sa), dtype=np.uint64)
        nan_scale = (sa == self.scale_nan) | (sb == self.scale_nan)
        finite = (np.isfinite(self.element.decode(ea)) & np.isfinite(self.element.decode(eb))).all(axis=1)
        for rows in (finite & ~nan_scale, ~finite | nan_scale):
            if rows.any():
                out[rows] = self._or_zero(lambda r: self.format.block_dot(
                    sa[rows][r], ea[rows][r].ravel(), sb[rows][r], eb[rows][r].ravel(), self.out),
                    int(rows.sum()))
        return out

    @staticmethod
    def _or_zero(results, count):
        """results(rows) for rows 0..count-1; a row whose result the reference refuses (a NaN or
        infinity the output format cannot encode raises) gives code 0."""
        rows = np.arange(count)
        try:
            return np.asarray(results(rows), dtype=np.uint64)
        except (ValueError, SpecError):
            out = np.zeros(count, dtype=np.uint64)
            for row in rows:
                try:
                    out[row] = results(rows[row:row + 1])[0]
                except (ValueError, SpecError):
                    pass
            return out

    def fields(self, operands):
        """(codes, width) fields of the payload, lowest first: a_0..a_k-1, b_0..b_k-1, sa, sb."""
        sa, ea, sb, eb = operands
        w = self.format.bits
        return ([(ea[:, i], w) for i in range(self.k)] + [(eb[:, i], w) for i in range(self.k)]
                + [(sa, 8), (sb, 8)])

    def pack(self, operands):
        return pack_fields(self.fields(operands))

    def streams(self, operands):
        return None

    def describe(self, operands, index, got, expected):
        """`mxfp8_e4m3 block (scale 2^3 · 2^-1) a=[38 40 …] b=[…] → got 0x…, expected 0x…`."""
        sa, ea, sb, eb = (x[index] for x in operands)
        digits = (self.format.bits + 3) // 4

        def scale(code):
            return "NaN" if code == self.scale_nan else f"2^{int(code) - self.bias}"

        def block(codes):
            return "[" + " ".join(f"{int(c):0{digits}x}" for c in codes) + "]"

        def show(code):
            value = self.out.decode(np.array([code], dtype=np.uint64))[0]
            return f"0x{int(code):0{(self.out.bits + 3) // 4}x} ({value:g})"
        return (f"{self.format.name} block (scale {scale(sa)} · {scale(sb)}) a={block(ea)} "
                f"b={block(eb)} → got {show(got)}, expected {show(expected)}")
