#include "core/varint.h"

#include <string>

#include <gtest/gtest.h>

namespace cohort {
namespace {

const uint8_t* Bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

TEST(Varint, RoundTripsAndReadsProtobufsEncoding) {
  std::string out;
  AppendVarint(300, &out);
  EXPECT_EQ(out, std::string("\xac\x02", 2));  // protobuf's own example
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128}, uint64_t{16383},
                     uint64_t{16384}, uint64_t{1} << 35, ~uint64_t{0}}) {
    std::string s;
    AppendVarint(v, &s);
    const uint8_t* p = Bytes(s);
    uint64_t got = 0;
    ASSERT_TRUE(ReadVarint(&p, Bytes(s) + s.size(), &got)) << v;
    EXPECT_EQ(got, v);
    EXPECT_EQ(p, Bytes(s) + s.size()) << "reads exactly its bytes";
  }
  std::string max;
  AppendVarint(~uint64_t{0}, &max);
  EXPECT_EQ(max.size(), 10u);
}

TEST(Varint, TruncatedOrOverlongIsRefused) {
  std::string s;
  AppendVarint(1 << 20, &s);
  const uint8_t* p = Bytes(s);
  uint64_t v = 0;
  EXPECT_FALSE(ReadVarint(&p, Bytes(s) + s.size() - 1, &v));  // last byte missing
  const std::string eleven(11, static_cast<char>(0x80));
  p = Bytes(eleven);
  EXPECT_FALSE(ReadVarint(&p, Bytes(eleven) + eleven.size(), &v));
  p = Bytes(s);
  EXPECT_FALSE(ReadVarint(&p, p, &v));  // nothing to read
}

}  // namespace
}  // namespace cohort
