#!/usr/bin/env python3
"""FlexAttention on the kernel benchmark's inputs and selections.

The kernel benchmark is the C++ program bench_kernels.cpp (target
ssalab_kernel_bench): our kernels and LibTorch's dense SDPA in one process.
FlexAttention exists only in Python, so this script times it and writes JSON
that `ssalab_kernel_bench --flex FILE` merges into its table.

Same inputs: for each shape both programs call manual_seed(<the shape's seed>)
and then draw q, k, v, dO with randn on the GPU, in that order, in bf16,
through the same LibTorch (the C++ build links this wheel's libraries).  The
CUDA generator is then in the same state and runs the same kernel, so the bits
agree; no PyTorch API promises that across processes, hence both programs
record exact checksums (input_checksums, selection_checksum) and the C++ table
marks an entry whose checksums differ from its own.

Same selection: our selection kernel, called through the C API library
(libssalab_kernels_c.so), turned into a BlockMask: 128 x 128 tiles, a tile is
partial when any of its queries selected any of its key blocks, and mask_mod
reads the per-token selection.

Timing: triton.testing.do_bench (median, L2 flushed, warm-up 25 ms, 200 ms of
repetitions), gradients reset between runs (grad_to_none) as the C++ program
does.  --profile SHAPES also prints per-kernel CUDA times of our select + fwd +
bwd through torch.profiler: the C++ program times whole stages with events and
cannot split the backward into its dQ and dK/dV kernels.

Usage: flex_bench.py [--lib PATH] [--json OUT] [--shapes A,B,C,D] [--profile C]
"""
import argparse
import ctypes
import json
import os
import re
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

# name: (Hq, Hkv, D, T, seed); must equal kShapes in bench_kernels.cpp
SHAPES = {"A": (16, 1, 64, 8192, 1), "B": (32, 2, 64, 8192, 2), "C": (32, 2, 64, 32768, 3), "D": (16, 1, 128, 32768, 4)}
SELECTIONS = ((16, 16), (64, 16))  # (block size, k); must equal kSelections there
BATCH = 1
FLEX_TILE = 128

VP = ctypes.c_void_p
INT = ctypes.c_int
HERE = os.path.dirname(os.path.abspath(__file__))
LIB_CANDIDATES = (os.path.join(HERE, "../../build-gpu/kernels/libssalab_kernels_c.so"),  # gpu_check.sh build
                  os.path.join(HERE, "../../build-kernels/libssalab_kernels_c.so"))     # standalone kernels build


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.ssa_select_ws.restype = ctypes.c_size_t
    lib.ssa_select_ws.argtypes = [INT] * 7
    lib.ssa_select.restype = ctypes.c_char_p
    lib.ssa_select.argtypes = [VP] * 5 + [INT] * 8 + [VP]
    lib.ssa_block_index_ws.restype = ctypes.c_size_t
    lib.ssa_block_index_ws.argtypes = [INT] * 5
    lib.ssa_block_index.restype = ctypes.c_char_p
    lib.ssa_block_index.argtypes = [VP] * 4 + [INT] * 5 + [VP]
    lib.ssa_sparse_fwd.restype = ctypes.c_char_p
    lib.ssa_sparse_fwd.argtypes = [VP] * 6 + [INT] * 8 + [VP]
    lib.ssa_sparse_bwd.restype = ctypes.c_char_p
    lib.ssa_sparse_bwd.argtypes = [VP] * 13 + [INT] * 8 + [VP]
    lib.ssa_sparse_bwd_ws.restype = ctypes.c_size_t
    lib.ssa_sparse_bwd_ws.argtypes = [INT] * 7
    return lib


def ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def check(err):
    if err:
        raise RuntimeError(err.decode())


def make_inputs(shape):
    """q, k, v, dO exactly as bench_kernels.cpp's make_inputs draws them."""
    hq, hkv, d, t, seed = SHAPES[shape]
    torch.manual_seed(seed)
    opts = dict(device="cuda", dtype=torch.bfloat16)
    q = torch.randn(BATCH, hq, t, d, **opts)
    k = torch.randn(BATCH, hkv, t, d, **opts)
    v = torch.randn(BATCH, hkv, t, d, **opts)
    dout = torch.randn(BATCH, hq, t, d, **opts)
    return q, k, v, dout


def bits_checksum(t):
    """Sum of the raw 16-bit patterns; bench_kernels.cpp computes the same."""
    return int(t.view(torch.int16).long().sum().item())


def selection_checksum(blocks):
    flat = blocks.reshape(-1).long()
    weight = torch.arange(flat.numel(), device=flat.device) % 65521 + 1  # order matters too
    return int((flat * weight).sum().item())


