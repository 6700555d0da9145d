#include "engine/train/trainer.h"

#include <chrono>
#include <cmath>
#include <random>
#include <sstream>

#include "engine/attention/attention.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/util/autocast.h"
#include "engine/util/error.h"
#include "engine/util/hash.h"

namespace ssalab {

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
    std::string why = attention_problem(t.seq_len, t.seq_len, m.num_heads, m.num_kv_heads, m.head_dim,
                                        model_sparse_spec(m));
    need(why.empty(), "block_size " + std::to_string(m.block_size) + ", block_counts " +
                          std::to_string(m.block_counts) + ": " + why);
  }
}

using torch::Tensor;

static uint64_t stream_seed(uint64_t seed, int64_t step, int micro, uint64_t purpose) {
  return splitmix64(splitmix64(splitmix64(seed ^ purpose) + uint64_t(step)) + uint64_t(micro));
}

Tensor sample_batch(const std::vector<int32_t>& tokens, int batch, int seq_len, uint64_t seed, int64_t step,
                    int micro) {
  const int64_t n = int64_t(tokens.size());
  if (n < seq_len + 1)
    throw Error("not enough tokens (" + std::to_string(n) + ") for seq_len " + std::to_string(seq_len));
  std::mt19937_64 rng(stream_seed(seed, step, micro, 1));
  std::uniform_int_distribution<int64_t> start(0, n - seq_len - 1);
  Tensor out = torch::empty({batch, seq_len + 1}, torch::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (int b = 0; b < batch; ++b) {
    int64_t s = start(rng);
    for (int t = 0; t <= seq_len; ++t) a[b][t] = tokens[s + t];
  }
  return out;
}

bool draw_full_mode(uint64_t seed, int64_t step, int micro, double p_full) {
  std::mt19937_64 rng(stream_seed(seed, step, micro, 2));
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < p_full;
}

double lr_at(const TrainConfig& t, int64_t step) {
  const int64_t warmup = int64_t(std::ceil(t.warmup_frac * t.steps));
  if (step < warmup) return t.lr * double(step + 1) / double(warmup);
  const double progress = t.steps > warmup ? double(step - warmup) / double(t.steps - warmup) : 1.0;
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return t.lr * (t.min_lr_ratio + (1.0 - t.min_lr_ratio) * cosine);
}

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available()) throw Error("--device cuda asked for, but no CUDA device is available");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

Trainer::Trainer(std::shared_ptr<Transformer> model, TrainConfig train, std::shared_ptr<const TokenData> data,
                 DataShard shard)
    : model_(std::move(model)),
      train_(std::move(train)),
      data_(std::move(data)),
      device_(resolve_device(train_.device)),
      shard_(shard) {
  if (shard_.group) shard_.rank = shard_.group->rank(), shard_.world_size = shard_.group->size();
  if (shard_.world_size < 1 || shard_.rank < 0 || shard_.rank >= shard_.world_size)
    throw Error("data shard: rank " + std::to_string(shard_.rank) + " of " + std::to_string(shard_.world_size) +
                " processes is impossible");
  ssalab::validate(train_, model_->config());
  validate_shard();
  if (train_.threads > 0) torch::set_num_threads(train_.threads);
  model_->to(device_);
  // decoupled weight decay on matrices only; norms and gains are not decayed
  std::vector<Tensor> decay, no_decay;
  for (auto& p : model_->named_parameters()) (p.value().dim() >= 2 ? decay : no_decay).push_back(p.value());
  auto base = torch::optim::AdamWOptions(train_.lr).betas({train_.beta1, train_.beta2}).eps(1e-8);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(base).weight_decay(train_.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0)));
  opt_ = std::make_unique<torch::optim::AdamW>(std::move(groups), base);
  if (shard_.group) {
    // every rank starts from rank 0's weights (the same seed gives the same
    // ones; this makes sure), then sums gradients with the others
    torch::NoGradGuard no_grad;
    for (Tensor& p : model_->parameters()) shard_.group->broadcast(p, 0);
    gradient_sync_ = std::make_unique<distributed::GradientSync>(model_->parameters(), shard_.group);
    if (train_.shard_optimizer)
      optimizer_shard_ = std::make_unique<distributed::OptimizerShard>(model_->parameters(), shard_.group);
  }
}

void validate_shard(const TrainConfig& t, int world_size) {
  if (t.grad_accum % world_size != 0)
    throw Error("invalid training config: grad_accum " + std::to_string(t.grad_accum) +
                " (micro-batches per step over all processes) does not divide among " + std::to_string(world_size) +
                " processes: set train.grad_accum to a multiple");
}

