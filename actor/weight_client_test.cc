#include "actor/weight_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "actor/testing/fakes.h"
#include "core/crc32c.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;
using testing::ChunkWeights;
using testing::FakeLearner;
using testing::FakeWeights;
using ::testing::HasSubstr;

absl::StatusOr<HostWeights> Assemble(const std::vector<v1::WeightChunk>& chunks, int64_t version,
                                     std::shared_ptr<const HostWeights> base = nullptr) {
  WeightAssembler a(version, std::move(base));
  for (const v1::WeightChunk& c : chunks) {
    absl::Status s = a.Add(c);
    if (!s.ok()) return s;
  }
  return a.Finish();
}

TEST(WeightAssembler, FullStreamRoundTrips) {
  HostWeights w = FakeWeights(3);
  absl::StatusOr<HostWeights> got = Assemble(ChunkWeights(w, 333), 3);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->tensors.size(), w.tensors.size());
  for (size_t i = 0; i < w.tensors.size(); ++i) {
    EXPECT_EQ(got->tensors[i].name, w.tensors[i].name);
    EXPECT_EQ(got->tensors[i].data, w.tensors[i].data);
  }
  EXPECT_EQ(got->crc32c, w.crc32c);
}

TEST(WeightAssembler, DeltaStreamDecodesAgainstBase) {
  auto base = std::make_shared<const HostWeights>(FakeWeights(2));
  HostWeights w = FakeWeights(3);
  std::vector<v1::WeightChunk> chunks = ChunkWeights(w, 500, base.get());
  int64_t payload = 0;
  for (const auto& c : chunks) payload += static_cast<int64_t>(c.data().size());
  EXPECT_LT(payload, w.bytes() / 10) << "a delta of a few elements is small";
  absl::StatusOr<HostWeights> got = Assemble(chunks, 3, base);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < w.tensors.size(); ++i) EXPECT_EQ(got->tensors[i].data, w.tensors[i].data);
  // Against the wrong base the per-tensor checksum catches it.
  auto wrong = std::make_shared<HostWeights>(FakeWeights(1));
  wrong->version = 2;
  absl::StatusOr<HostWeights> bad = Assemble(chunks, 3, wrong);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  // Without a base a delta is refused.
  EXPECT_EQ(Assemble(chunks, 3).status().code(), absl::StatusCode::kDataLoss);
  // An empty run (0 zeros, 0 literals) is refused, not looped on.
  for (v1::WeightChunk& c : chunks) {
    if (c.encoding() != v1::WEIGHT_ENCODING_XOR_RLE) continue;
    c.set_data(std::string("\x00\x00", 2));
    c.set_crc32c(Crc32c(c.data()));
    break;
  }
  EXPECT_THAT(Assemble(chunks, 3, base).status().message(), HasSubstr("malformed XOR_RLE"));
}

// A stream whose tensors carry no tensor_last still gets its version
// checksum (combined per complete tensor) checked.
TEST(WeightAssembler, VersionChecksumCoversEveryTensor) {
  HostWeights w = FakeWeights(4);
  std::vector<v1::WeightChunk> chunks = ChunkWeights(w, 100);
  for (v1::WeightChunk& c : chunks) {
    if (!c.last()) c.set_tensor_last(false);
  }
  absl::StatusOr<HostWeights> got = Assemble(chunks, 4);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->crc32c, w.crc32c);
  chunks.back().set_version_crc32c(w.crc32c ^ 1);
  EXPECT_THAT(Assemble(chunks, 4).status().message(), HasSubstr("whole version"));
}

TEST(WeightAssembler, RefusesEveryKindOfDamage) {
  HostWeights w = FakeWeights(1);
  const std::vector<v1::WeightChunk> good = ChunkWeights(w, 1000);
  auto damaged = [&](auto mutate) {
    std::vector<v1::WeightChunk> c = good;
    mutate(c);
    return Assemble(c, 1).status();
  };
  EXPECT_THAT(damaged([](auto& c) { (*c[1].mutable_data())[5] ^= 1; }).message(),
              HasSubstr("checksum mismatch in w.0"));
  EXPECT_THAT(damaged([](auto& c) {
                c.back().set_version_crc32c(c.back().version_crc32c() + 1);
              }).message(),
              HasSubstr("whole version"));
  EXPECT_THAT(damaged([](auto& c) { c.erase(c.begin() + 1); }).message(), HasSubstr("w.0"));
  EXPECT_THAT(damaged([](auto& c) { c.pop_back(); }).message(), HasSubstr("without its last"));
  EXPECT_THAT(damaged([](auto& c) { c[0].set_tensor_bytes(12); }).message(),
              HasSubstr("tensor_bytes"));
  EXPECT_THAT(damaged([](auto& c) { c[2].set_version(9); }).message(), HasSubstr("version 9"));
  EXPECT_THAT(damaged([](auto& c) {
                c[0].set_tensor_crc32c(1);
                c[0].set_tensor_last(true);
              }).message(),
              HasSubstr("tensor_last"));
  EXPECT_EQ(Assemble(good, 2).status().code(), absl::StatusCode::kDataLoss) << "wrong version";
}

TEST(WeightClient, FetchesDeltasAndFallsBackOnCorruption) {
  FakeLearner::Options o;
  FakeLearner learner(o);
  MetricsRegistry metrics;
  WeightClient client(&learner, {3, 0, true, &metrics});
  auto v1w = client.Fetch(1);
  ASSERT_TRUE(v1w.ok()) << v1w.status();
  learner.Publish(2);
  auto v2w = client.Fetch(2);
  ASSERT_TRUE(v2w.ok()) << v2w.status();
  EXPECT_EQ((*v2w)->version, 2);
  EXPECT_EQ((*v2w)->tensors[0].data, FakeWeights(2).tensors[0].data);
  EXPECT_EQ(learner.delta_fetches(), 1);
  EXPECT_EQ(client.stats().delta_fetches, 1);
  // A corrupted stream is refused and fetched again; never returned.
  learner.Publish(3);
  learner.CorruptNextFetches(1);
  auto v3w = client.Fetch(3);
  ASSERT_TRUE(v3w.ok()) << v3w.status();
  EXPECT_EQ((*v3w)->tensors[1].data, FakeWeights(3).tensors[1].data);
  EXPECT_EQ(client.stats().checksum_failures, 1);
  EXPECT_EQ(client.stats().delta_fallbacks, 1);
  // Corrupted every time: an error, no weights.
  learner.Publish(4);
  learner.CorruptNextFetches(10);
  auto v4w = client.Fetch(4);
  EXPECT_EQ(v4w.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(client.last()->version, 3);
  EXPECT_EQ(client.Fetch(9).status().code(), absl::StatusCode::kNotFound);
  // Exactly version 0 (the initial weights), not the latest.
  learner.CorruptNextFetches(0);
  auto v0 = client.Fetch(0, /*exact=*/true);
  ASSERT_TRUE(v0.ok()) << v0.status();
  EXPECT_EQ((*v0)->version, 0);
  EXPECT_EQ((*client.Fetch(0))->version, 4) << "0 without exact is the latest";
  EXPECT_THAT(metrics.Render(),
              HasSubstr("cohort_actor_weight_fetches_total{result=\"checksum\"}"));
}

}  // namespace
}  // namespace cohort::actor
