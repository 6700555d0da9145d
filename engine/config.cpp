#include "engine/config.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "engine/util/error.h"

namespace ssalab {

// ---------------------------------------------------------------- architectures

namespace {

// How a family reads its sliding-window keys (HF config classes).
enum class WindowKeys {
  None,       // Llama, llama-nsa: no sliding window
  Always,     // Mistral: "sliding_window" (null or int) applies to every layer
  WhenAsked,  // Qwen2/3: "use_sliding_window" switches "sliding_window" on for the
              // layers >= "max_window_layers" (or those "layer_types" marks)
};

// One row per family: everything the model builder and the config reader
// need to know about it. Read from HF's modeling_* / configuration_* files:
// Mistral is Llama plus a sliding window; Qwen2 adds q/k/v biases; Qwen3
// per-head q/k RMSNorm and an explicit head_dim; llama-nsa (the SSA paper's
// custom code) the g_proj gate and the sparse-attention keys.
struct ArchRow {
  Arch arch;
  const char* architecture;  // config.json "architectures"[0]
  const char* model_type;    // config.json "model_type"
  bool qkv_bias;             // fixed q/k/v biases (Qwen2)
  const char* bias_key;      // key that gives q/k/v/o biases ("attention_bias"), or none
  const char* mlp_bias_key;  // key that gives gate/up/down biases ("mlp_bias"), or none
  bool qk_norm;
  bool gate;
  WindowKeys window;
  int default_head_dim;      // when config.json has none; 0: hidden_size / num_heads
  int default_window_from;   // max_window_layers when absent
};

constexpr ArchRow kArchitectures[] = {
    {Arch::Llama, "LlamaForCausalLM", "llama", false, "attention_bias", "mlp_bias", false, false, WindowKeys::None, 0, 0},
    {Arch::LlamaNSA, "LlamaNSAForCausalLM", "llama-nsa", false, "attention_bias", "mlp_bias", false, true,
     WindowKeys::None, 0, 0},
    {Arch::Mistral, "MistralForCausalLM", "mistral", false, nullptr, nullptr, false, false, WindowKeys::Always, 0, 0},
    {Arch::Qwen2, "Qwen2ForCausalLM", "qwen2", true, nullptr, nullptr, false, false, WindowKeys::WhenAsked, 0, 28},
    {Arch::Qwen3, "Qwen3ForCausalLM", "qwen3", false, "attention_bias", nullptr, true, false, WindowKeys::WhenAsked, 128,
     28},
};

const ArchRow& row(Arch a) {
  for (const ArchRow& r : kArchitectures)
    if (r.arch == a) return r;
  throw Error("internal: architecture without a table row");
}

}  // namespace

const char* architecture_name(Arch a) { return row(a).architecture; }
const char* model_type_name(Arch a) { return row(a).model_type; }

std::string supported_architectures() {
  std::string s;
  for (const ArchRow& r : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(r.architecture);
  return s;
}

const char* to_string(RopeType r) {
  switch (r) {
    case RopeType::Linear: return "linear";
    case RopeType::Llama3: return "llama3";
    default: return "default";
  }
}

// ---------------------------------------------------------------- ModelConfig

int64_t ModelConfig::num_parameters() const {
  int64_t h = hidden_size, hd = head_dim, q = int64_t(num_heads) * hd, kv = int64_t(num_kv_heads) * hd;
  int64_t attn = h * q + 2 * h * kv + q * h       // q_proj, k_proj, v_proj, o_proj
                 + (qkv_bias ? q + 2 * kv : 0)    // their biases
                 + (o_bias ? h : 0)
                 + (gate ? h * num_heads * 3 : 0) // g_proj
                 + (qk_norm ? 2 * hd : 0);        // q_norm, k_norm
  int64_t mlp = 3 * h * intermediate_size + (mlp_bias ? 2 * int64_t(intermediate_size) + h : 0);
  int64_t norms = 2 * h;
  int64_t head = tied_embeddings ? 0 : int64_t(vocab_size) * h;
  return int64_t(vocab_size) * h + num_layers * (attn + mlp + norms) + h + head;
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
  require(rope_type != RopeType::Llama3 || rope_high_freq_factor > rope_low_freq_factor,
          "llama3 RoPE needs high_freq_factor > low_freq_factor");
  require(norm_eps > 0, "norm_eps must be positive");
  require(sliding_window >= 0 && sliding_window_from >= 0, "sliding_window must be >= 0");
  require(block_size >= 1, "block_size must be >= 1");
  require(block_counts >= 1, "block_counts (top-k) must be >= 1");
  require(window_size >= 0, "window_size must be >= 0");
  require(inference_mode == "sparse" || inference_mode == "full", "inference_mode must be \"sparse\" or \"full\"");
  require(selection_rule == "topk" || selection_rule == "nsa-chunked",
          "selection_rule must be \"topk\" or \"nsa-chunked\"");
  require(pooled_keys == "fp32" || pooled_keys == "bf16", "pooled_keys must be \"fp32\" or \"bf16\"");
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
  } else if (name == "1b") {  // ~1.0B: the released 1B models' shape, with a vocabulary a corpus can train
    c.vocab_size = 16384; c.hidden_size = 2048; c.intermediate_size = 8192;
    c.num_layers = 16; c.num_heads = 32; c.num_kv_heads = 2; c.head_dim = 64;
    c.max_position = 32768; c.block_size = 16; c.block_counts = 16;
  } else {
    throw Error("unknown model preset '" + name + "' (known: tiny, small, base, 1b)");
  }
  return c;
}

// ---------------------------------------------------------------- JSON

static nlohmann::json rope_scaling_json(const ModelConfig& c) {
  if (c.rope_scaling == 1.0 || c.rope_type == RopeType::Default) return nullptr;
  if (c.rope_type == RopeType::Linear) return {{"rope_type", "linear"}, {"factor", c.rope_scaling}};
  return {{"rope_type", "llama3"},
          {"factor", c.rope_scaling},
          {"low_freq_factor", c.rope_low_freq_factor},
          {"high_freq_factor", c.rope_high_freq_factor},
          {"original_max_position_embeddings",
           c.rope_original_max_position ? c.rope_original_max_position : c.max_position}};
}

nlohmann::json to_json(const ModelConfig& c) {
  const ArchRow& r = row(c.arch);
  nlohmann::json j = {
      {"architectures", {r.architecture}},
      {"model_type", r.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", rope_scaling_json(c)},
      {"rms_norm_eps", c.norm_eps},
      {"tie_word_embeddings", c.tied_embeddings},
      {"hidden_act", "silu"},
      // ssalab's sparse-inference settings; the released llama-nsa keys
      {"block_size", c.block_size},
      {"block_counts", c.block_counts},
  };
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (r.bias_key) j[r.bias_key] = c.qkv_bias;
  if (r.mlp_bias_key) j[r.mlp_bias_key] = c.mlp_bias;
  if (c.arch == Arch::LlamaNSA) {
    j["window_size"] = c.window_size;
    j["inference_mode"] = c.inference_mode;
    j["selection_rule"] = c.selection_rule;  // ours say "topk"; the released files say nothing
    j["pooled_keys"] = c.pooled_keys;        // ours say "fp32"
  }
  if (r.window == WindowKeys::Always)
    j["sliding_window"] = c.sliding_window ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
  if (r.window == WindowKeys::WhenAsked) {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
    j["max_window_layers"] = c.sliding_window ? c.sliding_window_from : r.default_window_from;
  }
  return j;
}

template <class T>
static bool read_key(const nlohmann::json& j, const char* key, T& out, bool required, const char* where = "") {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) throw Error(std::string("config.json: missing key '") + where + key + "'");
    return false;
  }
  const nlohmann::json& v = j[key];
  auto wrong = [&](const char* why) {
    return Error(std::string("config.json: key '") + where + key + "' " + why);
  };
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // json's get<int>() casts whatever number it holds (UB for 1e50, found by
    // fuzzing): only whole numbers in T's range, written as integers or as
    // floats with no fraction
    if (!v.is_number()) throw wrong("has the wrong type (expected an integer)");
    long double x = v.is_number_unsigned()  ? (long double)v.get<uint64_t>()
                    : v.is_number_integer() ? (long double)v.get<int64_t>()
                                            : (long double)v.get<double>();
    if (x != std::floor(x)) throw wrong("is not a whole number");
    if (x < (long double)std::numeric_limits<T>::min() || x > (long double)std::numeric_limits<T>::max())
      throw wrong("is out of range");
    out = T(x);
    return true;
  }
  try {
    out = v.get<T>();
  } catch (const std::exception&) {
    throw wrong("has the wrong type");
  }
  return true;
}

