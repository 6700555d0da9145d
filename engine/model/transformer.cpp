#include "engine/model/transformer.h"

#include <cmath>

#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / c.head_dim);
  if (c.rope_scaling > 1.0) {
    // llama3 scaling: long wavelengths are slowed by `factor`, short ones kept,
    // and a smooth ramp in between (low/high frequency factors 1 and 4).
    const double old_ctx = c.rope_original_max_position ? c.rope_original_max_position : c.max_position;
    const double low_factor = 1.0, high_factor = 4.0;
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

Tensor apply_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  Tensor rotated = torch::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

Tensor RMSNormImpl::forward(const Tensor& x) {
  Tensor xf = x.to(torch::kFloat);
  Tensor y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return y.to(x.scalar_type()) * weight;
}

static torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : num_heads(c.num_heads), num_kv_heads(c.num_kv_heads), head_dim(c.head_dim) {
  q_proj = register_module("q_proj", linear(c.hidden_size, c.num_heads * c.head_dim));
  k_proj = register_module("k_proj", linear(c.hidden_size, c.num_kv_heads * c.head_dim));
  v_proj = register_module("v_proj", linear(c.hidden_size, c.num_kv_heads * c.head_dim));
  o_proj = register_module("o_proj", linear(c.num_heads * c.head_dim, c.hidden_size));
  g_proj = register_module("g_proj", linear(c.hidden_size, c.num_heads * 3));
}

Tensor AttentionImpl::forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const ForwardOptions& opt,
                              std::vector<Tensor>& sparsity, std::vector<Tensor>& commitment, ForwardOutput& out) {
  const int64_t B = x.size(0), T = x.size(1);
  Tensor v = v_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);
  // under autocast the projections are bf16 while the RoPE tables are fp32:
  // bring q and k back to v's dtype so all three reach the kernels alike
  Tensor q = apply_rope(q_proj(x).view({B, T, num_heads, head_dim}).transpose(1, 2), cos, sin).to(v.scalar_type());
  Tensor k = apply_rope(k_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2), cos, sin).to(v.scalar_type());
  // g_slc: the second of the three per-head gates (g_cmp, g_slc, g_swa)
  Tensor gate = torch::sigmoid(g_proj(x).view({B, T, num_heads, 3})).select(-1, 1).unsqueeze(-1);  // (B,T,H,1)
  if (opt.capture) {
    out.q.push_back(q.detach());
    out.k.push_back(k.detach());
  }
  AttentionBackend& backend = pick_backend(q, k, opt.spec);
  auto gated = [&](const Tensor& o) { return o.transpose(1, 2) * gate; };  // (B,H,T,D) -> (B,T,H,D)
  Tensor h;
  if (opt.dual) {
    Selection sel = backend.select(q, k, opt.spec);
    auto both = backend.dual(q, k, v, sel);
    Tensor h_full = gated(both.first), h_sparse = gated(both.second);
    AlignmentLoss a = alignment_losses(h_full, h_sparse);
    sparsity.push_back(a.sparsity);
    commitment.push_back(a.commitment);
    h = opt.mode == AttnMode::Full ? h_full : h_sparse;
  } else if (opt.mode == AttnMode::Sparse) {
    h = gated(backend.sparse(q, k, v, backend.select(q, k, opt.spec)));
  } else {
    h = gated(backend.full(q, k, v));
  }
  return o_proj(h.reshape({B, T, num_heads * head_dim}));
}

MLPImpl::MLPImpl(const ModelConfig& c) {
  gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", linear(c.intermediate_size, c.hidden_size));
}

Tensor MLPImpl::forward(const Tensor& x) { return down_proj(torch::silu(gate_proj(x)) * up_proj(x)); }

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", MLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
}

Transformer::Transformer(const ModelConfig& c) : config_(c) {
  c.validate();
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps));
  init_weights(0);
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
  if (opt.mode == AttnMode::Sparse || opt.dual) {
    std::string problem = check_sparse_spec(opt.spec, T);
    if (!problem.empty()) throw Error("sparse attention: " + problem);
  }
  ForwardOutput out;
  Tensor x = embed_tokens(tokens);
  // RoPE tables (1, 1, T, D), computed per call: a few KB, and it keeps the
  // module free of per-length caches shared across threads.
  Tensor inv = rope_inv_freq(config_).to(x.device());
  Tensor pos = torch::arange(T, torch::TensorOptions().dtype(torch::kFloat).device(x.device()));
  Tensor ang = torch::outer(pos, inv);
  Tensor emb = torch::cat({ang, ang}, -1).view({1, 1, T, config_.head_dim});
  Tensor cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  std::vector<Tensor> sparsity, commitment;
  for (size_t i = 0; i < layers->size(); ++i) {
    auto layer = layers->ptr<DecoderLayerImpl>(i);
    x = x + layer->self_attn->forward(layer->input_layernorm(x), cos, sin, opt, sparsity, commitment, out);
    x = x + layer->mlp(layer->post_attention_layernorm(x));
  }
  x = norm(x);
  out.logits = torch::matmul(x, embed_tokens->weight.t());  // tied embeddings
  if (opt.dual) {
    out.sparsity_loss = torch::stack(sparsity).mean();
    out.commitment_loss = torch::stack(commitment).mean();
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Transformer::hf_tensors() {
  std::vector<std::pair<std::string, Tensor>> v;
  for (auto& p : named_parameters()) v.emplace_back("model." + p.key(), p.value());
  return v;
}

void Transformer::load_hf_tensors(const std::map<std::string, Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  auto params = named_parameters();
  for (auto& p : params) {
    std::string name = "model." + p.key();
    auto it = tensors.find(name);
    if (it == tensors.end()) throw Error("checkpoint is missing tensor " + name);
    if (it->second.sizes() != p.value().sizes()) {
      std::ostringstream msg;
      msg << "tensor " << name << " has shape " << it->second.sizes() << " but the config needs "
          << p.value().sizes();
      throw Error(msg.str());
    }
    p.value().copy_(it->second.to(p.value().scalar_type()));
  }
  for (auto& kv : tensors) {
    if (kv.first == "lm_head.weight") continue;  // tied: some writers store it anyway
    if (!params.contains(kv.first.substr(kv.first.rfind("model.", 0) == 0 ? 6 : 0)))
      throw Error("checkpoint has a tensor the model does not: " + kv.first);
  }
}

Tensor lm_loss(const Tensor& logits, const Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                              targets.reshape({-1}));
}

}  // namespace ssalab
