#include "learner/weight_store.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"

#include "core/crc32c.h"

namespace cohort::learner {
namespace {

WeightTensor Tensor(const std::string& name, const std::vector<uint8_t>& bytes) {
  WeightTensor t;
  t.name = name;
  t.dtype = WeightDType::kBF16;
  t.shape = {static_cast<int64_t>(bytes.size() / 2)};
  auto data = AllocateWeightBytes(bytes.size());
  std::memcpy(data.get(), bytes.data(), bytes.size());
  t.data = data;
  t.size = static_cast<int64_t>(bytes.size());
  return t;
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST(XorRleTest, RoundTripsRandomDiffs) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    size_t n = rng() % 300;
    std::vector<uint8_t> base = RandomBytes(rng, n), next = base;
    int changes = static_cast<int>(rng() % 40);
    for (int c = 0; c < changes && n > 0; ++c)
      next[rng() % n] ^= static_cast<uint8_t>(1 + rng() % 255);
    std::string enc;
    XorRleEncodeDiff(next.data(), base.data(), static_cast<int64_t>(n), &enc);
    std::vector<uint8_t> out = base;
    ASSERT_TRUE(XorRleApply(enc, out.data(), static_cast<int64_t>(n)).ok()) << trial;
    ASSERT_EQ(out, next) << trial;
  }
}

// The byte-at-a-time definition of the encoding: a literal ends where at
// least 4 equal bytes (or the end) follow.
std::string ReferenceEncode(const std::vector<uint8_t>& next, const std::vector<uint8_t>& base) {
  std::string out;
  auto varint = [&](uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  };
  const size_t n = next.size();
  size_t i = 0;
  while (i < n) {
    size_t zero = 0;
    while (i < n && next[i] == base[i]) ++i, ++zero;
    const size_t start = i;
    while (i < n) {
      if (next[i] != base[i]) {
        ++i;
        continue;
      }
      size_t run = 0;
      while (i + run < n && run < 4 && next[i + run] == base[i + run]) ++run;
      if (run >= 4 || i + run == n) break;
      i += run;
    }
    varint(zero);
    varint(i - start);
    for (size_t k = start; k < i; ++k) out.push_back(static_cast<char>(next[k] ^ base[k]));
  }
  return out;
}

TEST(XorRleTest, WordAtATimeEncoderMatchesTheByteDefinition) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t n = rng() % 200;
    std::vector<uint8_t> base = RandomBytes(rng, n), next = base;
    // Changes with gaps of 0..7 equal bytes, so literals hold short runs.
    size_t at = rng() % 8;
    while (at < n) {
      next[at] ^= static_cast<uint8_t>(1 + rng() % 255);
      at += 1 + rng() % (trial % 2 == 0 ? 8 : 40);
    }
    std::string enc;
    XorRleEncodeDiff(next.data(), base.data(), static_cast<int64_t>(n), &enc);
    ASSERT_EQ(enc, ReferenceEncode(next, base)) << trial;
  }
}

