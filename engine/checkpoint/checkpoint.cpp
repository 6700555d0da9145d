#include "engine/checkpoint/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "engine/checkpoint/safetensors.h"
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

LoadedCheckpoint load_checkpoint(const std::string& dir) {
  recover_directory(dir);
  if (!file_exists(dir)) throw Error("checkpoint not found: " + dir);
  LoadedCheckpoint ck;
  ck.dir = dir;
  ck.config = model_config_from_json(parse_json_file(dir + "/config.json"));
  SafetensorsFile weights = load_safetensors(dir + "/model.safetensors");
  ck.model = std::make_shared<Transformer>(ck.config);
  try {
    ck.model->load_hf_tensors(weights.tensors);
  } catch (const Error& e) {
    throw Error(dir + "/model.safetensors does not match config.json: " + e.what());
  }
  ck.tokenizer = Tokenizer::load(dir + "/tokenizer.model");
  if (ck.tokenizer.vocab_size() != ck.config.vocab_size)
    throw Error(dir + ": tokenizer has " + std::to_string(ck.tokenizer.vocab_size()) + " pieces but config.json says " +
                std::to_string(ck.config.vocab_size));
  if (file_exists(dir + "/trainer_state.json")) {
    nlohmann::json st = parse_json_file(dir + "/trainer_state.json");
    try {
      TrainerState s;
      s.step = st.at("step").get<int64_t>();
      s.train = train_config_from_json(st.at("train"));
      if (st.contains("extra")) s.extra = st["extra"];
      ck.state = s;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(dir + "/trainer_state.json is malformed (" + e.what() + ")");
    }
  }
  return ck;
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
