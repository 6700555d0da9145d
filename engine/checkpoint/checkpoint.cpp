#include "engine/checkpoint/checkpoint.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>


#include "engine/checkpoint/safetensors.h"
#include "engine/hub/hub.h"
#include "engine/memory/estimate.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

static nlohmann::json parse_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(path + " is not valid JSON (" + e.what() + ")");
  }
}

void save_checkpoint(const std::string& dir, Transformer& model, const Tokenizer& tok, const SaveOptions& opt) {
  // Stage everything in a sibling directory, then swap it in: a full disk or
  // a crash mid-save never touches the previous checkpoint.
  std::string staged = dir + ".staging." + std::to_string(::getpid());
  remove_tree(staged);
  try {
    make_dirs(staged);
    NamedTensors tensors;
    for (auto& kv : model.hf_tensors()) tensors.emplace_back(kv.first, kv.second.detach().to(torch::kCPU));
    save_safetensors(staged + "/model.safetensors", tensors, {{"format", "pt"}}, opt.weights_dtype);
    write_file_atomic(staged + "/config.json", to_json(model.config()).dump(2) + "\n");
    write_file_atomic(staged + "/tokenizer.model", tok.serialized());
    if (opt.state) {
      nlohmann::json st = {{"step", opt.state->step}, {"train", to_json(opt.state->train)}, {"extra", opt.state->extra}};
      write_file_atomic(staged + "/trainer_state.json", st.dump(2) + "\n");
    }
    if (opt.optimizer) {
      std::ostringstream bytes;
      torch::serialize::OutputArchive archive;
      opt.optimizer->save(archive);
      archive.save_to(bytes);
      write_file_atomic(staged + "/optimizer.pt", bytes.str());
    }
    commit_directory(staged, dir);
  } catch (const Error& e) {
    remove_tree(staged);
    throw Error("saving checkpoint " + dir + " failed: " + e.what() + " (previous checkpoint kept)");
  } catch (const std::exception& e) {
    remove_tree(staged);
    throw Error("saving checkpoint " + dir + " failed: " + e.what() + " (previous checkpoint kept)");
  }
}

// ---------------------------------------------------------------- loading

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Names and shapes for messages: "a, b, c and 4 more".
std::string name_list(const std::vector<std::string>& names, size_t max = 6) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max) s += " and " + std::to_string(names.size() - max) + " more";
  return s;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A CPU tensor for a converted weight. Big ones get their own anonymous
// mapping with transparent huge pages asked for: first-touching fresh memory
// is most of a load's time (measured on the 2-core VM: 3.7 s per GiB with
// 4 KiB pages, 2.3 s with huge ones), and huge pages spare the matmuls TLB
// misses too.
torch::Tensor cpu_weight(const std::vector<int64_t>& shape, torch::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t bytes = size_t(numel) * c10::elementSize(dtype);
  if (bytes < (size_t(4) << 20)) return torch::empty(shape, torch::TensorOptions().dtype(dtype));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error("out of memory: cannot map " + bytes_text(bytes) + " for a weight");
#ifdef MADV_HUGEPAGE
  ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: fine where THP is off
#endif
  return torch::from_blob(p, shape, [bytes](void* q) { ::munmap(q, bytes); }, torch::TensorOptions().dtype(dtype));
}

// Tensors a file may hold that the model does not need.
bool ignorable(const std::string& name, const ModelConfig& c) {
  if (name == "lm_head.weight" && c.tied_embeddings) return true;  // tied: some writers store it anyway
  const std::string rot = "rotary_emb.inv_freq";                   // old HF Llama buffers
  return name.size() >= rot.size() && name.compare(name.size() - rot.size(), rot.size(), rot) == 0;
}

// The weights' files: model.safetensors, or the shards an index lists.
std::vector<std::string> weight_files(const std::string& dir, std::map<std::string, std::string>* index_map) {
  const std::string index = dir + "/model.safetensors.index.json";
  if (file_exists(index)) {
    nlohmann::json j = parse_json_file(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(index + " has no weight_map object");
    std::vector<std::string> files;
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw Error(index + ": weight_map entry for " + name + " is not a file name");
      std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty())
        throw Error(index + ": weight_map names " + f + ", which is not a file in the folder");
      (*index_map)[name] = f;
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
    std::sort(files.begin(), files.end());
    std::vector<std::string> absent;
    for (auto& f : files)
      if (!file_exists(dir + "/" + f)) absent.push_back(f);
    if (!absent.empty())
      throw Error(dir + ": model.safetensors.index.json lists shard" + (absent.size() > 1 ? "s " : " ") +
                  name_list(absent) + " but the folder does not have " + (absent.size() > 1 ? "them" : "it") +
                  " (an interrupted download?)");
    for (auto& f : files) f = dir + "/" + f;
    return files;
  }
  if (file_exists(dir + "/model.safetensors")) return {dir + "/model.safetensors"};
  for (const char* pickle : {"pytorch_model.bin", "pytorch_model.bin.index.json", "consolidated.00.pth"})
    if (file_exists(dir + "/" + pickle))
      throw Error(dir + " has only PyTorch pickle weights (" + pickle +
                  "); ssalab reads safetensors (model.safetensors or an index of shards)");
  throw Error(dir + " has no model.safetensors (nor model.safetensors.index.json)");
}

