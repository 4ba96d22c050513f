#include "core/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::safetensors {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("safetensors_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a raw file: 8-byte little-endian length of `header`, `header`,
  // then `data`. `declared_len` overrides the length prefix.
  std::string Raw(const std::string& name, const std::string& header, const std::string& data,
                  int64_t declared_len = -1) {
    uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header;
    bytes += data;
    return RawBytes(name, bytes);
  }
  std::string RawBytes(const std::string& name, const std::string& bytes) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  // Expects File::Open(path) to fail with a message naming the file and
  // containing `problem`.
  void ExpectRefused(const std::string& path, const std::string& problem) {
    auto file = File::Open(path);
    ASSERT_FALSE(file.ok()) << "accepted " << path;
    std::string msg(file.status().message());
    EXPECT_THAT(msg, HasSubstr(path));
    EXPECT_THAT(msg, HasSubstr(problem));
  }

  fs::path dir_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

TEST(DTypeSizeTest, KnownAndUnknown) {
  EXPECT_EQ(DTypeSize("F32"), 4u);
  EXPECT_EQ(DTypeSize("BF16"), 2u);
  EXPECT_EQ(DTypeSize("F16"), 2u);
  EXPECT_EQ(DTypeSize("I64"), 8u);
  EXPECT_EQ(DTypeSize("BOOL"), 1u);
  EXPECT_EQ(DTypeSize("F8_E4M3"), 1u);
  EXPECT_FALSE(DTypeSize("f32").has_value());
  EXPECT_FALSE(DTypeSize("Q4").has_value());
}

TEST_F(SafetensorsTest, RoundTripIsBitExact) {
  auto f32 = RandomBytes(3 * 5 * 4, 1);
  auto bf16 = RandomBytes(7 * 2, 2);
  auto i64 = RandomBytes(2 * 2 * 8, 3);
  auto u8 = RandomBytes(3, 4);
  auto f16 = RandomBytes(4 * 2, 5);
  float scalar = 3.25f;
  std::vector<TensorView> views = {
      {"b.f32", "F32", {3, 5}, f32.data(), f32.size()},
      {"a.bf16", "BF16", {7}, bf16.data(), bf16.size()},
      {"c.i64", "I64", {2, 2}, i64.data(), i64.size()},
      {"d.u8", "U8", {3}, u8.data(), u8.size()},
      {"e.f16", "F16", {1, 4}, f16.data(), f16.size()},
      {"scalar", "F32", {}, &scalar, sizeof(scalar)},
      {"empty", "F32", {0, 3}, nullptr, 0},
  };
  std::string path = (dir_ / "rt.safetensors").string();
  ASSERT_TRUE(WriteFile(path, views, {{"format", "pt"}, {"note", "x"}}).ok());

  auto file = File::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), views.size());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("note"), "x");
  const uint8_t* base = nullptr;
  for (const TensorView& v : views) {
    const TensorInfo* t = (*file)->Find(v.name);
    ASSERT_NE(t, nullptr) << v.name;
    EXPECT_EQ(t->dtype, v.dtype);
    EXPECT_EQ(t->shape, v.shape);
    ASSERT_EQ(t->size_bytes, v.size_bytes);
    if (v.size_bytes > 0) {
      EXPECT_EQ(std::memcmp(t->data, v.data, v.size_bytes), 0) << v.name;
    }
    if (base == nullptr || t->data < base) base = t->data;
  }
  // The data section starts at an 8-byte boundary of the file and every
  // tensor is aligned to its element size.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_NE(bytes.substr(8, n).back(), '\0');
  for (const TensorInfo& t : (*file)->tensors()) {
    size_t off = static_cast<size_t>(t.data - base);
    EXPECT_EQ(off % *DTypeSize(t.dtype), 0u) << t.name;
  }
  // Writing what was read gives the same bytes.
  std::vector<TensorView> again;
  for (const TensorInfo& t : (*file)->tensors()) {
    again.push_back({t.name, t.dtype, t.shape, t.data, t.size_bytes});
  }
  std::string path2 = (dir_ / "rt2.safetensors").string();
  ASSERT_TRUE(WriteFile(path2, again, (*file)->metadata()).ok());
  std::ifstream in2(path2, std::ios::binary);
  std::string bytes2((std::istreambuf_iterator<char>(in2)), {});
  EXPECT_EQ(bytes, bytes2);
}