class OurKernels:
    """Buffers and C API calls of our kernels for one shape and selection config."""

    def __init__(self, lib, q, k, v, dout, block_size, top_k):
        self.lib, self.q, self.k, self.v, self.dout = lib, q, k, v, dout
        self.block_size, self.top_k = block_size, top_k
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        self.dims = (b, hq, hkv, t, d)
        nb = (t + block_size - 1) // block_size
        u8 = dict(dtype=torch.uint8, device=q.device)
        i32 = dict(dtype=torch.int32, device=q.device)
        self.kbar = torch.empty(max(1, lib.ssa_select_ws(b, hq, hkv, t, d, block_size, top_k)), **u8)
        self.blocks = torch.empty(b, hkv, t, top_k, **i32)
        self.counts = torch.empty(b, hkv, t, **i32)
        self.offsets = torch.empty(b, hkv, nb + 1, **i32)
        self.tokens = torch.empty(b, hkv, t * top_k, **i32)
        self.index_work = torch.empty(max(1, lib.ssa_block_index_ws(b, hkv, t, top_k, block_size)), **u8)
        self.o = torch.empty_like(q)
        self.lse = torch.empty(b, hq, t, dtype=torch.float32, device=q.device)
        self.dq, self.dk, self.dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self.bwd_work = torch.empty(max(1, lib.ssa_sparse_bwd_ws(b, hq, hkv, t, d, block_size, top_k)), **u8)
        self.dtype_code = 0  # bf16

    def stream(self):
        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def select(self):
        b, hq, hkv, t, d = self.dims
        check(self.lib.ssa_select(ptr(self.q), ptr(self.k), ptr(self.kbar), ptr(self.blocks), ptr(self.counts),
                                  b, hq, hkv, t, d, self.block_size, self.top_k, self.dtype_code, self.stream()))

    def forward(self):
        b, hq, hkv, t, d = self.dims
        check(self.lib.ssa_sparse_fwd(ptr(self.q), ptr(self.k), ptr(self.v), ptr(self.o), ptr(self.lse),
                                      ptr(self.blocks), b, hq, hkv, t, d, self.block_size, self.top_k,
                                      self.dtype_code, self.stream()))

    def backward(self):
        b, hq, hkv, t, d = self.dims
        check(self.lib.ssa_block_index(ptr(self.blocks), ptr(self.offsets), ptr(self.tokens), ptr(self.index_work),
                                       b, hkv, t, self.top_k, self.block_size, self.stream()))
        check(self.lib.ssa_sparse_bwd(ptr(self.q), ptr(self.k), ptr(self.v), ptr(self.o), ptr(self.dout),
                                      ptr(self.lse), ptr(self.blocks), ptr(self.offsets), ptr(self.tokens),
                                      ptr(self.dq), ptr(self.dk), ptr(self.dv), ptr(self.bwd_work),
                                      b, hq, hkv, t, d, self.block_size, self.top_k, self.dtype_code, self.stream()))

    def pairs(self):
        """Attended (query, key) pairs over all heads (past blocks are complete)."""
        b, hq, hkv, t, d = self.dims
        pos = torch.arange(t, device=self.q.device)
        per_token = (self.counts.long() - 1) * self.block_size + (pos % self.block_size + 1)
        return int(per_token.sum().item()) * (hq // hkv)

    def selection_mask(self):
        """(B, Hkv, T, nb) bool: block selected by token."""
        b, hq, hkv, t, d = self.dims
        nb = (t + self.block_size - 1) // self.block_size
        idx = self.blocks.long().masked_fill(self.blocks < 0, nb)  # empty slots -> a spare column
        mask = torch.zeros(b, hkv, t, nb + 1, dtype=torch.bool, device=self.q.device)
        mask.scatter_(-1, idx, True)
        return mask[..., :nb].contiguous()


def block_mask_of(ours, tile=FLEX_TILE):
    """The selection as a FlexAttention BlockMask over tile x tile tiles."""
    from torch.nn.attention.flex_attention import BlockMask
    b, hq, hkv, t, d = ours.dims
    group, bs = hq // hkv, ours.block_size
    sel = ours.selection_mask()  # (B, Hkv, T, nb)
    n_tiles = (t + tile - 1) // tile
    nb = sel.shape[-1]
    # token-level selection -> (query tile, key block) "any"
    tiles = F.pad(sel, (0, 0, 0, n_tiles * tile - t)).view(b, hkv, n_tiles, tile, nb).any(3)
    blocks_per_tile = tile // bs if bs <= tile else 1
    tiles = F.pad(tiles, (0, max(0, n_tiles * blocks_per_tile - nb)))
    tiles = tiles.view(b, hkv, n_tiles, n_tiles, blocks_per_tile).any(-1)  # (B, Hkv, q tiles, kv tiles)
    tiles = tiles.repeat_interleave(group, dim=1)
    num = tiles.sum(-1).to(torch.int32)
    order = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # selected tiles first

    def mask_mod(b_idx, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & sel[b_idx, h // group, q_idx, kv_idx // bs]

    return BlockMask.from_kv_blocks(num, order, BLOCK_SIZE=tile, mask_mod=mask_mod, seq_lengths=(t, t))


def bench(fn, grads=None):
    return do_bench(fn, warmup=25, rep=200, grad_to_none=grads, return_mode="median")


def time_flex(ours):
    """FlexAttention fwd and fwd+bwd on our selection; also its difference to our output."""
    from torch.nn.attention.flex_attention import flex_attention
    flex = torch.compile(flex_attention, dynamic=False)
    block_mask = block_mask_of(ours)
    q = ours.q.detach().requires_grad_()
    k = ours.k.detach().requires_grad_()
    v = ours.v.detach().requires_grad_()

    def forward():
        return flex(q, k, v, block_mask=block_mask, enable_gqa=True)

    def forward_backward():
        forward().backward(ours.dout)

    started = time.time()
    out = forward()
    forward_backward()
    torch.cuda.synchronize()
    compile_s = time.time() - started
    ours.forward()
    diff = (out.float() - ours.o.float()).abs().max().item()
    del out
    return dict(fwd_ms=bench(forward, [q, k, v]), fwd_bwd_ms=bench(forward_backward, [q, k, v]),
                max_abs_diff_vs_ours=diff, compile_s=compile_s)


def profile_kernels(shape, cfg, ours, runs=5):
    """Per-kernel CUDA time of select + fwd + bwd, averaged over `runs`."""
    from torch.profiler import ProfilerActivity, profile
    ours.select(); ours.forward(); ours.backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            ours.select(); ours.forward(); ours.backward()
        torch.cuda.synchronize()
    total = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            m = re.search(r"(\w+_kernel|Memset|Memcpy)", e.name)
            key = m.group(1) if m else e.name[:40]
            total[key] = total.get(key, 0.0) + e.device_time / runs / 1000.0
    ranked = sorted(total.items(), key=lambda kv: -kv[1])
    print(f"{shape} {cfg} per-kernel ms: " + ", ".join(f"{k}={v:.3f}" for k, v in ranked), flush=True)
    return dict(ranked)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=next((p for p in LIB_CANDIDATES if os.path.exists(p)), LIB_CANDIDATES[0]))
    ap.add_argument("--json", default="flex.json")
    ap.add_argument("--shapes", default="A,B,C,D")
    ap.add_argument("--profile", default="", help="shapes whose per-kernel times of our kernels are printed")
    args = ap.parse_args()
    lib = load_library(os.path.abspath(args.lib))
    report = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d %H:%M"), lib=os.path.abspath(args.lib), rows=[])
    print(f"# FlexAttention  {report['device']}  torch {report['torch']}  {report['date']}", flush=True)

    for shape in args.shapes.split(","):
        q, k, v, dout = make_inputs(shape)
        input_checksums = [bits_checksum(x) for x in (q, k, v, dout)]
        for block_size, top_k in SELECTIONS:
            cfg = f"bs{block_size} k{top_k}"
            ours = OurKernels(lib, q, k, v, dout, block_size, top_k)
            ours.select()
            torch.cuda.synchronize()
            pairs = ours.pairs()
            row = dict(shape=shape, config=cfg, seed=SHAPES[shape][4], input_checksums=input_checksums,
                       selection_checksum=selection_checksum(ours.blocks), pairs=pairs)
            try:
                row.update(time_flex(ours))
                d = SHAPES[shape][2]
                row["fwd_tflops"] = 4 * pairs * d / (row["fwd_ms"] * 1e-3) / 1e12
                row["fwd_bwd_tflops"] = 14 * pairs * d / (row["fwd_bwd_ms"] * 1e-3) / 1e12
                print(f"{shape} flex {cfg}: fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwd_bwd_ms']:.3f} ms, "
                      f"max|flex-ours| {row['max_abs_diff_vs_ours']:.3g}, compile {row['compile_s']:.0f}s", flush=True)
            except Exception as e:  # noqa: BLE001 -- a failed peer is a table entry, not a crash
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"{shape} flex {cfg}: {row['error']}", flush=True)
            if shape in args.profile.split(","):
                row["our_kernels_ms"] = profile_kernels(shape, cfg, ours)
            report["rows"].append(row)
            # written after every entry, so a run cut short still leaves what it measured
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
            del ours
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
