#include "engine/train/metrics_log.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <filesystem>
#include <system_error>

#include "engine/util/error.h"

namespace ssalab {

namespace {

double number_or_nan(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return NAN;
  if (!it->is_number()) throw Error(std::string("metrics record: \"") + key + "\" is not a number");
  return it->get<double>();
}

}  // namespace

MetricPoint metric_point_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("metrics record: not a JSON object");
  auto step = j.find("step");
  if (step == j.end()) throw Error("metrics record: no \"step\"");
  if (!step->is_number_integer() || step->get<int64_t>() < 0)
    throw Error("metrics record: \"step\" is not a non-negative integer");
  MetricPoint m;
  m.step = step->get<int64_t>();
  m.loss = number_or_nan(j, "loss");
  m.ce_full = number_or_nan(j, "ce_full");
  m.ce_sparse = number_or_nan(j, "ce_sparse");
  m.sparsity_loss = number_or_nan(j, "sparsity_loss");
  m.commitment_loss = number_or_nan(j, "commitment_loss");
  m.grad_norm = number_or_nan(j, "grad_norm");
  m.lr = number_or_nan(j, "lr");
  m.tokens_per_s = number_or_nan(j, "tokens_per_s");
  m.val_ppl_full = number_or_nan(j, "val_ppl_full");
  m.val_ppl_sparse = number_or_nan(j, "val_ppl_sparse");
  return m;
}

void MetricsLog::reset() {
  offset_ = 0;
  partial_.clear();
  skipping_ = false;
  points_.clear();
  ++revision_;
}

void MetricsLog::take_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find_first_not_of(" \t") == std::string_view::npos) return;  // blank
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    ++bad_lines_;
    last_problem_ = "metrics record: not valid JSON";
    return;
  }
  MetricPoint m;
  try {
    m = metric_point_from_json(j);
  } catch (const Error& e) {
    ++bad_lines_;
    last_problem_ = e.what();
    return;
  }
  // a run resumed from an earlier checkpoint logs those steps again: the
  // new lines are the run's history from there on
  while (!points_.empty() && points_.back().step >= m.step) points_.pop_back();
  points_.push_back(m);
  ++revision_;
}

void MetricsLog::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, nl);
    if (skipping_) {
      if (nl != std::string_view::npos) skipping_ = false;
    } else if (partial_.size() + piece.size() > kMaxLineBytes) {
      ++bad_lines_;
      last_problem_ = "metrics record: a line longer than " + std::to_string(kMaxLineBytes) + " bytes";
      partial_.clear();
      skipping_ = nl == std::string_view::npos;
    } else if (nl == std::string_view::npos) {
      partial_.append(piece);
    } else if (partial_.empty()) {
      take_line(piece);
    } else {
      partial_.append(piece);
      take_line(partial_);
      partial_.clear();
    }
    if (nl == std::string_view::npos) break;
    bytes.remove_prefix(nl + 1);
  }
}

bool MetricsLog::poll(size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path_, ec);
  const uint64_t before = revision_;
  if (ec) return false;  // not there (yet)
  if (size < offset_) {  // started again by a new run
    reset();
    ++restarts_;
  }
  if (size > offset_) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return false;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk(std::min<uint64_t>(size - offset_, max_bytes), '\0');
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    chunk.resize(static_cast<size_t>(in.gcount()));
    offset_ += chunk.size();
    feed(chunk);
  }
  return revision_ != before;
}

}  // namespace ssalab
