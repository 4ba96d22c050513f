#include "actor/weight_client.h"

#include <algorithm>

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

// Assembling into a spare version's buffers: the same bytes, in the very
// buffers lent (no fresh allocation), whatever they held before.
TEST(WeightAssembler, ReusesSpareBuffersWithoutReadingThem) {
  auto base = std::make_shared<const HostWeights>(FakeWeights(2));
  HostWeights w = FakeWeights(3);
  for (const HostWeights* b : {static_cast<const HostWeights*>(nullptr), base.get()}) {
    HostWeights spare = FakeWeights(1);
    std::vector<const char*> lent;
    for (HostTensor& t : spare.tensors) {
      std::fill(t.data.begin(), t.data.end(), '\xAB');  // garbage that must not leak
      lent.push_back(t.data.data());
    }
    WeightAssembler a(3, b == nullptr ? nullptr : base);
    a.ReuseBuffers(std::move(spare));
    for (const v1::WeightChunk& c : ChunkWeights(w, 333, b)) ASSERT_TRUE(a.Add(c).ok());
    EXPECT_EQ(a.reused_bytes(), w.bytes());
    absl::StatusOr<HostWeights> got = a.Finish();
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < w.tensors.size(); ++i) {
      EXPECT_EQ(got->tensors[i].data, w.tensors[i].data) << (b ? "delta" : "full");
      EXPECT_EQ(got->tensors[i].data.data(), lent[i]) << "assembled in the lent buffer";
    }
    EXPECT_EQ(got->crc32c, w.crc32c);
  }
  // A spare of another model (names differ) lends nothing.
  HostWeights other = FakeWeights(1);
  for (HostTensor& t : other.tensors) t.name += ".other";
  WeightAssembler a(3);
  a.ReuseBuffers(std::move(other));
  for (const v1::WeightChunk& c : ChunkWeights(w, 333)) ASSERT_TRUE(a.Add(c).ok());
  EXPECT_EQ(a.reused_bytes(), 0);
  EXPECT_TRUE(a.Finish().ok());
}

// Tensors of many decode slices (64 KiB): chunks that are not a multiple of
// a slice, literals that cross slice boundaries, a dense run longer than a
// slice, changes on the first and last byte of slices and chunks; into a
// reused buffer and into a fresh one, then a second delta into the reused
// buffer of the first.
TEST(WeightAssembler, DeltaAcrossManySlices) {
  auto make = [](int64_t version, uint64_t seed, const HostWeights* from) {
    HostWeights w;
    w.version = version;
    uint64_t r = seed;
    auto next = [&r] { return r = r * 6364136223846793005ull + 1442695040888963407ull; };
    for (size_t t = 0; t < 2; ++t) {
      HostTensor& h = w.tensors.emplace_back();
      h.name = "big." + std::to_string(t);
      h.dtype = v1::DTYPE_BF16;
      const size_t bytes = t == 0 ? 300000 : 150002;
      h.shape = {static_cast<int64_t>(bytes / 2)};
      if (from == nullptr) {
        for (size_t i = 0; i < bytes; ++i) h.data.push_back(static_cast<char>(next() >> 56));
        continue;
      }
      h.data = from->tensors[t].data;
      for (size_t i = next() % 40; i < bytes; i += 1 + next() % 60) h.data[i] ^= 1;
      for (size_t i = 40000; i < 110000 && i < bytes; ++i) h.data[i] ^= 0x5A;  // dense
      for (size_t b = 65536; b < bytes; b += 65536) {
        h.data[b - 1] ^= 2;
        h.data[b] ^= 4;
      }
      h.data[0] ^= 8;
      h.data[bytes - 1] ^= 8;
    }
    std::string all;
    for (const HostTensor& h : w.tensors) all += h.data;
    w.crc32c = Crc32c(all);
    return w;
  };
  auto v1w = std::make_shared<const HostWeights>(make(1, 1, nullptr));
  const HostWeights v2w = make(2, 2, v1w.get());
  const HostWeights v3w = make(3, 3, &v2w);
  for (int64_t chunk : {int64_t{70001}, int64_t{65536}, int64_t{1} << 20}) {
    for (bool reuse : {false, true}) {
      WeightAssembler a(2, v1w);
      if (reuse) a.ReuseBuffers(make(0, 9, nullptr));  // same names and sizes, other bytes
      for (const v1::WeightChunk& c : ChunkWeights(v2w, chunk, v1w.get())) {
        ASSERT_TRUE(a.Add(c).ok()) << chunk;
      }
      absl::StatusOr<HostWeights> got = a.Finish();
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(a.reused_bytes(), reuse ? v2w.bytes() : 0);
      for (size_t t = 0; t < 2; ++t) {
        EXPECT_EQ(got->tensors[t].data, v2w.tensors[t].data) << chunk << " " << reuse;
      }
      // Version 3 against version 2 into version 1's buffers.
      auto base = std::make_shared<const HostWeights>(*std::move(got));
      WeightAssembler b(3, base);
      HostWeights spare = *v1w;
      const char* lent = spare.tensors[0].data.data();
      b.ReuseBuffers(std::move(spare));
      for (const v1::WeightChunk& c : ChunkWeights(v3w, chunk, base.get())) {
        ASSERT_TRUE(b.Add(c).ok()) << chunk;
      }
      absl::StatusOr<HostWeights> third = b.Finish();
      ASSERT_TRUE(third.ok()) << third.status();
      EXPECT_EQ(third->tensors[0].data.data(), lent);
      for (size_t t = 0; t < 2; ++t) EXPECT_EQ(third->tensors[t].data, v3w.tensors[t].data);
    }
  }
}

