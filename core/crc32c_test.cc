#include "core/crc32c.h"

#include <algorithm>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace cohort {
namespace {

TEST(Crc32cTest, KnownValues) {
  // RFC 3720 B.4 and the common check value.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(Crc32cTest, CombineEqualsWholeWithoutTheBytes) {
  std::string bytes;
  for (int i = 0; i < 5000; ++i) bytes.push_back(static_cast<char>((i * 131 + 7) % 251));
  for (size_t split : {size_t{0}, size_t{1}, size_t{3}, size_t{64}, size_t{4095}, size_t{5000}}) {
    std::string_view a(bytes.data(), split), b(bytes.data() + split, bytes.size() - split);
    EXPECT_EQ(Crc32cCombine(Crc32c(a), Crc32c(b), static_cast<int64_t>(b.size())), Crc32c(bytes))
        << "split at " << split;
  }
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  uint32_t whole = Crc32c(data);
  for (size_t cut : {0u, 1u, 7u, 8u, 9u, 500u, 999u, 1000u}) {
    uint32_t c = Crc32cExtend(0, data.data(), cut);
    c = Crc32cExtend(c, data.data() + cut, data.size() - cut);
    EXPECT_EQ(c, whole) << cut;
  }
}

TEST(Crc32cTest, ThreeLaneLoopEqualsOneChain) {
  // Buffers of 3 x 4096 bytes and more take the three-lane loop; pieces of
  // under 12 KiB one chain. Both must give the same CRC at every length
  // around the stripe boundaries and at every start alignment.
  std::string bytes;
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < 3 * 4096 * 5 + 64; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bytes.push_back(static_cast<char>(x));
  }
  for (size_t start : {size_t{0}, size_t{1}, size_t{5}}) {
    for (size_t n : {size_t{3 * 4096 - 1}, size_t{3 * 4096}, size_t{3 * 4096 + 1},
                     size_t{3 * 4096 + 8}, size_t{2 * 3 * 4096 + 7}, size_t{5 * 3 * 4096}}) {
      std::string_view v(bytes.data() + start, n);
      uint32_t chained = 0;
      for (size_t off = 0; off < n; off += 1000) {
        chained = Crc32cExtend(chained, v.data() + off, std::min<size_t>(1000, n - off));
      }
      EXPECT_EQ(Crc32c(v), chained) << "start " << start << " n " << n;
      // And from a non-zero starting CRC.
      EXPECT_EQ(Crc32cExtend(0x12345678u, v.data(), n),
                Crc32cExtend(Crc32cExtend(0x12345678u, v.data(), 1), v.data() + 1, n - 1));
    }
  }
  // A single flipped bit anywhere changes it.
  std::string flipped = bytes;
  flipped[4096 * 2 + 17] ^= 0x10;
  EXPECT_NE(Crc32c(flipped), Crc32c(bytes));
  EXPECT_EQ(Crc32c(std::string(3 * 4096, '\0')),
            Crc32cCombine(Crc32c(std::string(4096, '\0')), Crc32c(std::string(8192, '\0')), 8192));
}

}  // namespace
}  // namespace cohort
