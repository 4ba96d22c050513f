// libFuzzer target for the safetensors header parser: any byte string is
// parsed as a whole file image; the parser must return a status, never
// crash, and every accepted tensor must lie inside the buffer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t data_offset = 0;
  auto header = cohort::safetensors::ParseBuffer(data, size, &data_offset);
  if (!header.ok()) return 0;
  for (const auto& t : header->tensors) {
    if (t.begin > t.end || data_offset + t.end > size) std::abort();
    auto dsize = cohort::safetensors::DTypeSize(t.dtype);
    if (!dsize) std::abort();
  }
  return 0;
}