// Long ranges: sparse bf16-like changes, dense runs longer than the
// encoder's word steps, short equal gaps, 1-3 equal bytes at the end. The
// encoder and the byte definition agree, and the encoding decodes back.
TEST(XorRleTest, EncoderMatchesTheByteDefinitionOnLongRanges) {
  std::mt19937_64 rng(13);
  for (int trial = 0; trial < 600; ++trial) {
    const size_t n = rng() % 3000;
    std::vector<uint8_t> base = RandomBytes(rng, n), next = base;
    const int kind = trial % 4;
    size_t at = rng() % 70;
    while (at < n) {
      const size_t len = kind == 1 ? 1 + rng() % 150 : 1 + rng() % 2;
      for (size_t k = at; k < std::min(n, at + len); ++k) {
        next[k] ^= static_cast<uint8_t>(1 + rng() % 255);
      }
      const size_t gap = kind == 0 ? rng() % 90 : kind == 2 ? rng() % 6 : rng() % 200;
      at += len + gap;
    }
    if (kind == 3 && n > 4) {
      const size_t tail = 1 + rng() % 3;  // the last differing byte, then tail equal bytes
      next[n - 1 - tail] ^= 0x5A;
    }
    std::string enc;
    XorRleEncodeDiff(next.data(), base.data(), static_cast<int64_t>(n), &enc);
    ASSERT_EQ(enc, ReferenceEncode(next, base)) << trial;
    std::vector<uint8_t> out = base;
    ASSERT_TRUE(XorRleApply(enc, out.data(), static_cast<int64_t>(n)).ok()) << trial;
    ASSERT_EQ(out, next) << trial;
  }
  // Appends to what the string holds.
  std::vector<uint8_t> a(100, 1), b(100, 1);
  b[50] = 2;
  std::string enc = "prefix";
  XorRleEncodeDiff(b.data(), a.data(), 100, &enc);
  EXPECT_EQ(enc.substr(0, 6), "prefix");
  EXPECT_EQ(enc.substr(6), ReferenceEncode(b, a));
}

TEST(XorRleTest, SparseDiffIsSmallAndGarbageIsRefused) {
  std::vector<uint8_t> base(1 << 16, 3), next = base;
  next[100] ^= 1;
  next[60000] ^= 2;
  std::string enc;
  XorRleEncodeDiff(next.data(), base.data(), static_cast<int64_t>(base.size()), &enc);
  EXPECT_LT(enc.size(), 16u);
  std::vector<uint8_t> out = base;
  EXPECT_FALSE(XorRleApply(enc, out.data(), 1000).ok());  // wrong length
  EXPECT_FALSE(
      XorRleApply(enc.substr(0, enc.size() - 1), out.data(), static_cast<int64_t>(out.size()))
          .ok());
  EXPECT_FALSE(XorRleApply(std::string("\x00\x00", 2), out.data(), 4).ok());
}