TEST_F(SafetensorsTest, HeaderIsPaddedWithSpaces) {
  float x = 1.0f;
  auto header = SerializeHeader({{"x", "F32", {1}, &x, 4}}, {});
  ASSERT_TRUE(header.ok());
  EXPECT_EQ((8 + header->size()) % 8, 0u);
  EXPECT_EQ(header->front(), '{');
  auto parsed = ParseHeader(*header, 4);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 1u);
  EXPECT_EQ(parsed->tensors[0].end, 4u);
}

TEST_F(SafetensorsTest, ReadsHandWrittenFile) {
  std::string data(12, '\0');
  float vals[3] = {1.5f, -2.0f, 0.25f};
  std::memcpy(data.data(), vals, 12);
  std::string path = Raw(
      "hand.safetensors",
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
      data);
  auto file = File::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* w = (*file)->Find("w");
  ASSERT_NE(w, nullptr);
  float got[3];
  std::memcpy(got, w->data, 12);
  EXPECT_EQ(got[1], -2.0f);
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST_F(SafetensorsTest, RefusesEmptyAndTruncatedLengthPrefix) {
  ExpectRefused(RawBytes("empty.safetensors", ""), "truncated");
  ExpectRefused(RawBytes("short.safetensors", "\x05\x00\x00"), "truncated");
}

TEST_F(SafetensorsTest, RefusesHeaderLengthBeyondFileSize) {
  ExpectRefused(Raw("long.safetensors", "{}", "", 1000), "header length 1000 beyond file size");
  ExpectRefused(Raw("huge.safetensors", "{}", "", int64_t{1} << 40), "exceeds the limit");
}

TEST_F(SafetensorsTest, RefusesHeaderNotJson) {
  ExpectRefused(Raw("nj.safetensors", "{\"a\": [1, 2", ""), "header is not valid JSON");
  ExpectRefused(Raw("bin.safetensors", std::string("\xff\xfe{}", 4), ""),
                "header is not valid JSON");
}

TEST_F(SafetensorsTest, RefusesHeaderNotObject) {
  ExpectRefused(Raw("arr.safetensors", "[1,2,3]", ""), "header is not a JSON object");
  ExpectRefused(Raw("str.safetensors", "\"x\"", ""), "header is not a JSON object");
}

TEST_F(SafetensorsTest, RefusesBadDtype) {
  ExpectRefused(Raw("dt.safetensors", R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})",
                    std::string(2, '\0')),
                "tensor 'w': unknown dtype 'Q4'");
  ExpectRefused(Raw("dt2.safetensors", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                    std::string(8, '\0')),
                "\"dtype\" is not a string");
}

TEST_F(SafetensorsTest, RefusesShapeSizeMismatch) {
  ExpectRefused(
      Raw("mm.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
          std::string(24, '\0')),
      "shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20) span 20");
  ExpectRefused(Raw("neg.safetensors", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                    std::string(4, '\0')),
                "expected non-negative integers");
  ExpectRefused(Raw("ovf.safetensors",
                    R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                    std::string(4, '\0')),
                "overflows");
  ExpectRefused(Raw("noshape.safetensors", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})",
                    std::string(4, '\0')),
                "missing \"shape\"");
}

TEST_F(SafetensorsTest, RefusesOffsetsOutsideDataSection) {
  ExpectRefused(Raw("out.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                    std::string(12, '\0')),
                "outside the data section of 12 bytes");
  ExpectRefused(Raw("rev.safetensors", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})",
                    std::string(12, '\0')),
                "end before begin");
  ExpectRefused(
      Raw("three.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})",
          std::string(12, '\0')),
      "expected [begin, end]");
}

TEST_F(SafetensorsTest, RefusesOverlappingOffsets) {
  ExpectRefused(Raw("ov.safetensors",
                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(12, '\0')),
                "overlapping data_offsets: tensor 'a' [0, 8) and tensor 'b' [4, 12)");
}

TEST_F(SafetensorsTest, RefusesDuplicateNames) {
  ExpectRefused(Raw("dup.safetensors",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    std::string(8, '\0')),
                "duplicate tensor name 'a'");
}

