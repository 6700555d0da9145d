#!/usr/bin/env python3
"""Data-parallel scaling of `ssalab train --nproc N`: tokens/s, scaling
efficiency against one process, the ssa/full step time, peak GPU memory
(nvidia-smi, when --device cuda) and how closely each run's loss curve
follows the one-process run with the same global batch.

Every run trains the same global batch (train.grad_accum micro-batches of
--batch sequences per step, shared among the processes), so the curves are
comparable and the throughput is the whole run's.

  CPU (this machine):  python3 bench/ddp_scaling.py --nprocs 1,2 --presets tiny
  GPUs:                python3 bench/ddp_scaling.py --device cuda --nprocs 1,2,4,8 \\
                           --presets small,base --seq-len 8192 --batch 1 --accum 8 --steps 30
  ZeRO-1:              ... --set train.shard_optimizer=true
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_memory_poller(stop, peak):
    """Largest memory.used (MiB) over all GPUs while the run goes on."""
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            for line in out.split():
                peak[0] = max(peak[0], int(line))
        except (OSError, subprocess.SubprocessError, ValueError):
            return
        stop.wait(0.5)


def run(args, preset, method, nproc, out):
    cmd = [args.binary, "train", "--quiet", "--preset", preset, "--method", method, "--out", out,
           "--set", f"train.steps={args.steps}", "--set", f"train.seq_len={args.seq_len}",
           "--set", f"train.batch_size={args.batch}", "--set", f"train.grad_accum={args.accum}",
           "--set", "train.eval_every=0", "--set", f"train.save_every={10 * args.steps}",
           "--set", f"train.device={args.device}"]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    for setting in args.set:
        cmd += ["--set", setting]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    stop, peak = threading.Event(), [0]
    poller = None
    if args.device == "cuda":
        poller = threading.Thread(target=gpu_memory_poller, args=(stop, peak))
        poller.start()
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    if poller:
        poller.join()
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    points = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steady = [p["tokens_per_s"] for p in points[args.warmup:]] or [points[-1]["tokens_per_s"]]
    return {"tokens_per_s": statistics.median(steady), "losses": [p["loss"] for p in points],
            "wall_s": wall, "gpu_peak_mib": peak[0] or None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "ssalab"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--presets", default="tiny")
    ap.add_argument("--methods", default="full,ssa")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="sequences per micro-batch")
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per step over all processes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the tokens/s median")
    ap.add_argument("--corpus", default="")
    ap.add_argument("--set", action="append", default=[], help="a setting for every run, e.g. train.shard_optimizer=true")
    ap.add_argument("--json", default="", help="write the results here as well")
    args = ap.parse_args()
    nprocs = [int(n) for n in args.nprocs.split(",")]
    for n in nprocs:
        if args.accum % n:
            sys.exit(f"--accum {args.accum} does not divide among {n} processes")

    results = []
    with tempfile.TemporaryDirectory(prefix="ssalab-ddp-") as tmp:
        for preset in args.presets.split(","):
            for method in args.methods.split(","):
                for n in nprocs:
                    r = run(args, preset, method, n, os.path.join(tmp, f"{preset}-{method}-{n}"))
                    r.update(preset=preset, method=method, nproc=n)
                    results.append(r)
                    print(f"  {preset} {method} x{n}: {r['tokens_per_s']:.0f} tokens/s", file=sys.stderr)

    def find(preset, method, n):
        return next(r for r in results if (r["preset"], r["method"], r["nproc"]) == (preset, method, n))

    print(f"device {args.device}; global batch {args.accum} x {args.batch} x {args.seq_len} tokens; "
          f"{args.steps} steps, tokens/s = median of steps {args.warmup + 1}..{args.steps}")
    print("| preset | method | processes | tokens/s | efficiency vs 1 | ssa/full step time | peak GPU MiB | "
          "largest relative loss difference vs 1 process |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        one = find(r["preset"], r["method"], nprocs[0])
        eff = r["tokens_per_s"] / (r["nproc"] / nprocs[0] * one["tokens_per_s"])
        ratio = ""
        if r["method"] != "full" and any(x["method"] == "full" for x in results):
            full = find(r["preset"], "full", r["nproc"])
            ratio = f"{full['tokens_per_s'] / r['tokens_per_s']:.2f}x"
        diff = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], one["losses"]))
        print(f"| {r['preset']} | {r['method']} | {r['nproc']} | {r['tokens_per_s']:.0f} | {eff:.2f} | {ratio} | "
              f"{r['gpu_peak_mib'] or '-'} | {diff:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