struct Located {
  size_t file;  // index into the headers
  const SafetensorsEntry* entry;
};

// Everything load_checkpoint needs after planning.
struct Prepared {
  LoadPlan plan;
  std::vector<SafetensorsHeader> headers;
  std::map<std::string, Located> tensors;  // every tensor the model uses
};

Prepared prepare(const std::string& dir_or_id, const LoadOptions& opt) {
  recover_directory(dir_or_id);  // a save interrupted between its two renames
  if (!looks_like_hub_id(dir_or_id) && !file_exists(dir_or_id)) throw Error("checkpoint not found: " + dir_or_id);
  ResolvedModel where = resolve_model(dir_or_id);
  Prepared p;
  LoadPlan& plan = p.plan;
  plan.dir = where.dir;
  plan.hub_id = where.hub_id;
  const std::string& dir = where.dir;
  ModelConfig c = model_config_from_json(parse_json_file(dir + "/config.json"));
  // what transformers' generate() stops on
  if (file_exists(dir + "/generation_config.json")) {
    std::vector<int> eos = eos_token_ids_from_json(parse_json_file(dir + "/generation_config.json"),
                                                   dir + "/generation_config.json");
    if (!eos.empty()) c.eos_token_ids = eos;
  }

  std::map<std::string, std::string> index_map;
  plan.weight_files = weight_files(dir, &index_map);
  for (const auto& f : plan.weight_files) p.headers.push_back(read_safetensors_header(f));
  std::map<std::string, Located> all;
  for (size_t i = 0; i < p.headers.size(); ++i)
    for (const SafetensorsEntry& e : p.headers[i].entries) {
      auto [it, fresh] = all.emplace(e.name, Located{i, &e});
      if (!fresh)
        throw Error(dir + ": tensor " + e.name + " is in both " + p.headers[it->second.file].path + " and " +
                    p.headers[i].path);
      if (!index_map.empty()) {
        auto listed = index_map.find(e.name);
        if (listed == index_map.end() || dir + "/" + listed->second != p.headers[i].path)
          throw Error(dir + ": tensor " + e.name + " is in " + p.headers[i].path +
                      " but model.safetensors.index.json does not list it there");
      }
    }
  for (const auto& [name, file] : index_map)
    if (!all.count(name))
      throw Error(dir + ": model.safetensors.index.json lists " + name + " in " + file + ", which does not hold it");

  // Old checkpoints of ours said LlamaForCausalLM and carried the gate.
  if (c.arch == Arch::Llama && all.count("model.layers.0.self_attn.g_proj.weight")) {
    c.arch = Arch::LlamaNSA;
    c.gate = true;
  }
  const std::string what = dir + " (" + architecture_name(c.arch) + ")";
  std::string problem = model_support_problem(c);
  if (!problem.empty()) throw Error(what + ": " + problem);

  // The config against the headers, before building anything from it: first
  // the counts (a config with 400M layers is refused here, by arithmetic),
  // then every name and shape.
  int64_t layers_in_file = 0;
  for (const auto& [name, loc] : all)
    if (name.rfind("model.layers.", 0) == 0) {
      int64_t i = std::atoll(name.c_str() + 13);
      if (i >= 0 && i < int64_t(all.size())) layers_in_file = std::max(layers_in_file, i + 1);
    }
  if (layers_in_file != c.num_layers)
    throw Error(what + ": config.json says num_hidden_layers " + std::to_string(c.num_layers) +
                " but the weights hold " + std::to_string(layers_in_file) + " layers");
  const int64_t expected = model_tensor_count(c);
  if (expected > int64_t(all.size()) + 8)
    throw Error(what + ": config.json needs " + std::to_string(expected) + " tensors but the weights hold only " +
                std::to_string(all.size()));
  std::vector<std::string> missing, misshapen, unexpected;
  for (const TensorSpec& t : model_tensors(c)) {
    auto it = all.find(t.name);
    if (it == all.end()) {
      missing.push_back(t.name);
      continue;
    }
    if (it->second.entry->shape != t.shape)
      misshapen.push_back(t.name + " has shape " + shape_text(it->second.entry->shape) + " in " +
                          p.headers[it->second.file].path + " but config.json needs " + shape_text(t.shape));
    p.tensors.emplace(t.name, it->second);
  }
  for (const auto& [name, loc] : all)
    if (!p.tensors.count(name) && !ignorable(name, c)) unexpected.push_back(name);
  if (!misshapen.empty()) throw Error(what + " does not match config.json: tensor " + name_list(misshapen, 3));
  if (!missing.empty())
    throw Error(what + ": the weights lack " + std::to_string(missing.size()) + " tensor" +
                (missing.size() > 1 ? "s" : "") + " the config needs: " + name_list(missing));
  if (!unexpected.empty())
    throw Error(what + ": the weights hold " + std::to_string(unexpected.size()) + " tensor" +
                (unexpected.size() > 1 ? "s" : "") + " this model does not use: " + name_list(unexpected) +
                (c.arch == Arch::Llama || c.arch == Arch::Mistral ? " (a different architecture?)" : ""));

  // dtypes: BF16, F16, F32 only
  std::map<std::string, uint64_t> by_dtype;
  std::vector<std::string> bad;
  for (const auto& [name, loc] : p.tensors) {
    const SafetensorsEntry& e = *loc.entry;
    if (e.dtype != "BF16" && e.dtype != "F16" && e.dtype != "F32") bad.push_back(name + " (" + e.dtype + ")");
    by_dtype[e.dtype] += e.bytes();
    plan.file_bytes += e.bytes();
  }
  if (!bad.empty())
    throw Error(what + ": unsupported weight dtype: " + name_list(bad, 3) +
                "; ssalab loads BF16, F16 and F32 weights (not F8 or integer / quantized ones)");
  std::string main_dtype;
  for (const auto& [dt, bytes] : by_dtype) {
    plan.stored_dtype += (plan.stored_dtype.empty() ? "" : "+") + dt;
    if (main_dtype.empty() || bytes > by_dtype[main_dtype]) main_dtype = dt;
  }

  plan.config = c;
  plan.device = opt.device;
  plan.dtype = opt.dtype ? *opt.dtype
               : opt.device.is_cpu() ? torch::kFloat
               : main_dtype == "BF16" ? torch::kBFloat16
               : main_dtype == "F16"  ? torch::kHalf
                                      : torch::kFloat;
  if (plan.dtype != torch::kFloat && plan.dtype != torch::kBFloat16 && plan.dtype != torch::kHalf)
    throw Error("load: the compute dtype must be float32, bfloat16 or float16");
  const uint64_t elem = c10::elementSize(plan.dtype);
  for (const auto& [name, loc] : p.tensors) {
    const SafetensorsEntry& e = *loc.entry;
    plan.parameters += e.numel();
    if (opt.device.is_cpu() && e.type == plan.dtype)
      plan.mapped_bytes += e.bytes();
    else
      plan.new_bytes += uint64_t(e.numel()) * elem;
  }
  plan.logits_bytes_per_token = uint64_t(c.vocab_size) * 4;
  plan.available_bytes = opt.memory_limit ? opt.memory_limit : available_memory(opt.device);
  if (opt.on_plan)
    opt.on_plan(plan);
  else if (plan.new_bytes + plan.mapped_bytes >= 64 * kMiB)
    std::fprintf(stderr, "[ssalab] %s\n", plan.summary().c_str());
  const uint64_t need = opt.device.is_cpu() ? plan.new_bytes + plan.mapped_bytes : plan.new_bytes;
  if (opt.check_memory && plan.available_bytes > 0 && need > plan.available_bytes)
    throw Error(what + " needs " + bytes_text(need) + " for its weights on " + opt.device.str() + " but only " +
                bytes_text(plan.available_bytes) + " is available; nothing was loaded");
  return p;
}

}  // namespace

