#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from the
real files in tests/fixtures: each seed a real file, made small so that the
fuzzer's mutations reach the parser rather than a megabyte of vocabulary.
  safetensors        the smallest tensors of each fixture model, offsets rewritten
  model_config       each fixture's config.json and the shipped models'
  trainer_state      the shipped models' trainer_state.json
  checkpoint_folder  config.json + model.safetensors.index.json of the
                     sharded fixture, joined as FuzzedDataProvider splits them
  tokenizer          gpt2 / llama2 / llama3 / qwen3 tokenizer.json with the
                     vocabulary cut to a few hundred entries (every stage kept),
                     with their tokenizer_config.json and a text
  token_cache        a real token cache cut to its first ids (--token-cache FILE,
                     from a run's cache folder, e.g. .cache/ssalab/tokens-*.bin)
  metrics_log        a real run's metrics.jsonl (--metrics FILE), whole, as a
                     resumed run appends it again, and cut mid-line; the first
                     byte sets the size of the pieces the target appends
Run from the repository root: python3 fuzz/make_seeds.py [--token-cache FILE] [--metrics FILE]
(without those two the committed token_cache and metrics_log seeds stay)"""
import argparse
import gzip
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
HF = os.path.join(ROOT, "tests", "fixtures", "hf")
TOK = os.path.join(ROOT, "tests", "fixtures", "tokenizers")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def provider_string(text):
    """FuzzedDataProvider::ConsumeRandomLengthString's encoding: a backslash
    is doubled, and a backslash followed by another byte ends the string."""
    return text.replace("\\", "\\\\") + "\\n"


def small_safetensors(path, keep=3):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out, body = {}, b""
    if "__metadata__" in header:
        out["__metadata__"] = header.pop("__metadata__")
    smallest = sorted(header, key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])[:keep]
    for name in sorted(smallest, key=lambda k: header[k]["data_offsets"][0]):
        e = dict(header[name])
        b, end = e["data_offsets"]
        e["data_offsets"] = [len(body), len(body) + end - b]
        body += data[b:end]
        out[name] = e
    head = json.dumps(out, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + body


def small_tokenizer(tok, keep=300):
    model = tok["model"]
    if isinstance(model.get("vocab"), dict):
        vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1])[:keep])
        merges = []
        for m in model.get("merges", []):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in vocab and b in vocab and a + b in vocab:
                merges.append(m)
        model["vocab"], model["merges"] = vocab, merges
    return json.dumps(tok, ensure_ascii=False)


def small_token_cache(path, n_train=200, n_val=40):
    raw = open(path, "rb").read()
    magic, version, zero, key, train, val = struct.unpack("<8sIIQQQ", raw[:40])
    assert magic == b"SSALTOK\0" and version == 1, path + " is not a token cache"
    ids = raw[48:48 + 4 * train]
    tokens = ids[:4 * n_train] + raw[48 + 4 * train:48 + 4 * (train + n_val)]
    return struct.pack("<8sIIQQQQ", magic, version, zero, key, n_train, n_val, fnv1a(tokens)) + tokens


def fnv1a(data):
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def metrics_seeds(path):
    lines = open(path, "rb").read().splitlines(keepends=True)[:24]
    resumed = lines[:12] + lines[6:24]  # a run resumed from its step-6 checkpoint logs 7.. again
    whole = b"".join(lines)
    return {"run": bytes([12]) + whole, "resumed": bytes([40]) + b"".join(resumed),
            "cut": bytes([0]) + whole[:len(whole) * 2 // 3]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--token-cache")
    ap.add_argument("--metrics")
    args = ap.parse_args()
    if args.token_cache:
        put("token_cache", "real_tokens.bin", small_token_cache(args.token_cache))
    if args.metrics:
        for name, data in metrics_seeds(args.metrics).items():
            put("metrics_log", name + ".jsonl", data)
    for d in sorted(os.listdir(HF)):
        folder = os.path.join(HF, d)
        if not os.path.isdir(folder):
            continue
        put("model_config", d + ".json", open(os.path.join(folder, "config.json")).read())
        shards = sorted(f for f in os.listdir(folder) if f.startswith("model") and f.endswith(".safetensors"))
        put("safetensors", d + ".safetensors", small_safetensors(os.path.join(folder, shards[0])))
    for m in ("full", "moba", "ssa"):
        folder = os.path.join(ROOT, "assets", "models", m)
        put("model_config", "shipped_" + m + ".json", open(os.path.join(folder, "config.json")).read())
        put("trainer_state", "shipped_" + m + ".json", open(os.path.join(folder, "trainer_state.json")).read())
    sharded = os.path.join(HF, "qwen2_sharded")
    put("checkpoint_folder", "qwen2_sharded",
        provider_string(open(os.path.join(sharded, "config.json")).read())
        + open(os.path.join(sharded, "model.safetensors.index.json")).read())
    text = "Hello world, 1234 <s> ok\n\tcafé 日本"
    for name in ("gpt2", "llama2", "llama3", "qwen3"):
        tok = json.load(gzip.open(os.path.join(TOK, name, "tokenizer.json.gz"), "rt", encoding="utf-8"))
        config = open(os.path.join(TOK, name, "tokenizer_config.json")).read()
        put("tokenizer", name, provider_string(config) + provider_string(text) + small_tokenizer(tok))
        put("tokenizer", name + "_no_config", provider_string("") + provider_string(text) + small_tokenizer(tok))


if __name__ == "__main__":
    main()
