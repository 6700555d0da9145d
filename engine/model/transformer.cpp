#include "engine/model/transformer.h"

#include <cmath>
#include <sstream>
#include <tuple>

#include "engine/attention/nsa_branches.h"
#include "engine/generate/kv_cache.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

// ---------------------------------------------------------------- RoPE

Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / c.head_dim);
  if (c.rope_scaling > 1.0 && c.rope_type == RopeType::Linear) {
    for (auto& freq : f) freq /= c.rope_scaling;  // positions divided by the factor
  } else if (c.rope_scaling > 1.0 && c.rope_type == RopeType::Llama3) {
    // llama3 scaling: long wavelengths are slowed by `factor`, short ones kept,
    // and a smooth ramp in between (low/high frequency factors, HF's 1 and 4).
    const double old_ctx = c.rope_original_max_position ? c.rope_original_max_position : c.max_position;
    const double low_factor = c.rope_low_freq_factor, high_factor = c.rope_high_freq_factor;
    const double low_wavelen = old_ctx / low_factor, high_wavelen = old_ctx / high_factor;
    for (auto& freq : f) {
      double wavelen = 2 * M_PI / freq;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        freq /= c.rope_scaling;
      } else {
        double smooth = (old_ctx / wavelen - low_factor) / (high_factor - low_factor);
        freq = (1 - smooth) * freq / c.rope_scaling + smooth * freq;
      }
    }
  }
  return torch::tensor(f, torch::kDouble).to(torch::kFloat);
}

RopeTables rope_tables(const ModelConfig& c, const Tensor& positions, torch::ScalarType dtype) {
  if (positions.dim() != 1) throw Error("rope_tables: positions must be one-dimensional (T)");
  const int64_t T = positions.size(0);
  Tensor inv = rope_inv_freq(c).to(positions.device());
  Tensor ang = torch::outer(positions.to(torch::kFloat), inv);
  Tensor emb = torch::cat({ang, ang}, -1).view({1, 1, T, c.head_dim});
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

RopeTables rope_tables(const ModelConfig& c, int64_t start, int64_t T, torch::Device device, torch::ScalarType dtype) {
  if (start < 0) throw Error("rope_tables: negative start position " + std::to_string(start));
  // fp32 holds every integer position exactly up to 2^24
  if (start + T > (int64_t(1) << 24)) throw Error("rope_tables: positions beyond 2^24 are not exact in fp32");
  auto opts = torch::TensorOptions().dtype(torch::kFloat).device(device);
  return rope_tables(c, start == 0 ? torch::arange(T, opts) : torch::arange(start, start + T, opts), dtype);
}

Tensor apply_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  Tensor rotated = torch::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

// ---------------------------------------------------------------- the tensors of a family

namespace {

std::string layer_prefix(int i) { return "model.layers." + std::to_string(i) + "."; }

// The tensors of layer i in parameter order (the modules below register
// them in this order).
void layer_tensors(const ModelConfig& c, int i, std::vector<TensorSpec>& out) {
  const int64_t C = c.hidden_size, D = c.head_dim, Q = int64_t(c.num_heads) * D, KV = int64_t(c.num_kv_heads) * D,
                F = c.intermediate_size;
  const std::string a = layer_prefix(i) + "self_attn.", m = layer_prefix(i) + "mlp.";
  auto linear = [&](const std::string& name, int64_t in, int64_t o, bool bias) {
    out.push_back({name + ".weight", {o, in}});
    if (bias) out.push_back({name + ".bias", {o}});
  };
  linear(a + "q_proj", C, Q, c.qkv_bias);
  linear(a + "k_proj", C, KV, c.qkv_bias);
  linear(a + "v_proj", C, KV, c.qkv_bias);
  linear(a + "o_proj", Q, C, c.o_bias);
  if (c.gate) linear(a + "g_proj", C, int64_t(c.num_heads) * 3, false);
  if (c.qk_norm) {
    out.push_back({a + "q_norm.weight", {D}});
    out.push_back({a + "k_norm.weight", {D}});
  }
  linear(m + "gate_proj", C, F, c.mlp_bias);
  linear(m + "up_proj", C, F, c.mlp_bias);
  linear(m + "down_proj", F, C, c.mlp_bias);
  out.push_back({layer_prefix(i) + "input_layernorm.weight", {C}});
  out.push_back({layer_prefix(i) + "post_attention_layernorm.weight", {C}});
}

// torch::empty of the asked shape: a fresh model, filled by init_weights().
Tensor empty_param(const std::string&, const std::vector<int64_t>& shape) { return torch::empty(shape); }

}  // namespace

std::vector<TensorSpec> model_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  out.reserve(size_t(model_tensor_count(c)));
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  for (int i = 0; i < c.num_layers; ++i) layer_tensors(c, i, out);
  out.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tied_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return out;
}