std::string LoadPlan::summary() const {
  std::string s = (hub_id.empty() ? dir : hub_id) + ": " + architecture_name(config.arch) + ", " +
                  std::to_string(parameters / 1000000) + "M parameters stored as " + stored_dtype + " (" +
                  bytes_text(file_bytes) + " in " + std::to_string(weight_files.size()) + " file" +
                  (weight_files.size() > 1 ? "s" : "") + "); runs in " + c10::toString(dtype) + " on " +
                  device.str() + ": needs " + bytes_text(new_bytes) + " new";
  if (mapped_bytes) s += " + " + bytes_text(mapped_bytes) + " mapped from the file";
  s += " (+ " + bytes_text(logits_bytes_per_token * 1024) + " of logits per 1K tokens)";
  if (available_bytes) s += "; " + bytes_text(available_bytes) + " available";
  return s;
}

LoadPlan plan_checkpoint(const std::string& dir_or_id, const LoadOptions& opt) {
  LoadOptions quiet = opt;
  quiet.on_plan = [](const LoadPlan&) {};
  quiet.check_memory = false;
  return prepare(dir_or_id, quiet).plan;
}

LoadedCheckpoint load_checkpoint(const std::string& dir_or_id, const LoadOptions& opt) {
  Prepared p = prepare(dir_or_id, opt);
  LoadedCheckpoint ck;
  ck.dir = p.plan.dir;
  ck.config = p.plan.config;
  const std::string& dir = ck.dir;

  std::vector<std::unique_ptr<MappedSafetensors>> maps;
  for (const SafetensorsHeader& h : p.headers) maps.push_back(std::make_unique<MappedSafetensors>(h));
  const torch::Device device = p.plan.device;
  const torch::ScalarType dtype = p.plan.dtype;
  uint64_t bytes_done = 0;
  ParamSource source = [&](const std::string& name, const std::vector<int64_t>&) {
    if (opt.cancel && opt.cancel->load()) throw LoadCancelled("loading " + dir_or_id + " was cancelled");
    const Located& loc = p.tensors.at(name);  // names and shapes were checked by prepare()
    const MappedSafetensors& map = *maps[loc.file];
    const SafetensorsEntry& e = map.header().entries[loc.entry - p.headers[loc.file].entries.data()];
    bytes_done += e.bytes();
    if (opt.on_progress && p.plan.file_bytes > 0) opt.on_progress(double(bytes_done) / double(p.plan.file_bytes));
    torch::Tensor t = map.tensor(e);
    if (device.is_cpu() && t.scalar_type() == dtype) return t;  // used from the mapping
    torch::Tensor converted = device.is_cpu() ? cpu_weight(e.shape, dtype).copy_(t) : t.to(device, dtype);
    map.release(e);  // its pages leave the resident set
    return converted;
  };
  {
    torch::NoGradGuard no_grad;
    ck.model = std::make_shared<Transformer>(ck.config, source);
  }
  maps.clear();  // the mapped tensors keep their file's mapping alive
  ck.plan = p.plan;

  if (file_exists(dir + "/tokenizer.json")) ck.tokenizer_json = dir + "/tokenizer.json";
  if (file_exists(dir + "/tokenizer.model")) {
    ck.tokenizer = Tokenizer::load(dir + "/tokenizer.model");
    // ours: one vocabulary; HF folders may pad the embedding past the pieces
    const bool ours = ck.tokenizer_json.empty();
    if (ours ? ck.tokenizer.vocab_size() != ck.config.vocab_size : ck.tokenizer.vocab_size() > ck.config.vocab_size)
      throw Error(dir + ": tokenizer has " + std::to_string(ck.tokenizer.vocab_size()) +
                  " pieces but config.json says " + std::to_string(ck.config.vocab_size));
  }
  if (file_exists(dir + "/trainer_state.json"))
    ck.state = trainer_state_from_json(parse_json_file(dir + "/trainer_state.json"), dir + "/trainer_state.json");
  return ck;
}

TrainerState trainer_state_from_json(const nlohmann::json& st, const std::string& where) {
  try {
    TrainerState s;
    // json's get<int64_t>() casts any number it holds, UB for 1e300 (found by fuzzing)
    const nlohmann::json& step = st.at("step");
    if (!step.is_number_integer() || (step.is_number_unsigned() && step.get<uint64_t>() > uint64_t(INT64_MAX)))
      throw Error(where + ": \"step\" is not an integer step count");
    s.step = step.get<int64_t>();
    if (s.step < 0) throw Error(where + ": step " + std::to_string(s.step) + " is negative");
    s.train = train_config_from_json(st.at("train"));
    if (st.contains("extra")) s.extra = st["extra"];
    return s;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(where + " is malformed (" + e.what() + ")");
  }
}

void load_optimizer(const std::string& dir, torch::optim::Optimizer& opt) {
  std::string path = dir + "/optimizer.pt";
  std::string bytes = read_file(path);
  try {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    opt.load(archive);
  } catch (const std::exception& e) {
    throw Error(path + " is corrupt or from another optimizer (" + std::string(e.what()).substr(0, 200) + ")");
  }
}

}  // namespace ssalab
