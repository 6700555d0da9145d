"""A CPU model of select.cu's pick_from_row against a plain sort.

After pass 2 a warp holds its row's group scores buf[0 .. bt) in shared memory
and takes the K - 1 past slots in rounds of warp argmax (highest score, ties
to the lower block index), each side of the nsa-chunked rule only while it
has slots left (slot_plan). Each lane caches the kPickDepth best entries of
its column (blocks j = lane mod 32) per side (ColumnBest) and scans the column
again only once all of them are taken, the taken ones marked -2 in buf. This
model runs that scheme, lane by lane, on random rows of both rules (ties,
zeros, long tails, short rows) and checks the slots against sorting each
side and merging them under the same quotas. It mirrors the kernel's steps
(scan order, insertion, pop, rescan, the argmax's order), not its threads.

    python3 kernels/tests/pick_cache_model.py   # prints the mismatches (0)
"""
import random
import struct

PICK_DEPTH = 4  # kPickDepth
NSA_CHUNK_BLOCKS = 16  # kNsaChunkBlocks
NONE = (-1.0, 0x7FFFFFFF)


def ranks_before(a, b):
    """select.cu's ranks_before on (value, block) pairs."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])


def slot_plan(top_k, bt, nsa_chunked):
    chunked = nsa_chunked and top_k >= NSA_CHUNK_BLOCKS and bt >= top_k
    own_start = bt // top_k * top_k if chunked else bt
    cap_before = min(top_k // 2, own_start) if chunked else min(top_k - 1, bt)
    cap_own = min(top_k - top_k // 2 - 1, bt - own_start) if chunked else 0
    return chunked, own_start, cap_before, cap_own


class ColumnBest:
    def __init__(self):
        self.entries = [NONE] * PICK_DEPTH

    def scan(self, buf, lo, hi, lane):
        self.entries = [NONE] * PICK_DEPTH
        j = lo + ((lane - lo) & 31)
        while j < hi:
            x = (buf[j], j)
            if ranks_before(x, self.entries[-1]):
                for d in range(PICK_DEPTH):  # the kernel's unrolled insertion
                    if ranks_before(x, self.entries[d]):
                        self.entries[d], x = x, self.entries[d]
            j += 32

    def take(self, buf, lo, hi, lane):
        self.entries = self.entries[1:] + [NONE]
        if self.entries[0][0] < 0:
            self.scan(buf, lo, hi, lane)


def pick_from_row(buf, top_k, bt, nsa_chunked):
    buf = list(buf)
    chunked, own_start, quota_before, quota_own = slot_plan(top_k, bt, nsa_chunked)
    before = [ColumnBest() for _ in range(32)]
    own = [ColumnBest() for _ in range(32)]
    for lane in range(32):
        before[lane].scan(buf, 0, own_start, lane)
        if chunked:
            own[lane].scan(buf, own_start, bt, lane)
    out = []
    for _ in range(quota_before + quota_own):
        offers = []
        for lane in range(32):
            offer = NONE
            if quota_before > 0 and ranks_before(before[lane].entries[0], offer):
                offer = before[lane].entries[0]
            if quota_own > 0 and ranks_before(own[lane].entries[0], offer):
                offer = own[lane].entries[0]
            offers.append(offer)
        best = offers[0]
        for offer in offers[1:]:
            if ranks_before(offer, best):
                best = offer
        i = best[1]
        out.append(i)
        own_side = i >= own_start
        if own_side:
            quota_own -= 1
        else:
            quota_before -= 1
        lane = i & 31
        buf[i] = -2.0
        if own_side:
            own[lane].take(buf, own_start, bt, lane)
        else:
            before[lane].take(buf, 0, own_start, lane)
    return out


def reference(buf, top_k, bt, nsa_chunked):
    """Each side sorted (score down, block up), merged in one order under the quotas."""
    _, own_start, quota_before, quota_own = slot_plan(top_k, bt, nsa_chunked)
    order = sorted(range(bt), key=lambda j: (-buf[j], j))
    out = []
    for j in order:
        if j < own_start and quota_before > 0:
            out.append(j)
            quota_before -= 1
        elif j >= own_start and quota_own > 0:
            out.append(j)
            quota_own -= 1
    return out


def random_row(rng):
    bt = rng.choice([0, 1, 5, 31, 32, 33, 40, 64, 100, 127, 128, 129, 300, 513, 2047])
    top_k = rng.choice([2, 8, 16, 17, 32, 64])
    kind = rng.random()  # ties in value, zeros, a long tail, or near-uniform
    if kind < 0.25:
        buf = [rng.choice([0.0, 1e-3, 0.25, 0.5]) for _ in range(bt)]
    elif kind < 0.5:
        buf = [rng.random() ** 12 for _ in range(bt)]
    elif kind < 0.6:  # the best blocks in a few columns, so caches empty and rescan
        buf = [1.0 + rng.random() if j % 32 in (3, 17) else rng.random() * 1e-3 for j in range(bt)]
    else:
        buf = [rng.random() for _ in range(bt)]
    buf = [struct.unpack("<f", struct.pack("<f", x))[0] for x in buf]  # the kernel's rows are float32
    return buf, top_k, bt, rng.random() < 0.5


def main():
    rng = random.Random(1)
    mismatches = rows = 0
    for _ in range(1500):
        buf, top_k, bt, nsa_chunked = random_row(rng)
        rows += 1
        if pick_from_row(buf, top_k, bt, nsa_chunked) != reference(buf, top_k, bt, nsa_chunked):
            mismatches += 1
    print("rows", rows, "mismatches", mismatches)
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