int64_t model_tensor_count(const ModelConfig& c) {
  int64_t per_layer = 4 + (c.qkv_bias ? 3 : 0) + (c.o_bias ? 1 : 0) + (c.gate ? 1 : 0) + (c.qk_norm ? 2 : 0) +
                      3 + (c.mlp_bias ? 3 : 0) + 2;
  return 2 + (c.tied_embeddings ? 0 : 1) + int64_t(c.num_layers) * per_layer;
}

std::string model_support_problem(const ModelConfig& c) {
  if (c.arch == Arch::LlamaNSA && c.window_size > 0 && !c.gate)
    return "this is an NSA model (window_size " + std::to_string(c.window_size) +
           "), whose compression and sliding-window branches are weighted by g_proj's g_cmp and g_swa rows, "
           "but the config has no g_proj gate";
  if (c.gate && c.arch != Arch::LlamaNSA && c.arch != Arch::Llama)
    return std::string("the g_proj gate is a llama-nsa feature, not ") + architecture_name(c.arch) + "'s";
  return "";
}

// ---------------------------------------------------------------- modules

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias, const std::string& name, const ParamSource& src) {
  weight = register_parameter("weight", src(name + ".weight", {out, in}));
  if (with_bias) bias = register_parameter("bias", src(name + ".bias", {out}));
}

// the same call torch::nn::Linear makes
Tensor LinearImpl::forward(const Tensor& x) { return torch::nn::functional::linear(x, weight, bias); }

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim, const std::string& name, const ParamSource& src) {
  weight = register_parameter("weight", src(name + ".weight", {vocab, dim}));
}

Tensor EmbeddingImpl::forward(const Tensor& tokens) { return torch::embedding(weight, tokens); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const std::string& name, const ParamSource& src) : eps(eps_) {
  weight = register_parameter("weight", src(name + ".weight", {dim}));
}

Tensor RMSNormImpl::forward(const Tensor& x) {
  Tensor xf = x.to(torch::kFloat);
  Tensor y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return y.to(x.scalar_type()) * weight;
}

AttentionImpl::AttentionImpl(const ModelConfig& c, int layer_index, const std::string& p, const ParamSource& src)
    : layer(layer_index), num_heads(c.num_heads), num_kv_heads(c.num_kv_heads), head_dim(c.head_dim) {
  const int64_t C = c.hidden_size, Q = int64_t(c.num_heads) * c.head_dim, KV = int64_t(c.num_kv_heads) * c.head_dim;
  q_proj = register_module("q_proj", Linear(C, Q, c.qkv_bias, p + "q_proj", src));
  k_proj = register_module("k_proj", Linear(C, KV, c.qkv_bias, p + "k_proj", src));
  v_proj = register_module("v_proj", Linear(C, KV, c.qkv_bias, p + "v_proj", src));
  o_proj = register_module("o_proj", Linear(Q, C, c.o_bias, p + "o_proj", src));
  if (c.gate) g_proj = register_module("g_proj", Linear(C, int64_t(c.num_heads) * 3, false, p + "g_proj", src));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(c.head_dim, c.norm_eps, p + "q_norm", src));
    k_norm = register_module("k_norm", RMSNorm(c.head_dim, c.norm_eps, p + "k_norm", src));
  }
  if (c.arch == Arch::LlamaNSA && c.window_size > 0) {  // model_support_problem made sure of the gate
    nsa_block_size = c.block_size;
    nsa_window = c.window_size;
  }
}