void Trainer::validate_shard() const { ssalab::validate_shard(train_, shard_.world_size); }

Error Trainer::non_finite_loss(double loss) const {
  return Error("loss became " + std::string(std::isnan(loss) ? "NaN" : "Inf") + " at step " +
               std::to_string(step_ + 1) + " (try a lower lr); weights kept from the last good step");
}

void Trainer::set_spec(const SparseSpec& s) {
  ModelConfig c = model_->config();
  c.block_size = s.block_size;
  c.block_counts = s.top_k;
  ssalab::validate(train_, c);  // throws with the reason before anything changes
  model_->set_sparse_spec(s);
}

MetricPoint Trainer::step() {
  ssalab::validate(train_, model_->config());
  validate_shard();
  auto t0 = std::chrono::steady_clock::now();
  model_->train();
  const double lr = lr_at(train_, step_);
  for (auto& g : opt_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  opt_->zero_grad();

  MetricPoint m;
  m.step = step_ + 1;
  m.lr = lr;
  double ce_full = 0, ce_sparse = 0, n_full = 0, n_sparse = 0, align = 0, total = 0;
  const bool cuda_bf16 = device_.is_cuda() && train_.bf16;
  const int local_micro = train_.grad_accum / shard_.world_size;
  for (int micro = 0; micro < local_micro; ++micro) {
    Tensor batch = sample_batch(data_->train, train_.batch_size, train_.seq_len, train_.seed, step_,
                                micro * shard_.world_size + shard_.rank).to(device_);
    Tensor inputs = batch.narrow(1, 0, train_.seq_len), targets = batch.narrow(1, 1, train_.seq_len);
    ForwardOptions fo;
    fo.spec = spec();
    switch (train_.method) {
      case Method::Full: fo.mode = AttnMode::Full; break;
      case Method::Moba: fo.mode = AttnMode::Sparse; break;
      case Method::Ssa:
        fo.mode = draw_full_mode(train_.seed, step_, micro, train_.p_full) ? AttnMode::Full : AttnMode::Sparse;
        fo.dual = true;
        break;
    }
    Tensor loss, ce, alignment;
    {
      Bf16AutocastScope autocast(cuda_bf16);
      ForwardOutput out = model_->forward(inputs, fo);
      ce = lm_loss(out.logits, targets);
      loss = ce;
      if (fo.dual) {
        // the paper's ce + alpha * (sparsity + commitment), from the one
        // alignment loss that is each of them in value (transformer.h)
        alignment = out.alignment_loss;
        loss = ce + train_.alpha * (alignment + alignment.detach());
      }
    }
    if (on_phase) on_phase("forward");
    if (gradient_sync_ && micro == local_micro - 1) gradient_sync_->arm();
    (loss / double(train_.grad_accum)).backward();
    if (on_phase) on_phase("backward");
    // One read from the device a micro-step, once the backward is queued: a
    // read waits for the GPU, and reading before the backward left the GPU
    // idle while the host queued the backward's launches.
    std::vector<Tensor> values{ce.detach().to(torch::kFloat), loss.detach().to(torch::kFloat)};
    if (alignment.defined()) values.push_back(alignment.detach().to(torch::kFloat));
    const Tensor on_host = torch::stack(values).to(torch::kCPU, torch::kDouble);
    const auto read = on_host.accessor<double, 1>();
    const double ce_v = read[0], loss_v = read[1];
    if (alignment.defined()) align += read[2];
    // with other processes, every rank finishes the step (the collectives
    // must match) and all of them stop on the summed loss below
    if (!std::isfinite(loss_v) && !shard_.group) {
      opt_->zero_grad();  // the non-finite gradients of this micro-step
      throw non_finite_loss(loss_v);
    }
    total += loss_v;
    if (fo.mode == AttnMode::Full) ce_full += ce_v, n_full += 1;
    else ce_sparse += ce_v, n_sparse += 1;
  }
  if (shard_.group) {
    gradient_sync_->finish();
    auto sums = torch::tensor({total, ce_full, n_full, ce_sparse, n_sparse, align}, torch::kDouble);
    shard_.group->sum(sums);
    auto v = sums.accessor<double, 1>();
    total = v[0], ce_full = v[1], n_full = v[2], ce_sparse = v[3], n_sparse = v[4], align = v[5];
    if (!std::isfinite(total)) {
      opt_->zero_grad();
      throw non_finite_loss(total);
    }
  }
  std::vector<Tensor> params = model_->parameters();
  const double max_norm = train_.grad_clip > 0 ? train_.grad_clip : std::numeric_limits<double>::infinity();
  m.grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  if (!std::isfinite(m.grad_norm)) {
    opt_->zero_grad();
    throw Error("gradient norm became non-finite at step " + std::to_string(step_ + 1) +
                "; weights kept from the last good step");
  }
  if (optimizer_shard_) optimizer_shard_->keep_own_gradients();
  opt_->step();
  if (optimizer_shard_) optimizer_shard_->share_updated_parameters();
  if (on_phase) on_phase("optimizer");
  ++step_;

  const int A = train_.grad_accum;
  m.loss = total / A;
  if (n_full > 0) m.ce_full = ce_full / n_full;
  if (n_sparse > 0) m.ce_sparse = ce_sparse / n_sparse;
  // the paper's two losses are the one alignment loss in value (transformer.h)
  if (train_.method == Method::Ssa) m.sparsity_loss = m.commitment_loss = align / A;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.tokens_per_s = double(A) * train_.batch_size * train_.seq_len / std::max(secs, 1e-9);
  return m;
}

double perplexity(Transformer& model, const std::vector<int32_t>& tokens, int seq_len, int batches, int batch_size,
                  AttnMode mode, const SparseSpec& spec, torch::Device dev) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t n = int64_t(tokens.size()), windows = int64_t(batches) * batch_size;
  if (n < seq_len + 1) throw Error("validation set too small for seq_len " + std::to_string(seq_len));
  // evenly spaced windows: the same text for every model and setting
  const int64_t stride = windows > 1 ? (n - seq_len - 1) / (windows - 1) : 0;
  double nll = 0;
  int64_t count = 0;
  ForwardOptions fo;
  fo.mode = mode;
  fo.spec = spec;
  for (int b = 0; b < batches; ++b) {
    Tensor batch = torch::empty({batch_size, seq_len + 1}, torch::kLong);
    auto a = batch.accessor<int64_t, 2>();
    for (int i = 0; i < batch_size; ++i) {
      int64_t s = (int64_t(b) * batch_size + i) * stride;
      for (int t = 0; t <= seq_len; ++t) a[i][t] = tokens[s + t];
    }
    batch = batch.to(dev);
    Tensor logits = model.forward(batch.narrow(1, 0, seq_len), fo).logits;
    nll += lm_loss(logits, batch.narrow(1, 1, seq_len)).item<double>() * batch_size * seq_len;
    count += int64_t(batch_size) * seq_len;
  }
  return std::exp(nll / double(count));
}

