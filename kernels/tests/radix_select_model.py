"""A CPU model of decode.cu's select_by_radix against the merge it replaces.

The decode attend kernels take a step's picks from the chunks' ranked
candidate lists (decode_pick). The merge (merge_in_registers) takes the best
list head while its side has quota left; select_by_radix finds, per side, the
key value that leaves exactly the side's quota at or above it, one byte of the
64-bit key a pass from the top, then ranks the chosen keys. This model runs
both on random steps of both rules (exact top-k; nsa-chunked with two sides
and quotas) and checks that they pick the same blocks in the same order. It
mirrors the kernel's passes (histogram per side, the lanes' digit ranges,
prefix and mask, "fills it exactly" to stop), not its memory or threads:
races are compute-sanitizer's job (`bash scripts/gpu_check.sh decodenext`).

    python3 kernels/tests/radix_select_model.py   # prints the mismatches (0)
"""
import random
import struct

ROWS = 128  # pooled blocks per chunk (kScoreThreads)


def candidate_key(prob, block):
    """decode.cu's candidate_key: float bits + 1 high, ~block low; 0 = empty."""
    if prob < 0:
        return 0
    bits = struct.unpack("<I", struct.pack("<f", prob))[0]
    return ((bits + 1) << 32) | (~block & 0xFFFFFFFF)


def block_of(key):
    return ~key & 0xFFFFFFFF


def merge(lists, quota, split):
    """merge_in_registers: the best head of a side with quota left, per pick."""
    heads, left, picked = [0] * len(lists), list(quota), []
    for _ in range(sum(quota)):
        best, at = 0, -1
        for c, (keys, side) in enumerate(lists):
            if heads[c] < len(keys) and left[side] > 0 and keys[heads[c]] > best:
                best, at = keys[heads[c]], c
        if best == 0:
            break
        left[1 if block_of(best) >= split else 0] -= 1
        heads[at] += 1
        picked.append(block_of(best))
    return picked


def radix(cand, quota, sides, split):
    """select_by_radix, pass by pass."""
    side_of = lambda key: 1 if block_of(key) >= split else 0
    prefix, mask = [0, 0], [0, 0]
    takes = [s < sides and quota[s] > 0 for s in range(2)]
    remaining = [quota[s] if takes[s] else 0 for s in range(2)]
    open_ = list(takes)
    for shift in range(56, -1, -8):
        if not any(open_):
            break
        hist = [[0] * 256, [0] * 256]
        was_open = list(open_)
        for key in cand:
            s = side_of(key)
            if key and was_open[s] and key & mask[s] == prefix[s]:
                hist[s][(key >> shift) & 255] += 1
        for s in range(2):
            if not was_open[s]:
                continue
            # lane l holds digits 255 - 8l down to 248 - 8l; from_top is inclusive
            lane_sum = [sum(hist[s][255 - 8 * l - e] for e in range(8)) for l in range(32)]
            from_top, total = [], 0
            for l in range(32):
                total += lane_sum[l]
                from_top.append(total)
            want = remaining[s]
            if total <= want:
                open_[s] = False
                continue
            for l in range(32):
                if from_top[l] - lane_sum[l] < want <= from_top[l]:
                    above = from_top[l] - lane_sum[l]
                    for e in range(8):
                        count = hist[s][255 - 8 * l - e]
                        if above + count >= want:
                            prefix[s] |= (255 - 8 * l - e) << shift
                            mask[s] |= 0xFF << shift
                            remaining[s] = want - above
                            open_[s] = count != want - above
                            break
                        above += count
    chosen = [k for k in cand if k and takes[side_of(k)] and k & mask[side_of(k)] >= prefix[side_of(k)]]
    return [block_of(k) for k in sorted(chosen, reverse=True)]


def random_step(rng):
    """A step's candidate lists as decode_pick leaves them, and the rule's quotas."""
    blocks, top_k = rng.randint(1, 3000), rng.choice([1, 2, 3, 8, 16, 32, 48, 64, 128])
    picks = min(top_k - 1, blocks)
    quota, sides, split = [picks, 0], 1, 1 << 40
    own = blocks  # the query's block follows the complete ones
    if rng.random() < 0.5 and top_k >= 16 and own >= top_k:  # candidate_lists' nsa-chunked case
        quota, sides, split = [top_k // 2, top_k - top_k // 2 - 1], 2, own // top_k * top_k
    kind = rng.random()  # ties in value, a long tail, or near-uniform probabilities
    prob = [rng.choice([0.0, 1e-3, 0.5]) if kind < 0.2 else rng.random() ** 8 if kind < 0.4 else rng.random() * 1e-3
            for _ in range(blocks)]
    lists, cand = [], []
    for chunk in range((blocks + ROWS - 1) // ROWS):
        rows = range(chunk * ROWS, min(blocks, (chunk + 1) * ROWS))
        for side in range(sides):
            keys = sorted((candidate_key(prob[j], j) for j in rows if (j >= split) == bool(side)), reverse=True)
            keys = keys[:quota[side]]
            lists.append((keys, side))
            cand += keys + [0] * (quota[side] - len(keys))
    return lists, cand, quota, sides, split


def main():
    rng = random.Random(1)
    mismatches = 0
    for _ in range(3000):
        lists, cand, quota, sides, split = random_step(rng)
        if merge(lists, quota, split) != radix(cand, quota, sides, split):
            mismatches += 1
    print("mismatches", mismatches)
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
