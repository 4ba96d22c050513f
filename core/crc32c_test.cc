#include "core/crc32c.h"

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

}  // namespace
}  // namespace cohort
