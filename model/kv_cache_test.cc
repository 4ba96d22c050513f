// Tests of the engine's KV cache pool (model/kv_cache.h) on the CPU.
#include "model/kv_cache.h"

#include "model/aten.h"

#include "gtest/gtest.h"
#include "model/model_config.h"

namespace cohort::model {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  return c;
}

// Fills the first `length` positions of `slot` with distinct values.
void Fill(KvCache& cache, int64_t slot, int64_t length, float base) {
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    at::Tensor values = at::arange(length * 8, at::kFloat).reshape({2, length, 4}) + base + l;
    cache.k(l)[slot].narrow(1, 0, length).copy_(values);
    cache.v(l)[slot].narrow(1, 0, length).copy_(-values);
  }
  cache.set_length(slot, length);
}

bool SameRows(KvCache& cache, int64_t a, int64_t b, int64_t length) {
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    if (!at::equal(cache.k(l)[a].narrow(1, 0, length), cache.k(l)[b].narrow(1, 0, length)) ||
        !at::equal(cache.v(l)[a].narrow(1, 0, length), cache.v(l)[b].narrow(1, 0, length))) {
      return false;
    }
  }
  return true;
}

TEST(KvCacheTest, AllocatesZeroedPoolOfTheRightShape) {
  auto cache = KvCache::Create(SmallConfig(), 3, 16, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->num_slots(), 3);
  EXPECT_EQ(cache->num_layers(), 2);
  EXPECT_EQ(cache->max_len(), 16);
  for (int64_t l = 0; l < 2; ++l) {
    EXPECT_EQ(cache->k(l).sizes(), (std::vector<int64_t>{3, 2, 16, 4}));
    EXPECT_EQ(cache->v(l).sizes(), (std::vector<int64_t>{3, 2, 16, 4}));
    EXPECT_EQ(cache->k(l).abs().sum().item<float>(), 0.0f);
  }
  for (int64_t s = 0; s < 3; ++s) EXPECT_EQ(cache->length(s), 0);
  // K and V, every layer, kv_heads * head_dim values of 4 bytes each.
  EXPECT_EQ(cache->BytesPerPosition(), 2 * 2 * 2 * 4 * 4);
  auto bf16 = KvCache::Create(SmallConfig(), 1, 8, at::kBFloat16, at::kCPU);
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->BytesPerPosition(), 2 * 2 * 2 * 4 * 2);
  EXPECT_EQ(bf16->k(0).scalar_type(), at::kBFloat16);
}

TEST(KvCacheTest, BadSizesAreInvalidArgument) {
  EXPECT_EQ(KvCache::Create(SmallConfig(), 0, 8, at::kFloat, at::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(SmallConfig(), 1, 0, at::kFloat, at::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status too_long = KvCache::Create(SmallConfig(), 1, 65, at::kFloat, at::kCPU).status();
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("max_position_embeddings 64"), std::string::npos) << too_long;
  ModelConfig no_layers = SmallConfig();
  no_layers.num_hidden_layers = 0;
  EXPECT_EQ(KvCache::Create(no_layers, 1, 8, at::kFloat, at::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, CopyPrefixCopiesOnlyThePrefixRows) {
  auto cache = KvCache::Create(SmallConfig(), 3, 16, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok());
  Fill(*cache, 0, 10, 1.0f);
  Fill(*cache, 2, 12, 500.0f);
  cache->CopyPrefix(0, 2, 6);
  EXPECT_EQ(cache->length(2), 6);
  EXPECT_TRUE(SameRows(*cache, 0, 2, 6));
  // Rows past the prefix are left as they were (overwritten by later steps).
  EXPECT_EQ(cache->k(0)[2][0][6][0].item<float>(), 500.0f + 24);
  // The source is unchanged; copying a slot onto itself only sets the length.
  EXPECT_EQ(cache->length(0), 10);
  cache->CopyPrefix(0, 0, 4);
  EXPECT_EQ(cache->length(0), 4);
  EXPECT_EQ(cache->k(1)[0][1][9][3].item<float>(), 1.0f + 1 + 40 + 39);
}

TEST(KvCacheTest, SavedPrefixIsASnapshotThatLoadsIntoAnySlot) {
  auto cache = KvCache::Create(SmallConfig(), 2, 16, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok());
  Fill(*cache, 0, 5, 7.0f);
  KvCache::Prefix prefix = cache->SavePrefix(0, 5);
  EXPECT_EQ(prefix.length, 5);
  ASSERT_EQ(prefix.k.size(), 2u);
  EXPECT_EQ(prefix.k[0].sizes(), (std::vector<int64_t>{2, 5, 4}));
  // Later writes to the slot do not change the snapshot (it is a copy).
  Fill(*cache, 0, 5, 900.0f);
  cache->LoadPrefix(prefix, 1);
  EXPECT_EQ(cache->length(1), 5);
  EXPECT_EQ(cache->k(0)[1][0][0][0].item<float>(), 7.0f);
  EXPECT_EQ(cache->v(1)[1][1][4][3].item<float>(), -(7.0f + 1 + 39));
  // An empty prefix just empties the slot.
  cache->LoadPrefix(cache->SavePrefix(0, 0), 1);
  EXPECT_EQ(cache->length(1), 0);
  cache->Reset(0);
  EXPECT_EQ(cache->length(0), 0);
}

}  // namespace
}  // namespace cohort::model