static const ArchRow& find_architecture(const nlohmann::json& j) {
  std::string name, type;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    name = j["architectures"][0].get<std::string>();
  if (j.contains("model_type") && j["model_type"].is_string()) type = j["model_type"].get<std::string>();
  for (const ArchRow& r : kArchitectures)
    if (!name.empty() ? name == r.architecture : type == r.model_type) return r;
  if (name.empty() && type.empty())  // our earliest files said nothing: the gated Llama
    return row(Arch::Llama);
  throw Error("config.json: architecture '" + (name.empty() ? "model_type " + type : name) +
              "' is not supported (supported: " + supported_architectures() + ")");
}

// rope_theta and the scaling, from transformers 4.x ("rope_theta",
// "rope_scaling") or 5.x ("rope_parameters" holding both) keys.
static void read_rope(const nlohmann::json& j, ModelConfig& c) {
  c.rope_theta = 10000.0;  // HF's default for every family here
  c.rope_scaling = 1.0;
  c.rope_type = RopeType::Default;
  nlohmann::json scaling;
  const char* where = "rope_scaling.";
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    scaling = j["rope_parameters"];
    where = "rope_parameters.";
    if (!scaling.contains("rope_type") && !scaling.contains("type") && !scaling.contains("rope_theta"))
      throw Error("config.json: rope_parameters per layer type is not supported (one RoPE for all layers only)");
    read_key(scaling, "rope_theta", c.rope_theta, false, where);
  } else {
    read_key(j, "rope_theta", c.rope_theta, false);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
      if (!j["rope_scaling"].is_object()) throw Error("config.json: key 'rope_scaling' must be an object or null");
      scaling = j["rope_scaling"];
    }
  }
  if (scaling.is_null()) return;
  std::string type = "default";
  if (!read_key(scaling, "rope_type", type, false, where)) read_key(scaling, "type", type, false, where);
  if (type == "default") return;
  if (type == "linear") {
    c.rope_type = RopeType::Linear;
    read_key(scaling, "factor", c.rope_scaling, true, where);
  } else if (type == "llama3") {
    c.rope_type = RopeType::Llama3;
    read_key(scaling, "factor", c.rope_scaling, true, where);
    read_key(scaling, "low_freq_factor", c.rope_low_freq_factor, false, where);
    read_key(scaling, "high_freq_factor", c.rope_high_freq_factor, false, where);
    read_key(scaling, "original_max_position_embeddings", c.rope_original_max_position, false, where);
  } else {
    throw Error("config.json: RoPE type '" + type + "' is not supported (supported: default, linear, llama3)");
  }
}