Tensor AttentionImpl::forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const ForwardOptions& opt,
                              std::vector<Tensor>& alignment, ForwardOutput& out) {
  const int64_t B = x.size(0), T = x.size(1);
  Tensor v = v_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);
  Tensor q = q_proj(x).view({B, T, num_heads, head_dim});
  Tensor k = k_proj(x).view({B, T, num_kv_heads, head_dim});
  if (q_norm) {  // Qwen3: RMSNorm over each head's vector, before RoPE
    q = q_norm(q);
    k = k_norm(k);
  }
  // under autocast the projections are bf16 while the RoPE tables are fp32:
  // bring q and k back to v's dtype so all three reach the kernels alike
  q = apply_rope(q.transpose(1, 2), cos, sin).to(v.scalar_type());
  k = apply_rope(k.transpose(1, 2), cos, sin).to(v.scalar_type());
  // the three per-head gates (g_cmp, g_slc, g_swa), (B,T,H,3); g_slc gates the selection stream
  Tensor gates, gate;
  if (g_proj) {
    gates = torch::sigmoid(g_proj(x).view({B, T, num_heads, 3}));
    gate = gates.select(-1, 1).unsqueeze(-1);  // (B,T,H,1)
  }
  // with a cache the new queries (positions q_offset..) read every cached key
  const int64_t q_offset = opt.cache ? opt.cache->length() : 0;
  if (opt.cache) std::tie(k, v) = opt.cache->append(layer, k, v);
  if (opt.capture) {
    out.q.push_back(q.detach());
    out.k.push_back(k.detach());
  }
  AttentionBackend& backend = pick_backend(q, k, opt.spec, q_offset);
  auto gated = [&](const Tensor& o) {  // (B,H,T,D) -> (B,T,H,D)
    return gate.defined() ? o.transpose(1, 2) * gate : o.transpose(1, 2);
  };
  auto select = [&] {
    // the cache pools each block once, as it completes
    if (opt.cache && opt.cache->block_size() == opt.spec.block_size &&
        opt.cache->pooled_dtype() == pooled_keys_dtype(opt.spec.pooled_keys) && &backend == &reference_backend())
      return select_blocks_pooled(q, opt.cache->block_keys(layer), k.size(2), opt.spec, q_offset);
    return backend.select(q, k, opt.spec, q_offset);
  };
  Tensor h;
  if (opt.dual) {
    auto both = backend.select_and_dual(q, k, v, opt.spec);
    Tensor h_full = gated(both.first), h_sparse = gated(both.second);
    alignment.push_back(alignment_loss(h_full, h_sparse));
    h = opt.mode == AttnMode::Full ? h_full : h_sparse;
  } else if (opt.mode == AttnMode::Sparse && opt.cache && q.size(2) == 1 &&
             opt.cache->block_size() == opt.spec.block_size) {
    // a decoding step: the backend's decode path (the CUDA decode kernel)
    h = gated(backend.decode(q, k, v, opt.cache->block_keys(layer), opt.spec));
  } else if (opt.mode == AttnMode::Sparse) {
    h = gated(backend.sparse(q, k, v, select()));
  } else {
    h = gated(backend.full(q, k, v, q_offset));
  }
  if (nsa_window > 0) {
    // NSA: g_slc * selection (above; full causal attention under full inference)
    //      + g_cmp * compression + g_swa * sliding window, in fla's order of addition.
    // The SSA alignment losses (dual) stay on the selection streams.
    Tensor o_cmp = compressed_attention(q, k, v, nsa_block_size, q_offset).transpose(1, 2);  // (B,T,H,D)
    Tensor o_swa = window_attention(q, k, v, nsa_window, q_offset).transpose(1, 2);
    h = h + o_cmp * gates.select(-1, 0).unsqueeze(-1);
    h = h + o_swa * gates.select(-1, 2).unsqueeze(-1);
  }
  return o_proj(h.reshape({B, T, num_heads * head_dim}));
}

MLPImpl::MLPImpl(const ModelConfig& c, const std::string& p, const ParamSource& src) {
  const int64_t C = c.hidden_size, F = c.intermediate_size;
  gate_proj = register_module("gate_proj", Linear(C, F, c.mlp_bias, p + "gate_proj", src));
  up_proj = register_module("up_proj", Linear(C, F, c.mlp_bias, p + "up_proj", src));
  down_proj = register_module("down_proj", Linear(F, C, c.mlp_bias, p + "down_proj", src));
}

Tensor MLPImpl::forward(const Tensor& x) { return down_proj(torch::silu(gate_proj(x)) * up_proj(x)); }

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, int i, const ParamSource& src) {
  const std::string p = layer_prefix(i);
  self_attn = register_module("self_attn", Attention(c, i, p + "self_attn.", src));
  mlp = register_module("mlp", MLP(c, p + "mlp.", src));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.norm_eps, p + "input_layernorm", src));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", RMSNorm(c.hidden_size, c.norm_eps, p + "post_attention_layernorm", src));
}

// ---------------------------------------------------------------- the model

Transformer::Transformer(const ModelConfig& c) : config_(c) {
  build(empty_param);
  init_weights(0);
}

Transformer::Transformer(const ModelConfig& c, const ParamSource& src) : config_(c) { build(src); }

