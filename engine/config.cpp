#include "engine/config.h"

#include <cmath>

#include "engine/util/error.h"

namespace ssalab {

int64_t ModelConfig::num_parameters() const {
  int64_t h = hidden_size, hd = head_dim;
  int64_t attn = h * num_heads * hd           // q_proj
                 + 2 * h * num_kv_heads * hd  // k_proj, v_proj
                 + num_heads * hd * h         // o_proj
                 + h * num_heads * 3;         // g_proj
  int64_t mlp = 3 * h * intermediate_size;
  int64_t norms = 2 * h;
  return int64_t(vocab_size) * h + num_layers * (attn + mlp + norms) + h;
}

static void require(bool ok, const std::string& msg) {
  if (!ok) throw Error("invalid model config: " + msg);
}

void ModelConfig::validate() const {
  require(vocab_size >= 2, "vocab_size must be >= 2");
  require(hidden_size > 0 && intermediate_size > 0 && num_layers > 0, "sizes must be positive");
  require(num_heads > 0 && num_kv_heads > 0, "num_heads and num_kv_heads must be positive");
  require(num_heads % num_kv_heads == 0, "num_heads (" + std::to_string(num_heads) +
                                             ") must be a multiple of num_kv_heads (" +
                                             std::to_string(num_kv_heads) + ")");
  require(head_dim > 0 && head_dim % 2 == 0, "head_dim must be positive and even (RoPE)");
  require(max_position > 0, "max_position must be positive");
  require(rope_theta > 0 && rope_scaling >= 1.0, "rope_theta > 0 and rope_scaling >= 1 required");
  require(norm_eps > 0, "norm_eps must be positive");
  require(block_size >= 1, "block_size must be >= 1");
  require(block_counts >= 1, "block_counts (top-k) must be >= 1");
}

ModelConfig model_preset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") {  // ~0.9M parameters: minutes on 2 CPU cores
    c.vocab_size = 2048; c.hidden_size = 128; c.intermediate_size = 384;
    c.num_layers = 4; c.num_heads = 4; c.num_kv_heads = 1; c.head_dim = 32;
    c.max_position = 256; c.block_size = 16; c.block_counts = 4;
  } else if (name == "small") {  // ~25M parameters
    c.vocab_size = 8192; c.hidden_size = 512; c.intermediate_size = 1536;
    c.num_layers = 8; c.num_heads = 8; c.num_kv_heads = 1; c.head_dim = 64;
    c.max_position = 8192; c.block_size = 16; c.block_counts = 16;
  } else if (name == "base") {  // ~120M parameters
    c.vocab_size = 16384; c.hidden_size = 768; c.intermediate_size = 2560;
    c.num_layers = 12; c.num_heads = 16; c.num_kv_heads = 2; c.head_dim = 64;
    c.max_position = 8192; c.block_size = 16; c.block_counts = 16;
  } else {
    throw Error("unknown model preset '" + name + "' (known: tiny, small, base)");
  }
  return c;
}

nlohmann::json to_json(const ModelConfig& c) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.norm_eps},
      {"tie_word_embeddings", true},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"hidden_act", "silu"},
      {"block_size", c.block_size},
      {"block_counts", c.block_counts},
      {"window_size", c.window_size},
  };
  if (c.rope_scaling != 1.0) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings",
                          c.rope_original_max_position ? c.rope_original_max_position : c.max_position}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j;
}

template <class T>
static void read_key(const nlohmann::json& j, const char* key, T& out, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) throw Error(std::string("config.json: missing key '") + key + "'");
    return;
  }
  try {
    out = j[key].get<T>();
  } catch (const std::exception&) {
    throw Error(std::string("config.json: key '") + key + "' has the wrong type");
  }
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("config.json: not a JSON object");
  ModelConfig c;
  read_key(j, "vocab_size", c.vocab_size, true);
  read_key(j, "hidden_size", c.hidden_size, true);
  read_key(j, "intermediate_size", c.intermediate_size, true);
  read_key(j, "num_hidden_layers", c.num_layers, true);
  read_key(j, "num_attention_heads", c.num_heads, true);
  c.num_kv_heads = c.num_heads;
  read_key(j, "num_key_value_heads", c.num_kv_heads, false);
  c.head_dim = c.num_heads ? c.hidden_size / c.num_heads : 0;
  read_key(j, "head_dim", c.head_dim, false);
  read_key(j, "max_position_embeddings", c.max_position, false);
  read_key(j, "rope_theta", c.rope_theta, false);
  read_key(j, "rms_norm_eps", c.norm_eps, false);
  read_key(j, "block_size", c.block_size, false);
  read_key(j, "block_counts", c.block_counts, false);
  read_key(j, "window_size", c.window_size, false);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    read_key(j["rope_scaling"], "factor", c.rope_scaling, true);
    read_key(j["rope_scaling"], "original_max_position_embeddings", c.rope_original_max_position, false);
  }
  c.validate();
  return c;
}

