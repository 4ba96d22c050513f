#include "core/tensorboard.h"

#include <filesystem>
#include <fstream>

#include "core/crc32c.h"
#include "core/file.h"
#include "gtest/gtest.h"
#include "tensorboard/event.pb.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;

TEST(TensorBoardTest, Crc32cKnownValues) {
  // RFC 3720 B.4 and the common "123456789" check value.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  uint32_t crc = Crc32c("123456789");
  EXPECT_EQ(MaskedCrc32c("123456789"), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TensorBoardTest, ScalarsReadBackThroughFramingAndEventProto) {
  std::string dir = ::testing::TempDir() + "/tb_test";
  fs::remove_all(dir);
  std::string path;
  {
    auto w = TensorBoardWriter::Create(dir);
    ASSERT_TRUE(w.ok()) << w.status();
    path = (*w)->path();
    EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
    for (int step = 1; step <= 3; ++step) {
      ASSERT_TRUE((*w)->AddScalars(step, {{"reward/mean", 0.25 * step}, {"eval/accuracy", 0.5}},
                                   1000.0 + step)
                      .ok());
    }
  }
  auto records = ReadRecords(path);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 4u);
  tensorboard::Event first;
  ASSERT_TRUE(first.ParseFromString((*records)[0]));
  EXPECT_EQ(first.file_version(), "brain.Event:2");
  for (int step = 1; step <= 3; ++step) {
    tensorboard::Event e;
    ASSERT_TRUE(e.ParseFromString((*records)[step]));
    EXPECT_EQ(e.step(), step);
    EXPECT_DOUBLE_EQ(e.wall_time(), 1000.0 + step);
    ASSERT_TRUE(e.has_summary());
    ASSERT_EQ(e.summary().value_size(), 2);
    std::map<std::string, float> got;
    for (const auto& v : e.summary().value()) got[v.tag()] = v.simple_value();
    EXPECT_FLOAT_EQ(got["reward/mean"], 0.25f * step);
    EXPECT_FLOAT_EQ(got["eval/accuracy"], 0.5f);
  }

  // A torn tail (writer killed mid-record) is ignored; a flipped bit is not.
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  std::string torn = dir + "/torn";
  ASSERT_TRUE(WriteFileAtomically(torn, bytes->substr(0, bytes->size() - 5)).ok());
  auto partial = ReadRecords(torn);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->size(), 3u);
  std::string flipped = *bytes;
  flipped[flipped.size() - 8] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(torn, flipped).ok());
  EXPECT_EQ(ReadRecords(torn).status().code(), absl::StatusCode::kDataLoss);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort
