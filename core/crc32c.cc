#include "core/crc32c.h"

#include <array>
#include <cstring>

namespace cohort {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

// On the raw (pre-inverted) register.
uint32_t ExtendTable(uint32_t c, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
// Advancing the raw register over n zero bytes is a linear map on its 32
// bits; as four byte-indexed tables it is four lookups.
struct ZeroShift {
  uint32_t t[4][256];
};

ZeroShift MakeZeroShift(size_t n) {
  uint32_t column[32];
  for (int i = 0; i < 32; ++i) {
    uint32_t c = 1u << i;
    for (size_t k = 0; k < n; ++k) c = kTable[c & 0xFF] ^ (c >> 8);
    column[i] = c;
  }
  ZeroShift z{};
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int j = 0; j < 8; ++j) {
        if (b & (1u << j)) v ^= column[8 * k + j];
      }
      z.t[k][b] = v;
    }
  }
  return z;
}

inline uint32_t Shift(const ZeroShift& z, uint32_t c) {
  return z.t[0][c & 0xFF] ^ z.t[1][(c >> 8) & 0xFF] ^ z.t[2][(c >> 16) & 0xFF] ^ z.t[3][c >> 24];
}

// Bytes per lane of the three-way hardware loop: the crc32 instruction has
// a latency of three cycles and a throughput of one, so three independent
// lanes run about three times as fast as one; the lanes' registers are then
// joined by the register's linearity, R(s, A B) = Z_|B|(R(s, A)) ^ R(0, B),
// Z_n being the advance over n zero bytes.
constexpr size_t kLane = 4096;

const ZeroShift& LaneShift() {
  static const ZeroShift* const z = new ZeroShift(MakeZeroShift(kLane));
  return *z;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t c, const uint8_t* p, size_t n) {
  if (n >= 3 * kLane) {
    const ZeroShift& z = LaneShift();
    while (n >= 3 * kLane) {
      uint64_t a = c, b = 0, d = 0;
      for (size_t i = 0; i < kLane; i += 8) {
        uint64_t wa, wb, wd;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kLane + i, 8);
        std::memcpy(&wd, p + 2 * kLane + i, 8);
        a = __builtin_ia32_crc32di(a, wa);
        b = __builtin_ia32_crc32di(b, wb);
        d = __builtin_ia32_crc32di(d, wd);
      }
      c = Shift(z, Shift(z, static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(d);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
  }
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c64 = __builtin_ia32_crc32di(c64, word);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n > 0) {
    c = __builtin_ia32_crc32qi(c, *p++);
    --n;
  }
  return c;
}

bool HaveHardware() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (HaveHardware()) return ~ExtendHardware(c, p, size);
#endif
  return ~ExtendTable(c, p, size);
}

namespace {

uint32_t Gf2Times(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  for (; vec != 0; vec >>= 1, ++mat) {
    if (vec & 1) sum ^= *mat;
  }
  return sum;
}

void Gf2Square(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2Times(mat, mat[n]);
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, int64_t size_b) {
  if (size_b <= 0) return crc_a;
  uint32_t even[32], odd[32];  // operators appending 2^k zero bits
  odd[0] = 0x82F63B78u;        // reflected Castagnoli polynomial
  for (int n = 1; n < 32; ++n) odd[n] = 1u << (n - 1);
  Gf2Square(even, odd);  // 2 zero bits
  Gf2Square(odd, even);  // 4 zero bits
  do {
    Gf2Square(even, odd);
    if (size_b & 1) crc_a = Gf2Times(even, crc_a);
    size_b >>= 1;
    if (size_b == 0) break;
    Gf2Square(odd, even);
    if (size_b & 1) crc_a = Gf2Times(odd, crc_a);
    size_b >>= 1;
  } while (size_b != 0);
  return crc_a ^ crc_b;
}

}  // namespace cohort
