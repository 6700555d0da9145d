// safetensors files: the 8-byte header length, the JSON header (dtypes,
// shapes, offsets, metadata) and the tensor table, through every reader: the
// header alone, the whole file into tensors, and the memory map.
#include "engine/checkpoint/safetensors.h"
#include "engine/util/error.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ssalab::fuzz::MemoryFile file("fuzz.safetensors");
  const std::string& path = file.write(data, size);
  try {
    ssalab::SafetensorsHeader header = ssalab::read_safetensors_header(path);
    ssalab::MappedSafetensors mapped(header);
    for (const ssalab::SafetensorsEntry& e : mapped.header().entries)
      if (e.type != torch::ScalarType::Undefined) (void)mapped.tensor(e).sum();
    ssalab::SafetensorsFile loaded = ssalab::load_safetensors(path);
    (void)loaded;
  } catch (const ssalab::Error&) {
  }
  return 0;
}
