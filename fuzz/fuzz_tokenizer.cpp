// tokenizer.json and tokenizer_config.json (the Hugging Face tokenizers
// format: normalizers, pre-tokenizers, models, post-processors, decoders,
// added tokens), then an encode and a decode with the tokenizer built.
#include <fuzzer/FuzzedDataProvider.h>

#include "engine/tokenizer/hf_tokenizer.h"
#include "engine/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string config = in.ConsumeRandomLengthString();
  const std::string text = in.ConsumeRandomLengthString(256);
  const std::string tokenizer = in.ConsumeRemainingBytesAsString();
  try {
    ssalab::tokenizer::HfTokenizer tok(tokenizer, "tokenizer.json", config);
    std::vector<int32_t> ids = tok.encode(text.empty() ? "Hello world, 1234 <s> ok" : text);
    (void)tok.decode(ids);
  } catch (const ssalab::Error&) {
  }
  return 0;
}
