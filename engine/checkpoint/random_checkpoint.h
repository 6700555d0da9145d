// Random-weight model folders in the layout of the paper's released
// checkpoints (zen-E/SSA-1B and its siblings, /work/shared/SSA.md "The
// released code and checkpoints"): config.json with their keys
// (LlamaNSAForCausalLM, model_type "llama-nsa", block_size, block_counts,
// window_size, inference_mode, torch_dtype) and one model.safetensors with the
// HF Llama tensor names plus g_proj. Loading, memory and speed of a 1B model
// can then be measured without the 2.5 GB download (bench/bench_load.cpp).
// The numbers mean nothing as a language model: the weights are random.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "engine/config.h"

namespace ssalab {

// "1b": the released size (16 layers, hidden 2048, FFN 8192, 32 q / 2 kv
// heads, head_dim 64, vocab 128256, tied). "300m": the paper's smaller
// model (hidden 1024, FFN 4096, 16 q / 1 kv head; its layer count is not
// stated, 16 assumed). "tiny": the same keys at a few hundred KB, for tests.
// All: rope_theta 5e5, no rope scaling, rms eps 1e-5, block_size 16,
// block_counts 16, window_size 0, inference_mode "sparse", the released
// kernel's selection rule (nsa-chunked) and key pooling (bf16). Throws
// Error on another name.
ModelConfig released_layout_config(const std::string& preset);

// The config.json of a released checkpoint for `c`, stored as `dtype`
// (torch_dtype "bfloat16" | "float16" | "float32"). Like the released files it
// has no selection_rule or pooled_keys key (a loader then takes the kernel's
// rule and pooling) and the
// Llama 3 tokenizer's bos/eos ids when the vocabulary holds them. The
// released files' auto_map (their custom modelling code) is left out: we do
// not ship that code, and HF tooling must not load these as a plain Llama.
nlohmann::json released_config_json(const ModelConfig& c, torch::ScalarType dtype);

// Writes `dir` (config.json + model.safetensors, weights stored as `dtype`:
// bf16, fp16 or fp32) with random weights initialised as the engine's
// Transformer::init_weights does (N(0, 0.02), residual outputs scaled down,
// norms 1), so logits are finite and of order 1. The folder is staged beside
// `dir` and swapped in (commit_directory): a failed write leaves whatever
// was there. A `dir` holding anything but config.json and model.safetensors
// is refused, never replaced. Peak memory: about twice the file size.
// Returns the tensor bytes written.
uint64_t write_random_checkpoint(const std::string& dir, const ModelConfig& c, torch::ScalarType dtype,
                                 uint64_t seed = 0);

}  // namespace ssalab