std::pair<double, double> Trainer::validate(int batches) {
  const int bsz = std::max(1, std::min(train_.batch_size, 8));
  double full = perplexity(*model_, data_->val, train_.seq_len, batches, bsz, AttnMode::Full, spec(), device_);
  double sparse = perplexity(*model_, data_->val, train_.seq_len, batches, bsz, AttnMode::Sparse, spec(), device_);
  return {full, sparse};
}

void Trainer::save(const std::string& dir, const Tokenizer& tok, const nlohmann::json& extra) {
  SaveOptions so;
  so.optimizer = opt_.get();
  so.state = TrainerState{step_, train_, extra};
  save_checkpoint(dir, *model_, tok, so);
}

void Trainer::resume(const std::string& dir) {
  LoadedCheckpoint ck = load_checkpoint(dir);
  if (!ck.state) throw Error("checkpoint " + dir + " has no trainer_state.json: it cannot be resumed");
  const ModelConfig& mine = model_->config();
  if (to_json(ck.config) != to_json(mine))
    throw Error("checkpoint " + dir + " was trained with a different model config");
  {
    torch::NoGradGuard no_grad;
    auto src = ck.model->named_parameters();
    for (auto& p : model_->named_parameters()) p.value().copy_(src[p.key()]);
  }
  load_optimizer(dir, *opt_);
  if (optimizer_shard_) optimizer_shard_->drop_foreign_state(*opt_);
  step_ = ck.state->step;
}

void Trainer::gather_for_checkpoint() {
  if (optimizer_shard_) optimizer_shard_->gather_state(*opt_);
}

void Trainer::release_gathered() {
  if (optimizer_shard_) optimizer_shard_->drop_foreign_state(*opt_);
}

}  // namespace ssalab