TEST(WeightStoreTest, ChecksumsDeltasAndKeep) {
  WeightStore store({.keep_versions = 2, .chunk_bytes = 64});
  std::mt19937_64 rng(1);
  std::vector<uint8_t> a = RandomBytes(rng, 1000), b = RandomBytes(rng, 30);
  WeightSnapshot s0;
  // Out of name order on purpose: the store streams sorted by name.
  s0.tensors = {Tensor("z.weight", a), Tensor("a.bias", b)};
  ASSERT_TRUE(store.Publish(0, s0).ok());
  std::vector<uint8_t> a1 = a;
  a1[5] ^= 0x40;
  a1[900] ^= 0x01;
  std::vector<uint8_t> b1 = RandomBytes(rng, 30);  // dense change: raw
  WeightSnapshot s1;
  s1.tensors = {Tensor("a.bias", b1), Tensor("z.weight", a1)};
  ASSERT_TRUE(store.Publish(1, s1).ok());
  EXPECT_FALSE(store.Publish(1, s1).ok());
  ASSERT_TRUE(store.WaitPublished(1, absl::Seconds(10)));

  auto v1 = store.Get(1);
  ASSERT_NE(v1, nullptr);
  ASSERT_EQ(v1->weights.tensors[0].name, "a.bias");
  std::string all(b1.begin(), b1.end());
  all.append(a1.begin(), a1.end());
  EXPECT_EQ(v1->version_crc32c, Crc32c(all));
  EXPECT_EQ(v1->tensor_crc32c[1], Crc32c(a1.data(), a1.size()));
  EXPECT_EQ(v1->full.size(), 1u + 16u);  // 30 bytes; 1000 / 64 rounded up
  EXPECT_EQ(v1->delta_base, 0);
  EXPECT_LT(v1->delta_bytes, v1->full_bytes / 2);

  // Applying the delta chunks to version 0 gives version 1 exactly.
  auto v0 = store.Get(0);
  std::vector<std::vector<uint8_t>> rebuilt;
  for (const auto& t : v0->weights.tensors) {
    rebuilt.emplace_back(t.data.get(), t.data.get() + t.size);
  }
  bool saw_raw = false, saw_delta = false;
  for (const ChunkRef& c : v1->Plan(true, 0, 0)) {
    EXPECT_EQ(c.crc32c, Crc32c(c.data, c.size));
    auto& dst = rebuilt[c.tensor_index];
    if (c.delta) {
      saw_delta = true;
      ASSERT_TRUE(XorRleApply(std::string_view(reinterpret_cast<const char*>(c.data), c.size),
                              dst.data() + c.offset, c.decoded_bytes)
                      .ok());
    } else {
      saw_raw = true;
      std::memcpy(dst.data() + c.offset, c.data, c.size);
    }
  }
  EXPECT_TRUE(saw_raw);
  EXPECT_TRUE(saw_delta);
  EXPECT_EQ(rebuilt[0], b1);
  EXPECT_EQ(rebuilt[1], a1);
  // No delta from a version it was not computed against: full stream.
  EXPECT_EQ(v1->Plan(true, 5, 0).size(), v1->full.size());
  // Another chunk size: re-cut with fresh CRCs.
  std::vector<ChunkRef> big = v1->Plan(false, 0, 512);
  EXPECT_EQ(big.size(), 3u);
  EXPECT_TRUE(big.back().tensor_last);

  // keep_versions = 2: version 0 goes when 2 arrives.
  ASSERT_TRUE(store.Publish(2, s1).ok());
  ASSERT_TRUE(store.WaitPublished(2, absl::Seconds(10)));
  EXPECT_EQ(store.kept_versions(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(store.Get(0), nullptr);
  EXPECT_LT(store.Get(2)->delta_bytes, 40);  // identical: one 2-byte run per chunk
  // A stream in progress keeps its version alive.
  EXPECT_EQ(v0->weights.tensors.size(), 2u);
}

// Chunks of several CRC/encoding slices (256 KiB): every full chunk's CRC
// is its bytes', also where the encoding gave up part-way (a dense change
// after a sparse one) and the CRC went on alone; the delta rebuilds it.
TEST(WeightStoreTest, ChunkChecksumsSpanSlices) {
  WeightStore store({.keep_versions = 2, .chunk_bytes = 2 << 20});
  std::mt19937_64 rng(3);
  const size_t n = (5 << 20) + 1234;  // 5 MiB + a bit: 3 chunks, the last partial
  std::vector<uint8_t> w0 = RandomBytes(rng, n), x0 = RandomBytes(rng, n);
  WeightSnapshot s0;
  s0.tensors = {Tensor("w", w0), Tensor("x", x0)};
  ASSERT_TRUE(store.Publish(0, s0).ok());
  std::vector<uint8_t> w1 = w0, x1 = x0;
  for (size_t i = 0; i < n; i += 97) w1[i] ^= 1;  // sparse: a delta
  for (size_t i = 0; i < n; i += 89) x1[i] ^= 2;
  // Dense over most of chunk 1: its encoding gives up at its 7th slice of 8.
  for (size_t i = 2 << 20; i < (2 << 20) + (1900 << 10); ++i) x1[i] ^= 0x33;
  WeightSnapshot s1;
  s1.tensors = {Tensor("w", w1), Tensor("x", x1)};
  ASSERT_TRUE(store.Publish(1, s1).ok());
  ASSERT_TRUE(store.WaitPublished(1, absl::Seconds(30)));
  auto v1 = store.Get(1);
  ASSERT_EQ(v1->full.size(), 6u);
  const std::vector<uint8_t>* bytes[2] = {&w1, &x1};
  for (const ChunkRef& c : v1->full) {
    EXPECT_EQ(c.crc32c, Crc32c(bytes[c.tensor_index]->data() + c.offset, c.size)) << c.offset;
  }
  EXPECT_EQ(v1->tensor_crc32c[0], Crc32c(w1.data(), n));
  EXPECT_EQ(v1->tensor_crc32c[1], Crc32c(x1.data(), n));
  std::vector<uint8_t> rebuilt[2] = {w0, x0};
  int raw = 0, delta = 0;
  for (const ChunkRef& c : v1->Plan(true, 0, 0)) {
    EXPECT_EQ(c.crc32c, Crc32c(c.data, c.size));
    std::vector<uint8_t>& dst = rebuilt[c.tensor_index];
    if (c.delta) {
      ++delta;
      ASSERT_TRUE(XorRleApply(std::string_view(reinterpret_cast<const char*>(c.data), c.size),
                              dst.data() + c.offset, c.decoded_bytes)
                      .ok());
    } else {
      ++raw;
      EXPECT_EQ(c.tensor_index, 1);
      std::memcpy(dst.data() + c.offset, c.data, c.size);
    }
  }
  EXPECT_EQ(delta, 3);
  EXPECT_EQ(raw, 3) << "one dense chunk sends its whole tensor raw";
  EXPECT_EQ(rebuilt[0], w1);
  EXPECT_EQ(rebuilt[1], x1);
}

TEST(WeightStoreTest, RefusesMisSizedTensor) {
  WeightStore store({});
  WeightSnapshot s;
  s.tensors = {Tensor("x", std::vector<uint8_t>(10))};
  s.tensors[0].shape = {6};
  absl::Status st = store.Publish(0, s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tensor x"), std::string::npos);
}

TEST(WeightStoreTest, ReadersNeverBlockPublishing) {
  WeightStore store({.keep_versions = 2, .chunk_bytes = 4096});
  std::mt19937_64 rng(3);
  std::vector<uint8_t> bytes = RandomBytes(rng, 1 << 20);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> verified{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&] {
      while (!stop) {
        auto v = store.Latest();
        if (v == nullptr) continue;
        uint32_t crc = 0;
        for (const ChunkRef& c : v->full) {
          if (Crc32c(c.data, c.size) != c.crc32c) std::abort();
          crc = Crc32cExtend(crc, c.data, c.size);
        }
        if (crc != v->version_crc32c) std::abort();
        ++verified;
      }
    });
  }
  for (int64_t version = 0; version < 20; ++version) {
    bytes[rng() % bytes.size()] ^= 1;
    WeightSnapshot s;
    s.tensors = {Tensor("w", bytes)};
    absl::Time t0 = absl::Now();
    ASSERT_TRUE(store.Publish(version, std::move(s)).ok());
    EXPECT_LT(absl::Now() - t0, absl::Seconds(1));  // Publish only queues
    ASSERT_TRUE(store.WaitPublished(version, absl::Seconds(30)));
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_GT(verified.load(), 0);
  EXPECT_EQ(store.latest_version(), 19);
}

// Holds a build at a chunk: before_chunk blocks version `version`'s workers
// at chunk `at` until Release().
class BuildGate {
 public:
  BuildGate(int64_t version, int64_t at) : version_(version), at_(at) {}
  std::function<void(int64_t, int64_t)> Hook() {
    return [this](int64_t version, int64_t chunk) {
      if (version != version_ || chunk < at_) return;
      absl::MutexLock lock(&mu_);
      reached_ = true;
      mu_.Await(absl::Condition(&released_));
    };
  }
  void WaitReached() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&reached_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  const int64_t version_, at_;
  absl::Mutex mu_;
  bool reached_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

// Tensors t0..t7 of 4 chunks each (256 B, chunks of 64 B); version 1
// changes a few bytes of each, so every tensor goes as a delta.
WeightSnapshot EightTensors(std::mt19937_64& rng, std::vector<std::vector<uint8_t>>* bytes,
                            bool change) {
  if (bytes->empty()) {
    for (int t = 0; t < 8; ++t) bytes->push_back(RandomBytes(rng, 256));
  }
  WeightSnapshot s;
  for (int t = 0; t < 8; ++t) {
    if (change) (*bytes)[t][rng() % 256] ^= 0x10;
    s.tensors.push_back(Tensor("t" + std::to_string(t), (*bytes)[t]));
  }
  return s;
}

// A version is streamable from Publish() on, tensor by tensor as its build
// finishes them; it is not Get()-able, complete() or sendable to its end
// until the build is done and the version is visible.
TEST(WeightStoreTest, StreamsAVersionWhileItIsBuilt) {
  BuildGate gate(/*version=*/1, /*at=*/13);  // tensors 0-2 finish (chunks 0-11), 3 does not
  WeightStore store(
      {.keep_versions = 2, .chunk_bytes = 64, .threads = 1, .before_chunk = gate.Hook()});
  std::mt19937_64 rng(5);
  std::vector<std::vector<uint8_t>> bytes;
  ASSERT_TRUE(store.Publish(0, EightTensors(rng, &bytes, false)).ok());
  ASSERT_TRUE(store.WaitPublished(0, absl::Seconds(10)));
  std::vector<std::vector<uint8_t>> base = bytes;
  ASSERT_TRUE(store.Publish(1, EightTensors(rng, &bytes, true)).ok());
  std::shared_ptr<const PublishedVersion> v = store.GetPublished(1);
  ASSERT_NE(v, nullptr);  // at once, before its build started or finished
  EXPECT_EQ(store.latest_published_version(), 1);
  gate.WaitReached();
  EXPECT_EQ(store.Get(1), nullptr);
  EXPECT_EQ(store.latest_version(), 0);
  EXPECT_FALSE(store.WaitPublished(1, absl::Milliseconds(50)));
  EXPECT_FALSE(v->complete());
  EXPECT_EQ(v->ready_tensors(), 3);
  EXPECT_EQ(v->delta_base, 0);
  EXPECT_TRUE(v->WhenReady(2, [] { std::abort(); }));  // ready: not called
  EXPECT_FALSE(v->WaitReady(3, absl::Milliseconds(50)));
  // A reader that arrives mid-build: the ready tensors are final now.
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(v->tensor_crc32c[t], Crc32c(bytes[t].data(), bytes[t].size()));
    std::vector<uint8_t> rebuilt = base[t];
    for (size_t i = v->first_chunk[t]; i < v->first_chunk[t + 1]; ++i) {
      const ChunkRef& c = v->delta[i];
      ASSERT_TRUE(c.delta);
      EXPECT_EQ(c.crc32c, Crc32c(c.data, c.size));
      EXPECT_EQ(v->full[i].crc32c, Crc32c(v->full[i].data, v->full[i].size));
      ASSERT_TRUE(XorRleApply(std::string_view(reinterpret_cast<const char*>(c.data), c.size),
                              rebuilt.data() + c.offset, c.decoded_bytes)
                      .ok());
    }
    EXPECT_EQ(rebuilt, bytes[t]);
  }
  // Callbacks for later tensors run once each, when their tensor is final;
  // the last tensor's only once the version is visible.
  std::atomic<int> called[8] = {};
  std::atomic<bool> last_saw_visible{false};
  for (int32_t t = 3; t < 8; ++t) {
    EXPECT_FALSE(v->WhenReady(t, [&, t] {
      called[t]++;
      if (v->ready_tensors() <= t) std::abort();
      if (t == 7) last_saw_visible = store.Get(1) != nullptr && v->complete();
    }));
  }
  for (int t = 3; t < 8; ++t) EXPECT_EQ(called[t].load(), 0);
  gate.Release();
  ASSERT_TRUE(store.WaitPublished(1, absl::Seconds(10)));
  EXPECT_TRUE(v->complete());
  // The callbacks run right after the tensors are marked ready.
  for (int i = 0; i < 1000 && called[7].load() == 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  for (int t = 3; t < 8; ++t) EXPECT_EQ(called[t].load(), 1) << t;
  EXPECT_TRUE(last_saw_visible.load());
  EXPECT_EQ(store.Get(1), v);
  std::string all;
  for (const auto& b : bytes) all.append(b.begin(), b.end());
  EXPECT_EQ(v->version_crc32c, Crc32c(all));
  int64_t delta_bytes = 0;
  for (const ChunkRef& c : v->delta) delta_bytes += c.size;
  EXPECT_EQ(v->delta_bytes, delta_bytes);
}

// Versions queued behind one being built are streamable too, each with its
// delta against the one published before it.
TEST(WeightStoreTest, QueuedVersionsAreStreamableInOrder) {
  BuildGate gate(/*version=*/1, /*at=*/0);
  WeightStore store({.keep_versions = 3, .chunk_bytes = 64, .before_chunk = gate.Hook()});
  std::mt19937_64 rng(6);
  std::vector<std::vector<uint8_t>> bytes;
  ASSERT_TRUE(store.Publish(0, EightTensors(rng, &bytes, false)).ok());
  ASSERT_TRUE(store.Publish(1, EightTensors(rng, &bytes, true)).ok());
  ASSERT_TRUE(store.Publish(2, EightTensors(rng, &bytes, true)).ok());
  gate.WaitReached();
  auto v2 = store.GetPublished(2);
  ASSERT_NE(v2, nullptr);
  EXPECT_EQ(v2->delta_base, 1);
  EXPECT_EQ(v2->ready_tensors(), 0);
  EXPECT_EQ(store.GetPublished(3), nullptr);
  gate.Release();
  ASSERT_TRUE(store.WaitPublished(2, absl::Seconds(10)));
  EXPECT_TRUE(v2->complete());
  EXPECT_EQ(store.kept_versions(), (std::vector<int64_t>{0, 1, 2}));
}

// keep_versions drops a version from the store, not from under a reader:
// a stream holding it reads every chunk intact after it was dropped.
TEST(WeightStoreTest, EvictionDuringAStreamKeepsItsVersion) {
  WeightStore store({.keep_versions = 1, .chunk_bytes = 64});
  std::mt19937_64 rng(7);
  std::vector<std::vector<uint8_t>> bytes;
  ASSERT_TRUE(store.Publish(0, EightTensors(rng, &bytes, false)).ok());
  ASSERT_TRUE(store.WaitPublished(0, absl::Seconds(10)));
  std::shared_ptr<const PublishedVersion> streaming = store.GetPublished(0);
  const std::vector<std::vector<uint8_t>> v0 = bytes;
  // Half the stream, then two newer versions evict it.
  uint32_t crc = 0;
  const size_t half = streaming->full.size() / 2;
  for (size_t i = 0; i < half; ++i) {
    const ChunkRef& c = streaming->full[i];
    ASSERT_EQ(Crc32c(c.data, c.size), c.crc32c);
    crc = Crc32cExtend(crc, c.data, c.size);
  }
  for (int64_t version = 1; version <= 2; ++version) {
    ASSERT_TRUE(store.Publish(version, EightTensors(rng, &bytes, true)).ok());
    ASSERT_TRUE(store.WaitPublished(version, absl::Seconds(10)));
  }
  EXPECT_EQ(store.kept_versions(), std::vector<int64_t>{2});
  EXPECT_EQ(store.Get(0), nullptr);
  EXPECT_EQ(store.GetPublished(0), nullptr);
  for (size_t i = half; i < streaming->full.size(); ++i) {
    const ChunkRef& c = streaming->full[i];
    ASSERT_EQ(Crc32c(c.data, c.size), c.crc32c);
    EXPECT_EQ(std::memcmp(c.data, v0[c.tensor_index].data() + c.offset, c.size), 0);
    crc = Crc32cExtend(crc, c.data, c.size);
  }
  EXPECT_EQ(crc, streaming->version_crc32c);
}

}  // namespace
}  // namespace cohort::learner
