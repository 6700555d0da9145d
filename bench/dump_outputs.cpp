// Writes a model's outputs bit for bit, so a refactor can show that it changed
// nothing: for each shipped model, the logits and every layer's post-RoPE q
// and k (full and sparse inference) on a fixed text, and the perplexity
// report. Compare two runs' files with cmp.
//   ssalab_dump_outputs MODEL_DIR TEXT_FILE OUT_PREFIX
#include <cstdio>
#include <fstream>

#include "engine/checkpoint/checkpoint.h"
#include "engine/eval/eval.h"
#include "engine/model/transformer.h"
#include "engine/util/files.h"

using namespace ssalab;

static void append(std::ofstream& out, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat).contiguous();
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()), std::streamsize(c.numel() * sizeof(float)));
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR TEXT_FILE OUT_PREFIX\n", argv[0]);
    return 2;
  }
  torch::set_num_threads(1);  // one thread: the same summation order every run
  LoadedCheckpoint ck = load_checkpoint(argv[1]);
  std::vector<int32_t> ids = ck.tokenizer.encode(read_file(argv[2]));
  const int64_t T = std::min<int64_t>(int64_t(ids.size()), ck.config.max_position);
  torch::Tensor tokens = torch::from_blob(ids.data(), {1, T}, torch::kInt).to(torch::kLong);
  std::ofstream hidden(std::string(argv[3]) + ".hidden.bin", std::ios::binary);
  torch::NoGradGuard no_grad;
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    ForwardOptions opt;
    opt.mode = mode;
    opt.spec = {ck.config.block_size, ck.config.block_counts};
    opt.capture = true;
    ForwardOutput out = ck.model->forward(tokens, opt);
    append(hidden, out.logits);
    for (size_t l = 0; l < out.q.size(); ++l) {
      append(hidden, out.q[l]);
      append(hidden, out.k[l]);
    }
  }
  EvalOptions eo;
  eo.seq_len = int(std::min<int64_t>(T, 512));
  PerplexityReport r = evaluate_perplexity(*ck.model, ids, eo, {2, 4, 8}, {8, 16});
  std::ofstream(std::string(argv[3]) + ".ppl.json") << to_json(r).dump(1, ' ') << "\n";
  std::printf("%s: %lld tokens, logits and %zu layers' q/k written\n", argv[1], (long long)T, size_t(ck.config.num_layers));
  return 0;
}
