#!/usr/bin/env python3
"""Benchmark of the ssalab kernels against PyTorch peers, in one table.

Loads build-kernels/libssalab_kernels_c.so through ctypes and times, with
triton.testing.do_bench (median, L2 flushed between runs):
  select       block top-k selection (pooling + scores + top-k)
  sparse       sparse attention fwd, and fwd+bwd (transposed index + bwd included)
  flex         FlexAttention with the equivalent block mask (same selection)
  sdpa         dense causal SDPA (cuDNN and flash backends)
  dual         full (cuDNN) + sparse (ours), fwd+bwd, the SSA training pair
  stats        full-attention statistics (+ pooled map) at shape C
Effective TFLOP/s count only attended (query, key) pairs: fwd 4*pairs*D,
fwd+bwd 14*pairs*D (bwd = 2.5 fwd).
Usage: bench.py [--lib PATH] [--json OUT] [--shapes A,B,C,D] [--no-flex]
"""
import argparse
import ctypes
import json
import math
import re
import os
import sys
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

P = ctypes.c_void_p
I = ctypes.c_int


def load(path):
    lib = ctypes.CDLL(path)
    lib.ssa_select_ws.restype = ctypes.c_size_t
    lib.ssa_select_ws.argtypes = [I] * 7
    lib.ssa_select.restype = ctypes.c_char_p
    lib.ssa_select.argtypes = [P] * 5 + [I] * 8 + [P]
    lib.ssa_block_index_ws.restype = ctypes.c_size_t
    lib.ssa_block_index_ws.argtypes = [I] * 5
    lib.ssa_block_index.restype = ctypes.c_char_p
    lib.ssa_block_index.argtypes = [P] * 4 + [I] * 5 + [P]
    lib.ssa_sparse_fwd.restype = ctypes.c_char_p
    lib.ssa_sparse_fwd.argtypes = [P] * 6 + [I] * 8 + [P]
    lib.ssa_sparse_bwd.restype = ctypes.c_char_p
    lib.ssa_sparse_bwd.argtypes = [P] * 13 + [I] * 8 + [P]
    lib.ssa_sparse_bwd_ws.restype = ctypes.c_size_t
    lib.ssa_sparse_bwd_ws.argtypes = [I] * 7
    lib.ssa_stats_map_elems.restype = ctypes.c_size_t
    lib.ssa_stats_map_elems.argtypes = [I] * 6
    lib.ssa_stats.restype = ctypes.c_char_p
    lib.ssa_stats.argtypes = [P] * 5 + [I] * 2 + [I] * 8 + [P]
    return lib


def ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def chk(err):
    if err:
        raise RuntimeError(err.decode())


