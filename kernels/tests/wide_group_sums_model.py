"""A CPU model of select.cu's wide_group_sums against select_kernel's butterfly.

Both sum, for each of a tile's blocks, a lane's two head terms over the eight
lanes that share the block's column (lanes c, c + 4, .., c + 28 of a warp).
select_kernel adds each value across lanes xor 4, 8 and 16, so every lane
ends with every sum; the wide kernel's exchanges send half of what is left
each step, in the same order, so that lane (g, c) ends with the sums of
blocks 8 j + 2 c and + 1, j the bit reverse of g. This model runs both in
float32 (struct rounding) on random tiles and checks that each sum is the
same bits and that the 64 blocks land once each: the property that keeps the
wide kernel's selections equal to select_kernel's.

    python3 kernels/tests/wide_group_sums_model.py   # prints the mismatches (0)
"""
import random
import struct
import sys


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def add(a, b):
    return f32(a + b)


def butterfly(x):
    """select_kernel: v += shfl_xor(v, off) for off = 4, 8, 16, per value."""
    v = [row[:] for row in x]
    for off in (4, 8, 16):
        v = [[add(v[lane][k], v[lane ^ off][k]) for k in range(16)] for lane in range(32)]
    return v


def exchange(values, half, off, bit):
    """One step of wide_group_sums: keep the upper half where g's bit is set,
    add the partner's copy of it (the partner sends the half it drops)."""
    out = []
    for lane in range(32):
        partner = lane ^ off
        upper = (lane // 4) >> bit & 1
        kept = values[lane][half:2 * half] if upper else values[lane][:half]
        sent = values[partner][half:2 * half] if upper else values[partner][:half]
        out.append([add(kept[i], sent[i]) for i in range(half)])
    return out


def wide_group_sums(x):
    """lane -> {block: sum} of the wide kernel."""
    r = exchange(exchange(exchange(x, 8, 4, 0), 4, 8, 1), 2, 16, 2)
    sums = {}
    for lane in range(32):
        g, c = lane // 4, lane % 4
        j = (g & 1) * 4 + (g & 2) + (g >> 2 & 1)  # block_group: the bit reverse of g
        sums[lane] = {8 * j + 2 * c + i: r[lane][i] for i in range(2)}
    return sums


def main():
    rng = random.Random(7)
    mismatches = 0
    tiles = 500
    for _ in range(tiles):
        # a lane's value k is block 8 (k // 2) + 2 c + k % 2: two heads' exponentials
        x = [[f32(rng.random() * rng.choice([1e-6, 1e-3, 1.0, 1e3])) for _ in range(16)] for _ in range(32)]
        every = butterfly(x)
        placed = []
        for lane, sums in wide_group_sums(x).items():
            for block, value in sums.items():
                placed.append(block)
                k = 2 * ((block - 2 * (lane % 4)) // 8) + block % 2
                mismatches += value != every[lane][k]
        mismatches += sorted(placed) != list(range(64))
    print(f"{tiles} tiles of 64 blocks: {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