const char* to_string(AttnMode m) { return m == AttnMode::Full ? "full" : "sparse"; }
const char* to_string(Method m) {
  switch (m) {
    case Method::Full: return "full";
    case Method::Moba: return "moba";
    default: return "ssa";
  }
}
AttnMode attn_mode_from_string(const std::string& s) {
  if (s == "full") return AttnMode::Full;
  if (s == "sparse") return AttnMode::Sparse;
  throw Error("unknown attention mode '" + s + "' (full | sparse)");
}
Method method_from_string(const std::string& s) {
  if (s == "full") return Method::Full;
  if (s == "moba") return Method::Moba;
  if (s == "ssa") return Method::Ssa;
  throw Error("unknown training method '" + s + "' (full | moba | ssa)");
}

nlohmann::json to_json(const TrainConfig& c) {
  return {{"method", to_string(c.method)}, {"p_full", c.p_full},       {"alpha", c.alpha},
          {"batch_size", c.batch_size},    {"seq_len", c.seq_len},     {"grad_accum", c.grad_accum},
          {"steps", c.steps},              {"lr", c.lr},               {"min_lr_ratio", c.min_lr_ratio},
          {"warmup_frac", c.warmup_frac},  {"weight_decay", c.weight_decay},
          {"beta1", c.beta1},              {"beta2", c.beta2},         {"grad_clip", c.grad_clip},
          {"seed", c.seed},                {"eval_every", c.eval_every}, {"eval_batches", c.eval_batches},
          {"save_every", c.save_every},    {"log_every", c.log_every}, {"threads", c.threads},
          {"device", c.device},            {"bf16", c.bf16}};
}

TrainConfig train_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("train config: not a JSON object");
  TrainConfig c;
  if (j.contains("method")) c.method = method_from_string(j["method"].get<std::string>());
  read_key(j, "p_full", c.p_full, false);
  read_key(j, "alpha", c.alpha, false);
  read_key(j, "batch_size", c.batch_size, false);
  read_key(j, "seq_len", c.seq_len, false);
  read_key(j, "grad_accum", c.grad_accum, false);
  read_key(j, "steps", c.steps, false);
  read_key(j, "lr", c.lr, false);
  read_key(j, "min_lr_ratio", c.min_lr_ratio, false);
  read_key(j, "warmup_frac", c.warmup_frac, false);
  read_key(j, "weight_decay", c.weight_decay, false);
  read_key(j, "beta1", c.beta1, false);
  read_key(j, "beta2", c.beta2, false);
  read_key(j, "grad_clip", c.grad_clip, false);
  read_key(j, "seed", c.seed, false);
  read_key(j, "eval_every", c.eval_every, false);
  read_key(j, "eval_batches", c.eval_batches, false);
  read_key(j, "save_every", c.save_every, false);
  read_key(j, "log_every", c.log_every, false);
  read_key(j, "threads", c.threads, false);
  read_key(j, "device", c.device, false);
  read_key(j, "bf16", c.bf16, false);
  return c;
}

void validate(const TrainConfig& t, const ModelConfig& m) {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw Error("invalid training config: " + msg);
  };
  need(t.p_full >= 0 && t.p_full <= 1, "p_full must be in [0, 1]");
  need(t.alpha >= 0 && std::isfinite(t.alpha), "alpha must be finite and >= 0");
  need(t.batch_size >= 1 && t.grad_accum >= 1, "batch_size and grad_accum must be >= 1");
  need(t.seq_len >= 2, "seq_len must be >= 2");
  need(t.steps >= 1, "steps must be >= 1");
  need(t.lr > 0 && std::isfinite(t.lr), "lr must be positive");
  need(t.warmup_frac >= 0 && t.warmup_frac < 1, "warmup_frac must be in [0, 1)");
  need(t.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)");
  need(t.device == "auto" || t.device == "cpu" || t.device == "cuda", "device must be auto, cpu or cuda");
  if (t.method != Method::Full) {
    need(m.block_size <= t.seq_len, "block_size (" + std::to_string(m.block_size) +
                                        ") does not fit in seq_len (" + std::to_string(t.seq_len) + ")");
    int64_t nblocks = (t.seq_len + m.block_size - 1) / m.block_size;
    need(m.block_counts <= nblocks, "top-k (block_counts=" + std::to_string(m.block_counts) +
                                        ") is larger than the number of blocks (" + std::to_string(nblocks) +
                                        ") at seq_len " + std::to_string(t.seq_len));
  }
}

}  // namespace ssalab