class Ours:
    """Buffers and calls for one shape / selection config."""

    def __init__(self, lib, q, k, v, bs, K):
        self.lib, self.q, self.k, self.v, self.bs, self.K = lib, q, k, v, bs, K
        B, Hq, T, D = q.shape
        Hkv = k.shape[1]
        self.shape = (B, Hq, Hkv, T, D)
        dev = q.device
        nb = (T + bs - 1) // bs
        self.kbar = torch.empty(max(1, lib.ssa_select_ws(B, Hq, Hkv, T, D, bs, K)), dtype=torch.uint8, device=dev)
        self.blocks = torch.empty(B, Hkv, T, K, dtype=torch.int32, device=dev)
        self.counts = torch.empty(B, Hkv, T, dtype=torch.int32, device=dev)
        self.offsets = torch.empty(B, Hkv, nb + 1, dtype=torch.int32, device=dev)
        self.tokens = torch.empty(B, Hkv, T * K, dtype=torch.int32, device=dev)
        self.iwork = torch.empty(max(1, lib.ssa_block_index_ws(B, Hkv, T, K, bs)), dtype=torch.uint8, device=dev)
        self.o = torch.empty_like(q)
        self.lse = torch.empty(B, Hq, T, dtype=torch.float32, device=dev)
        self.do = torch.randn_like(q)
        self.dq, self.dk, self.dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self.bws = torch.empty(lib.ssa_sparse_bwd_ws(B, Hq, Hkv, T, D, bs, K), dtype=torch.uint8, device=dev)
        self.dt = 0 if q.dtype == torch.bfloat16 else 1

    def stream(self):
        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def select(self):
        B, Hq, Hkv, T, D = self.shape
        chk(self.lib.ssa_select(ptr(self.q), ptr(self.k), ptr(self.kbar), ptr(self.blocks), ptr(self.counts),
                                B, Hq, Hkv, T, D, self.bs, self.K, self.dt, self.stream()))

    def fwd(self):
        B, Hq, Hkv, T, D = self.shape
        chk(self.lib.ssa_sparse_fwd(ptr(self.q), ptr(self.k), ptr(self.v), ptr(self.o), ptr(self.lse),
                                    ptr(self.blocks), B, Hq, Hkv, T, D, self.bs, self.K, self.dt, self.stream()))

    def bwd(self):
        B, Hq, Hkv, T, D = self.shape
        chk(self.lib.ssa_block_index(ptr(self.blocks), ptr(self.offsets), ptr(self.tokens), ptr(self.iwork),
                                     B, Hkv, T, self.K, self.bs, self.stream()))
        chk(self.lib.ssa_sparse_bwd(ptr(self.q), ptr(self.k), ptr(self.v), ptr(self.o), ptr(self.do), ptr(self.lse),
                                    ptr(self.blocks), ptr(self.offsets), ptr(self.tokens), ptr(self.dq), ptr(self.dk),
                                    ptr(self.dv), ptr(self.bws), B, Hq, Hkv, T, D, self.bs, self.K, self.dt,
                                    self.stream()))

    def fwd_bwd(self):
        self.fwd()
        self.bwd()

    def pairs(self):
        """Attended (query, key) pairs over all heads."""
        B, Hq, Hkv, T, D = self.shape
        t = torch.arange(T, device=self.q.device)
        per = (self.counts.long() - 1) * self.bs + (t % self.bs + 1)
        return int(per.sum().item()) * (Hq // Hkv)

    def selection_mask(self):
        """(B, Hkv, T, nb) bool: block selected by token."""
        B, Hq, Hkv, T, D = self.shape
        nb = (T + self.bs - 1) // self.bs
        idx = self.blocks.long().masked_fill(self.blocks < 0, nb)
        m = torch.zeros(B, Hkv, T, nb + 1, dtype=torch.bool, device=self.q.device)
        m.scatter_(-1, idx, True)
        return m[..., :nb].contiguous()


def bench(fn, ms=200):
    return do_bench(fn, warmup=25, rep=ms, return_mode="median")


def flex_setup(ours, tile=128):
    from torch.nn.attention.flex_attention import BlockMask
    B, Hq, Hkv, T, D = ours.shape
    G, bs = Hq // Hkv, ours.bs
    sel = ours.selection_mask()  # (B, Hkv, T, nb)
    nt = (T + tile - 1) // tile
    nb = sel.shape[-1]
    # token-level selection -> (q tile, kv tile) "any" map
    pad_t = nt * tile - T
    s = F.pad(sel, (0, 0, 0, pad_t)).view(B, Hkv, nt, tile, nb).any(3)  # (B,Hkv,nt,nb)
    kv_per_tile = tile // bs if bs <= tile else 1
    pad_b = nt * kv_per_tile - nb
    s = F.pad(s, (0, max(0, pad_b))).view(B, Hkv, nt, nt, kv_per_tile).any(-1)  # (B,Hkv,nqt,nkt)
    s = s.repeat_interleave(G, dim=1)
    num = s.sum(-1).to(torch.int32)
    order = torch.argsort((~s).to(torch.int8), dim=-1, stable=True).to(torch.int32)

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & sel[b, h // G, q_idx, kv_idx // bs]

    return BlockMask.from_kv_blocks(num, order, BLOCK_SIZE=tile, mask_mod=mask_mod, seq_lengths=(T, T))


def profile(name, cfg, ours):
    """Per-kernel CUDA time of select + fwd + bwd (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile as prof
    ours.select(); ours.fwd_bwd(); torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(5):
            ours.select()
            ours.fwd_bwd()
        torch.cuda.synchronize()
    tot = {}
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            mm = re.search(r"(\w+_kernel|Memset|Memcpy)", e.name)
            key = mm.group(1) if mm else e.name[:40]
            tot[key] = tot.get(key, 0.0) + e.device_time / 5 / 1000.0
    print(f"{name} {cfg} per-kernel ms: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(tot.items(), key=lambda x: -x[1])), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "../../build-kernels/libssalab_kernels_c.so"))
    ap.add_argument("--json", default="bench.json")
    ap.add_argument("--shapes", default="A,B,C,D")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--profile", default="C", help="shapes whose per-kernel times are printed")
    args = ap.parse_args()
    lib = load(os.path.abspath(args.lib))
    torch.manual_seed(0)
    dev = "cuda"
    print(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    shapes = {"A": (16, 1, 64, 8192), "B": (32, 2, 64, 8192), "C": (32, 2, 64, 32768), "D": (16, 1, 128, 32768)}
    rows = []

    def row(shape, what, cfg, fwd_ms=None, fb_ms=None, pairs=None, D=None, note=""):
        tf = lambda ms, mult: (mult * pairs * D / (ms * 1e-3) / 1e12) if (ms and pairs) else None
        r = dict(shape=shape, what=what, cfg=cfg, fwd_ms=fwd_ms, fwd_bwd_ms=fb_ms,
                 fwd_tflops=tf(fwd_ms, 4), fwd_bwd_tflops=tf(fb_ms, 14), note=note)
        rows.append(r)
        f = lambda x, p=3: ("%.*f" % (p, x)) if x is not None else "-"
        print(f"{shape:2} {what:14} {cfg:12} fwd {f(fwd_ms):>8} ms {f(r['fwd_tflops'], 1):>6} TF/s | "
              f"fwd+bwd {f(fb_ms):>8} ms {f(r['fwd_bwd_tflops'], 1):>6} TF/s  {note}", flush=True)

    for name in args.shapes.split(","):
        Hq, Hkv, D, T = shapes[name]
        B = 1
        q = torch.randn(B, Hq, T, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, T, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(B, Hkv, T, D, device=dev, dtype=torch.bfloat16)
        dense_pairs = B * Hq * T * (T + 1) // 2
        dense = {}
        if not args.no_dense:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            qg = q.detach().requires_grad_()
            ke = k.repeat_interleave(Hq // Hkv, 1).detach().requires_grad_()
            ve = v.repeat_interleave(Hq // Hkv, 1).detach().requires_grad_()
            do = torch.randn_like(q)
            for bname, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    with sdpa_kernel([be]):
                        f1 = lambda: F.scaled_dot_product_attention(qg, ke, ve, is_causal=True)
                        def f2():
                            o = F.scaled_dot_product_attention(qg, ke, ve, is_causal=True)
                            o.backward(do)
                        f1(); f2()
                        t1, t2 = bench(f1), bench(f2)
                    dense[bname] = (t1, t2)
                    row(name, "sdpa-" + bname, "dense", t1, t2, dense_pairs, D)
                except Exception as e:  # noqa
                    print(f"{name} sdpa-{bname}: {type(e).__name__}: {str(e)[:200]}", flush=True)
            del qg, ke, ve
        for bs, K in ((16, 16), (64, 16)):
            cfg = f"bs{bs} k{K}"
            ours = Ours(lib, q, k, v, bs, K)
            ours.select()
            torch.cuda.synchronize()
            t_sel = bench(ours.select)
            row(name, "select", cfg, t_sel, None, None, D)
            pairs = ours.pairs()
            t1, t2 = bench(ours.fwd), bench(ours.fwd_bwd)
            row(name, "sparse", cfg, t1, t2, pairs, D, f"density {pairs / dense_pairs:.4f}")
            if "cudnn" in dense:
                tf, tfb = dense["cudnn"]
                row(name, "dual", cfg, tf + t1, tfb + t2, None, D,
                    f"cuDNN full + sparse; fwd+bwd = {(tfb + t2) / tfb:.3f}x cuDNN dense")
            if not args.no_flex:
                try:
                    from torch.nn.attention.flex_attention import flex_attention
                    flex = torch.compile(flex_attention, dynamic=False)
                    bm = flex_setup(ours)
                    qf = q.detach().requires_grad_()
                    kf = k.detach().requires_grad_()
                    vf = v.detach().requires_grad_()
                    f1 = lambda: flex(qf, kf, vf, block_mask=bm, enable_gqa=True)
                    def f2():
                        o = flex(qf, kf, vf, block_mask=bm, enable_gqa=True)
                        o.backward(ours.do)
                    t0 = time.time()
                    of = f1()
                    f2()
                    torch.cuda.synchronize()
                    ours.fwd()
                    err = (of.float() - ours.o.float()).abs().max().item()
                    ft1, ft2 = bench(f1), bench(f2)
                    row(name, "flex", cfg, ft1, ft2, pairs, D, f"max|flex-ours| {err:.3g}, compile {time.time() - t0:.0f}s")
                    del qf, kf, vf, of
                except Exception as e:  # noqa
                    print(f"{name} flex {cfg}: {type(e).__name__}: {str(e)[:300]}", flush=True)
            if name in args.profile.split(","):
                profile(name, cfg, ours)
            if name == "C" and bs == 16:
                B_, Hq_, Hkv_, T_, D_ = ours.shape
                stats = torch.empty(B_, Hq_, T_, 5, dtype=torch.float32, device=dev)
                nmap = lib.ssa_stats_map_elems(B_, Hq_, T_, bs, 64, 0)
                smap = torch.empty(nmap, dtype=torch.float32, device=dev)
                st = lambda m: chk(lib.ssa_stats(ptr(q), ptr(k), ptr(ours.blocks), ptr(stats), ptr(m), 64, 0,
                                                 B_, Hq_, Hkv_, T_, D_, bs, K, 0, ours.stream()))
                ts0 = bench(lambda: st(None), 400)
                ts1 = bench(lambda: st(smap), 400)
                ref = dense.get("cudnn", (None,))[0]
                note = f"{ts1 / ref:.2f}x cuDNN dense fwd" if ref else ""
                row(name, "stats", "no map", ts0, None, None, D, f"{ts0 / ref:.2f}x cuDNN dense fwd" if ref else "")
                row(name, "stats", "map rp64", ts1, None, None, D, note + f"; mean sparsity {stats[..., 4].mean().item():.4f}")
                del stats, smap
            del ours
            torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       date=time.strftime("%Y-%m-%d %H:%M"), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
