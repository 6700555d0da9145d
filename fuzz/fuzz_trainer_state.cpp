// trainer_state.json: the step, the training config and free-form extras
// that resuming a run reads.
#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // parse_json_file() reports that before this point
  try {
    ssalab::TrainerState s = ssalab::trainer_state_from_json(j, "trainer_state.json");
    (void)ssalab::to_json(s.train);
  } catch (const ssalab::Error&) {
  }
  return 0;
}
