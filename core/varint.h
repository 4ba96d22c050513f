// LEB128 varints, as protobuf's wire format and the XOR_RLE weight delta
// (learner.proto) write them: 7 bits per byte, low bits first, the high bit
// set on every byte but the last.
//
//   std::string out;
//   AppendVarint(300, &out);                  // "\xac\x02"
//   const uint8_t* p = ...; uint64_t v;
//   if (!ReadVarint(&p, end, &v)) ...         // truncated or over 10 bytes
//
// Header-only; the weight store's encoder keeps its own pointer-writing
// loop on its hot path.
//
// Thread-safety: pure functions.
#ifndef COHORT_CORE_VARINT_H_
#define COHORT_CORE_VARINT_H_

#include <cstdint>
#include <string>

namespace cohort {

inline void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Reads one varint from [*p, end) and advances *p past it. False if the
// bytes end first or it runs past 64 bits' worth of groups (*p is then
// past what was read).
inline bool ReadVarint(const uint8_t** p, const uint8_t* end, uint64_t* value) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    const uint8_t b = *(*p)++;
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) {
      *value = v;
      return true;
    }
  }
  return false;
}

}  // namespace cohort

#endif  // COHORT_CORE_VARINT_H_