void Transformer::build(const ParamSource& src) {
  const ModelConfig& c = config_;
  c.validate();
  std::string problem = model_support_problem(c);
  if (!problem.empty()) throw Error(problem);
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, "model.embed_tokens", src));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c, i, src));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps, "model.norm", src));
  if (!c.tied_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false, "lm_head", src));
}

void Transformer::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * config_.num_layers);
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    Tensor w = p.value();
    if (name.find("norm") != std::string::npos) {
      w.fill_(1.0);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      w.zero_();
    } else {
      bool residual_out = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
      Tensor init = at::normal(0.0, residual_out ? out_std : std, w.sizes(), gen);
      w.copy_(init);
    }
  }
}

ForwardOutput Transformer::forward(const Tensor& tokens, const ForwardOptions& opt) {
  const int64_t T = tokens.size(1);
  if (T < 1) throw Error("forward: empty input");
  if (opt.cache) {
    if (opt.dual) throw Error("forward: SSA's dual streams are for training, not for decoding with a KV cache");
    if (opt.position_offset != 0) throw Error("forward: with a KV cache the positions follow the cache");
    opt.cache->truncate(opt.cache->length());  // drops what a failed step left appended
  }
  // the keys this call attends over: the cached ones and its own
  const int64_t Tk = (opt.cache ? opt.cache->length() : 0) + T;
  if (opt.mode == AttnMode::Sparse || opt.dual) {
    std::string problem = check_sparse_spec(opt.spec, Tk);
    if (!problem.empty()) throw Error("sparse attention: " + problem);
  }
  if (config_.sliding_window > 0 && Tk > config_.sliding_window)
    throw Error(std::string(architecture_name(config_.arch)) + " with a sliding window of " +
                std::to_string(config_.sliding_window) + " tokens runs in ssalab only on sequences the window covers (" +
                std::to_string(Tk) + " tokens given); windowed attention is not implemented");
  ForwardOutput out;
  Tensor x = embed_tokens(tokens);
  // RoPE tables (1, 1, T, D), computed per call: a few KB, and it keeps the
  // module free of per-length caches shared across threads.
  const int64_t start = opt.cache ? opt.cache->length() : opt.position_offset;
  RopeTables rope = rope_tables(config_, start, T, x.device(), x.scalar_type());
  std::vector<Tensor> alignment;
  for (size_t i = 0; i < layers->size(); ++i) {
    auto layer = layers->ptr<DecoderLayerImpl>(i);
    x = x + layer->self_attn->forward(layer->input_layernorm(x), rope.cos, rope.sin, opt, alignment, out);
    x = x + layer->mlp(layer->post_attention_layernorm(x));
  }
  if (opt.cache) opt.cache->commit();
  if (opt.last_logits_only) x = x.narrow(1, T - 1, 1);
  x = norm(x);
  if (opt.hidden_only) out.hidden = x;
  else out.logits = logits(x);
  if (opt.dual) out.alignment_loss = torch::stack(alignment).mean();
  return out;
}

Tensor Transformer::logits(const Tensor& hidden) {
  return lm_head ? lm_head(hidden) : torch::matmul(hidden, embed_tokens->weight.t());
}

static std::string hf_name(const std::string& key) {
  return key.rfind("lm_head.", 0) == 0 ? key : "model." + key;
}

std::vector<std::pair<std::string, Tensor>> Transformer::hf_tensors() {
  std::vector<std::pair<std::string, Tensor>> v;
  for (auto& p : named_parameters()) v.emplace_back(hf_name(p.key()), p.value());
  return v;
}

void Transformer::load_hf_tensors(const std::map<std::string, Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::set<std::string> mine;
  for (auto& [name, param] : hf_tensors()) {
    mine.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) throw Error("checkpoint is missing tensor " + name);
    if (it->second.sizes() != param.sizes()) {
      std::ostringstream msg;
      msg << "tensor " << name << " has shape " << it->second.sizes() << " but the config needs " << param.sizes();
      throw Error(msg.str());
    }
    param.copy_(it->second.to(param.scalar_type()));
  }
  for (auto& kv : tensors) {
    if (kv.first == "lm_head.weight" && config_.tied_embeddings) continue;  // tied: some writers store it anyway
    if (!mine.count(kv.first)) throw Error("checkpoint has a tensor the model does not: " + kv.first);
  }
}

Tensor lm_loss(const Tensor& logits, const Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                              targets.reshape({-1}));
}

}  // namespace ssalab