// The tensor checksum is computed from the decoded bytes themselves, so a
// delta whose payload was altered (and its chunk CRC recomputed to match,
// as a sender bug would), or a base whose bytes changed after it was
// verified, is refused: a CRC derived by linearity from the base's old
// checksum and the delta would have accepted the second.
TEST(WeightAssembler, DecodedBytesAreCheckedNotDerived) {
  auto base = std::make_shared<const HostWeights>(FakeWeights(2));
  HostWeights w = FakeWeights(3);
  const std::vector<v1::WeightChunk> chunks = ChunkWeights(w, 500, base.get());
  ASSERT_TRUE(Assemble(chunks, 3, base).ok());
  // A literal byte of the delta flipped, the chunk CRC made to match.
  std::vector<v1::WeightChunk> bad = chunks;
  bool flipped = false;
  for (v1::WeightChunk& c : bad) {
    if (c.encoding() != v1::WEIGHT_ENCODING_XOR_RLE || c.data().size() < 3) continue;
    std::string& d = *c.mutable_data();
    size_t at = 0;  // past the first run's two varints: its first literal byte
    for (int v = 0; v < 2; ++v) {
      while (static_cast<uint8_t>(d[at]) & 0x80) ++at;
      ++at;
    }
    if (at >= d.size()) continue;
    d[at] ^= 0x01;
    c.set_crc32c(Crc32c(d));
    flipped = true;
    break;
  }
  ASSERT_TRUE(flipped);
  EXPECT_THAT(Assemble(bad, 3, base).status().message(),
              HasSubstr("checksum of the tensor does not match"));
  // The base held changed after it was verified (its recorded CRC unchanged).
  auto changed = std::make_shared<HostWeights>(*base);
  changed->tensors[1].data[7] ^= 0x20;
  EXPECT_EQ(changed->crc32c, base->crc32c);
  EXPECT_THAT(Assemble(chunks, 3, changed).status().message(),
              HasSubstr("checksum of the tensor does not match"));
  // A raw chunk is checked as copied into the tensor.
  std::vector<v1::WeightChunk> raw = ChunkWeights(w, 500);
  (*raw[1].mutable_data())[0] ^= 1;
  EXPECT_THAT(Assemble(raw, 3).status().message(), HasSubstr("checksum mismatch"));
}

TEST(WeightClient, AssemblesIntoTheVersionBeforeLastOnceNoOneHoldsIt) {
  FakeLearner::Options o;
  FakeLearner learner(o);
  MetricsRegistry metrics;
  WeightClient client(&learner, {3, 0, true, &metrics});
  const char* v1_buffer = nullptr;
  {
    auto v1w = client.Fetch(1);
    ASSERT_TRUE(v1w.ok()) << v1w.status();
    v1_buffer = (*v1w)->tensors[0].data.data();
  }  // the caller (the engine) lets version 1 go
  learner.Publish(2);
  auto v2w = client.Fetch(2);  // version 1 is the base: fresh buffers
  ASSERT_TRUE(v2w.ok()) << v2w.status();
  EXPECT_EQ(client.stats().recycled_fetches, 0);
  learner.Publish(3);
  auto v3w = client.Fetch(3);  // version 1, held by no one, lends its buffers
  ASSERT_TRUE(v3w.ok()) << v3w.status();
  EXPECT_EQ(client.stats().recycled_fetches, 1);
  EXPECT_EQ((*v3w)->tensors[0].data.data(), v1_buffer);
  EXPECT_EQ((*v3w)->tensors[0].data, FakeWeights(3).tensors[0].data);
  // Version 2 is still held (v2w, as an engine would): never written into.
  learner.Publish(4);
  auto v4w = client.Fetch(4);
  ASSERT_TRUE(v4w.ok()) << v4w.status();
  EXPECT_EQ(client.stats().recycled_fetches, 1);
  EXPECT_EQ((*v2w)->tensors[0].data, FakeWeights(2).tensors[0].data);
  EXPECT_EQ((*v4w)->tensors[0].data, FakeWeights(4).tensors[0].data);
  // A refused delta hands its buffers to the full stream that follows.
  v3w = absl::StatusOr<std::shared_ptr<const HostWeights>>(nullptr);  // version 3 let go
  learner.Publish(5);
  learner.CorruptNextFetches(1);
  auto v5w = client.Fetch(5);
  ASSERT_TRUE(v5w.ok()) << v5w.status();
  EXPECT_EQ(client.stats().delta_fallbacks, 1);
  EXPECT_EQ(client.stats().recycled_fetches, 2);
  EXPECT_EQ((*v5w)->tensors[2].data, FakeWeights(5).tensors[2].data);
  // With recycling off, nothing is kept beyond the last version.
  WeightClient plain(&learner, {3, 0, true, &metrics, /*recycle_buffers=*/false});
  for (int64_t v : {5, 6, 7}) {
    if (v > 5) learner.Publish(v);
    ASSERT_TRUE(plain.Fetch(v).ok());
  }
  EXPECT_EQ(plain.stats().recycled_fetches, 0);
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