static void read_sliding_window(const nlohmann::json& j, const ArchRow& r, ModelConfig& c) {
  c.sliding_window = 0;
  c.sliding_window_from = 0;
  if (r.window == WindowKeys::None) return;
  bool used = r.window == WindowKeys::Always;
  if (r.window == WindowKeys::WhenAsked) read_key(j, "use_sliding_window", used, false);
  int window = 0;
  read_key(j, "sliding_window", window, false);
  if (!used || window <= 0) return;
  int from = r.window == WindowKeys::WhenAsked ? r.default_window_from : 0;
  if (r.window == WindowKeys::WhenAsked) read_key(j, "max_window_layers", from, false);
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    from = INT32_MAX;
    for (size_t i = 0; i < j["layer_types"].size(); ++i)
      if (j["layer_types"][i] == "sliding_attention") {
        from = int(i);
        break;
      }
  }
  if (from >= c.num_layers) return;  // no layer uses it
  c.sliding_window = window;
  c.sliding_window_from = from;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("config.json: not a JSON object");
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    std::string method = "unknown";
    if (j["quantization_config"].is_object()) read_key(j["quantization_config"], "quant_method", method, false);
    throw Error("config.json: quantized models are not supported (quantization_config, quant_method '" + method +
                "'); ssalab loads unquantized BF16, F16 or F32 weights");
  }
  const ArchRow& r = find_architecture(j);
  ModelConfig c;
  c.arch = r.arch;
  read_key(j, "vocab_size", c.vocab_size, true);
  read_key(j, "hidden_size", c.hidden_size, true);
  read_key(j, "intermediate_size", c.intermediate_size, true);
  read_key(j, "num_hidden_layers", c.num_layers, true);
  read_key(j, "num_attention_heads", c.num_heads, true);
  c.num_kv_heads = c.num_heads;
  read_key(j, "num_key_value_heads", c.num_kv_heads, false);
  c.head_dim = r.default_head_dim ? r.default_head_dim : (c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  read_key(j, "head_dim", c.head_dim, false);
  read_key(j, "max_position_embeddings", c.max_position, false);
  c.norm_eps = 1e-6;  // HF's default for every family here
  read_key(j, "rms_norm_eps", c.norm_eps, false);
  read_rope(j, c);
  double partial = 1.0;
  read_key(j, "partial_rotary_factor", partial, false);
  if (partial != 1.0) throw Error("config.json: partial_rotary_factor " + std::to_string(partial) + " is not supported");
  std::string act = "silu";
  read_key(j, "hidden_act", act, false);
  if (act != "silu")
    throw Error("config.json: hidden_act '" + act + "' is not supported (the families here use silu)");

  c.qkv_bias = r.qkv_bias;
  c.o_bias = false;
  if (r.bias_key && read_key(j, r.bias_key, c.o_bias, false)) c.qkv_bias = c.o_bias;
  c.mlp_bias = false;
  if (r.mlp_bias_key) read_key(j, r.mlp_bias_key, c.mlp_bias, false);
  c.qk_norm = r.qk_norm;
  c.gate = r.gate;
  c.tied_embeddings = false;  // HF's default for every family here
  read_key(j, "tie_word_embeddings", c.tied_embeddings, false);
  read_sliding_window(j, r, c);

  c.block_counts = 16;  // the paper's k when a file does not say
  read_key(j, "block_size", c.block_size, false);
  read_key(j, "block_counts", c.block_counts, false);
  read_key(j, "window_size", c.window_size, false);
  read_key(j, "inference_mode", c.inference_mode, false);
  // a llama-nsa file naming no selection_rule is a released checkpoint: the
  // released kernel's rule and pooling; ssalab's own files name both
  const bool released_nsa = c.arch == Arch::LlamaNSA && !j.contains("selection_rule");
  c.selection_rule = released_nsa ? "nsa-chunked" : "topk";
  read_key(j, "selection_rule", c.selection_rule, false);
  c.pooled_keys = released_nsa ? "bf16" : "fp32";
  read_key(j, "pooled_keys", c.pooled_keys, false);
  c.eos_token_ids = eos_token_ids_from_json(j, "config.json");
  c.validate();
  return c;
}

std::vector<int> eos_token_ids_from_json(const nlohmann::json& j, const std::string& file) {
  std::vector<int> ids;
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return ids;
  const nlohmann::json& v = j["eos_token_id"];
  auto one = [&](const nlohmann::json& x) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
      throw Error(file + ": eos_token_id must be a token id or a list of them, got " + x.dump());
    ids.push_back(x.get<int>());
  };
  if (v.is_array()) {
    for (const auto& x : v) one(x);
  } else {
    one(v);
  }
  return ids;
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
          {"device", c.device},            {"bf16", c.bf16},           {"shard_optimizer", c.shard_optimizer}};
}

TrainConfig train_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("train config: not a JSON object");
  TrainConfig c;
  std::string method;
  if (read_key(j, "method", method, false)) c.method = method_from_string(method);
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
  read_key(j, "shard_optimizer", c.shard_optimizer, false);
  return c;
}

}  // namespace ssalab