TEST_F(SafetensorsTest, RefusesBadMetadata) {
  ExpectRefused(Raw("meta.safetensors", R"({"__metadata__":{"format":1}})", ""),
                "\"__metadata__\" value of 'format' is not a string");
  ExpectRefused(Raw("meta2.safetensors", R"({"__metadata__":[]})", ""),
                "\"__metadata__\" is not a JSON object");
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto file = File::Open((dir_ / "nope.safetensors").string());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, WriterRefusesInconsistentViews) {
  float x[2] = {1, 2};
  std::string path = (dir_ / "w.safetensors").string();
  EXPECT_THAT(std::string(WriteFile(path, {{"x", "F32", {3}, x, 8}}).message()),
              HasSubstr("does not match 8 bytes"));
  EXPECT_THAT(
      std::string(WriteFile(path, {{"x", "F32", {2}, x, 8}, {"x", "F32", {2}, x, 8}}).message()),
      HasSubstr("duplicate tensor name 'x'"));
  EXPECT_THAT(std::string(WriteFile(path, {{"x", "F31", {2}, x, 8}}).message()),
              HasSubstr("unknown dtype 'F31'"));
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(SafetensorsTest, ShardedWriteAndRead) {
  std::vector<std::vector<uint8_t>> blobs;
  std::vector<TensorView> views;
  for (int i = 0; i < 5; ++i) blobs.push_back(RandomBytes(400, 10 + i));
  for (int i = 0; i < 5; ++i) {
    views.push_back({"t" + std::to_string(i), "F32", {10, 10}, blobs[i].data(), 400});
  }
  auto written = WriteSharded(dir_.string(), views, 1000);
  ASSERT_TRUE(written.ok()) << written.status();
  // 400-byte tensors under a 1000-byte limit: two per shard.
  EXPECT_THAT(*written, ::testing::ElementsAre(
                            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                            "model-00003-of-00003.safetensors", "model.safetensors.index.json"));
  std::ifstream in(dir_ / "model.safetensors.index.json");
  auto index = nlohmann::json::parse(in);
  EXPECT_EQ(index["metadata"]["total_size"], 2000);
  EXPECT_EQ(index["weight_map"]["t4"], "model-00003-of-00003.safetensors");

  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), 3u);
  ASSERT_EQ((*ckpt)->tensors().size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const TensorInfo* t = (*ckpt)->Find("t" + std::to_string(i));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(std::memcmp(t->data, blobs[i].data(), 400), 0);
  }
}

TEST_F(SafetensorsTest, UnshardedWhenUnderTheLimit) {
  float x[4] = {1, 2, 3, 4};
  auto written = WriteSharded(dir_.string(), {{"x", "F32", {4}, x, 16}});
  ASSERT_TRUE(written.ok());
  EXPECT_THAT(*written, ::testing::ElementsAre("model.safetensors"));
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_NE((*ckpt)->Find("x"), nullptr);
  // A file path works too.
  auto single = Checkpoint::Open((dir_ / "model.safetensors").string());
  ASSERT_TRUE(single.ok());
}

TEST_F(SafetensorsTest, IndexAndShardsMustAgree) {
  float x[1] = {1};
  ASSERT_TRUE(WriteFile((dir_ / "s1.safetensors").string(), {{"a", "F32", {1}, x, 4}}).ok());
  auto write_index = [&](const std::string& text) {
    std::ofstream(dir_ / "model.safetensors.index.json") << text;
  };
  write_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})");
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("weight_map puts tensor 'b' in 's1.safetensors', which does not hold it"));

  write_index(R"({"weight_map": {}})");
  write_index(R"({"weight_map": {"c": "s1.safetensors"}})");
  ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("tensor 'a' of shard 's1.safetensors' is not in the weight_map"));

  write_index(R"({"weight_map": {"a": "../s1.safetensors"}})");
  ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("not a file name"));

  write_index(R"({"metadata": {}})");
  ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("missing \"weight_map\""));

  write_index(R"({"weight_map": {"a": "missing.safetensors"}})");
  ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("missing.safetensors"));
}

TEST_F(SafetensorsTest, EmptyDirectoryIsNotFound) {
  auto ckpt = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("neither model.safetensors"));
}

}  // namespace
}  // namespace cohort::safetensors
