// config.json to a model config: ours and the Hugging Face families
// (Llama, Qwen2/3, Mistral, LlamaNSA), every field's type and range.
#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // not JSON: the file readers say so before this point
  try {
    ssalab::ModelConfig c = ssalab::model_config_from_json(j);
    (void)ssalab::to_json(c);
  } catch (const ssalab::Error&) {
  }
  return 0;
}
