// A model folder as downloaded: config.json and model.safetensors.index.json
// from the input, beside the real shards of the sharded Qwen2 fixture, read
// by plan_checkpoint() (the checks made before any weight memory is taken).
#include <fuzzer/FuzzedDataProvider.h>

#include "engine/checkpoint/checkpoint.h"
#include "engine/util/error.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = ssalab::fuzz::scratch_folder(ssalab::fuzz::fixture("hf/qwen2_sharded"));
  FuzzedDataProvider in(data, size);
  ssalab::fuzz::write_text(dir + "/config.json", in.ConsumeRandomLengthString());
  ssalab::fuzz::write_text(dir + "/model.safetensors.index.json", in.ConsumeRemainingBytesAsString());
  try {
    ssalab::LoadPlan plan = ssalab::plan_checkpoint(dir);
    (void)plan;
  } catch (const ssalab::Error&) {
  }
  return 0;
}
