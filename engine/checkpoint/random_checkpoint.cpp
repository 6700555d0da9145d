#include "engine/checkpoint/random_checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "engine/checkpoint/safetensors.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

ModelConfig released_layout_config(const std::string& preset) {
  ModelConfig c;
  c.arch = Arch::LlamaNSA;
  c.gate = true;
  c.tied_embeddings = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = c.qk_norm = false;
  c.rope_theta = 500000.0;
  c.rope_scaling = 1.0;  // rope_scaling null
  c.norm_eps = 1e-5;
  c.block_size = 16;
  c.block_counts = 16;
  c.window_size = 0;
  c.inference_mode = "sparse";
  c.selection_rule = "nsa-chunked";  // what a released config.json (no selection_rule key) loads as
  c.pooled_keys = "bf16";             // likewise
  if (preset == "1b") {
    c.vocab_size = 128256; c.hidden_size = 2048; c.intermediate_size = 8192;
    c.num_layers = 16; c.num_heads = 32; c.num_kv_heads = 2; c.head_dim = 64;
    c.max_position = 8192;  // the paper's training context
  } else if (preset == "300m") {
    c.vocab_size = 128256; c.hidden_size = 1024; c.intermediate_size = 4096;
    c.num_layers = 16; c.num_heads = 16; c.num_kv_heads = 1; c.head_dim = 64;
    c.max_position = 8192;
  } else if (preset == "tiny") {
    c.vocab_size = 512; c.hidden_size = 64; c.intermediate_size = 128;
    c.num_layers = 2; c.num_heads = 4; c.num_kv_heads = 2; c.head_dim = 16;
    c.max_position = 2048;
  } else {
    throw Error("unknown released-layout preset '" + preset + "' (known: 1b, 300m, tiny)");
  }
  if (c.vocab_size > 128001) c.eos_token_ids = {128001};  // the Llama 3 tokenizer's end of text
  c.validate();
  return c;
}

static const char* torch_dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kFloat: return "float32";
    default: throw Error("random checkpoint: weights are stored as bf16, fp16 or fp32");
  }
}

nlohmann::json released_config_json(const ModelConfig& c, torch::ScalarType dtype) {
  nlohmann::json j = to_json(c);  // architectures, model_type, sizes, rope, block keys
  j.erase("selection_rule");      // the released files do not say
  j.erase("pooled_keys");
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype_name(dtype);
  if (c.vocab_size > 128001) {  // the Llama 3 tokenizer's ids (eos_token_id from c, by to_json)
    j["bos_token_id"] = 128000;
    if (!j.contains("eos_token_id")) j["eos_token_id"] = 128001;
  }
  return j;
}

// A folder we may replace: absent, empty, or one this function wrote.
static void check_replaceable(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec)) throw Error("cannot write a checkpoint to " + dir + ": it is a file");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name != "config.json" && name != "model.safetensors")
      throw Error("refusing to replace " + dir + ": it holds " + name +
                  " (only a folder holding nothing but config.json and model.safetensors is replaced)");
  }
  if (ec) throw Error("cannot read " + dir + ": " + ec.message());
}

uint64_t write_random_checkpoint(const std::string& dir, const ModelConfig& c, torch::ScalarType dtype,
                                 uint64_t seed) {
  const nlohmann::json config = released_config_json(c, dtype);  // checks the dtype
  std::string problem = model_support_problem(c);
  if (!problem.empty()) throw Error("random checkpoint: " + problem);
  check_replaceable(dir);

  // The same initialisation as Transformer::init_weights, one tensor at a
  // time, each converted to the stored dtype at once: the fp32 copy of one
  // tensor (at most the embedding) is the only transient.
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * c.num_layers);
  NamedTensors tensors;
  uint64_t bytes = 0;
  for (const TensorSpec& t : model_tensors(c)) {
    const std::string& name = t.name;
    torch::Tensor w;
    if (name.find("norm") != std::string::npos) {
      w = torch::ones(t.shape, torch::TensorOptions().dtype(dtype));
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      w = torch::zeros(t.shape, torch::TensorOptions().dtype(dtype));
    } else {
      const bool residual_out = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
      w = at::normal(0.0, residual_out ? out_std : std, t.shape, gen).to(dtype);
    }
    bytes += uint64_t(w.numel()) * w.element_size();
    tensors.emplace_back(name, w);
  }

  const std::string staged = dir + ".staging." + std::to_string(::getpid());
  remove_tree(staged);
  try {
    make_dirs(staged);
    save_safetensors(staged + "/model.safetensors", tensors, {{"format", "pt"}}, dtype);
    tensors.clear();
    write_file_atomic(staged + "/config.json", config.dump(2) + "\n");
    commit_directory(staged, dir);
  } catch (const std::exception& e) {
    remove_tree(staged);
    throw Error("writing random checkpoint " + dir + " failed: " + e.what());
  }
  return bytes;
}

}  // namespace ssalab
