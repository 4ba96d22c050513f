#include "model/transformer.h"

#include <vector>

#include "model/aten.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/kv_cache.h"
#include "model/tiny_model.h"

namespace cohort::model {
namespace {

using ::testing::HasSubstr;
using testing::RandomWeights;
using testing::TinyConfig;
using testing::Variant;

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

std::unique_ptr<Transformer> MakeModel(Variant variant, at::ScalarType dtype = at::kFloat,
                                       uint64_t seed = 1) {
  ModelConfig config = TinyConfig(variant);
  auto model = Transformer::Create(config, RandomWeights(config, seed), dtype, at::kCPU);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

std::vector<int32_t> Tokens(int n, int offset = 0) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back((i * 37 + 11 + offset) % 256);
  return out;
}

at::Tensor Row(const std::vector<int32_t>& ids) {
  return at::tensor(at::ArrayRef<int32_t>(ids), at::kInt).to(at::kLong).unsqueeze(0);
}

class VariantTest : public ::testing::TestWithParam<Variant> {};

TEST_P(VariantTest, IncrementalDecodingMatchesFullForward) {
  auto model = MakeModel(GetParam());
  const std::vector<int32_t> ids = Tokens(24);
  at::Tensor tokens = Row(ids);
  auto full = model->Forward(tokens, at::ones_like(tokens));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->sizes(), at::IntArrayRef({1, 24, 256}));

  auto cache = KvCache::Create(model->config(), 4, 64, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok()) << cache.status();
  // Prompt of 10 tokens in slot 2, then one token at a time.
  auto prefill = model->Prefill(*cache, 2, std::vector<int32_t>(ids.begin(), ids.begin() + 10),
                                /*all_logits=*/true);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_LE(MaxAbsDiff(*prefill, (*full)[0].narrow(0, 0, 10)), 1e-5);
  for (int t = 10; t < 24; ++t) {
    auto step = model->Decode(*cache, {2}, {ids[t]});
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_LE(MaxAbsDiff((*step)[0], (*full)[0][t]), 1e-5) << "position " << t;
  }
  EXPECT_EQ(cache->length(2), 24);
  // Chunked prefill continues at the slot's length.
  auto cache2 = KvCache::Create(model->config(), 1, 64, at::kFloat, at::kCPU);
  ASSERT_TRUE(model->Prefill(*cache2, 0, Tokens(10)).ok());
  auto rest = model->Prefill(*cache2, 0, std::vector<int32_t>(ids.begin() + 10, ids.end()));
  ASSERT_TRUE(rest.ok());
  EXPECT_LE(MaxAbsDiff(*rest, (*full)[0][23]), 1e-5);
}

TEST_P(VariantTest, BatchedEqualsUnbatched) {
  auto model = MakeModel(GetParam());
  const std::vector<std::vector<int32_t>> seqs = {Tokens(12, 0), Tokens(7, 5), Tokens(3, 9)};
  const int64_t t = 12;
  for (bool left_pad : {false, true}) {
    at::Tensor tokens = at::zeros({3, t}, at::kLong);
    at::Tensor mask = at::zeros({3, t}, at::kLong);
    for (int b = 0; b < 3; ++b) {
      const int64_t n = static_cast<int64_t>(seqs[b].size());
      const int64_t off = left_pad ? t - n : 0;
      tokens[b].narrow(0, off, n).copy_(Row(seqs[b])[0]);
      mask[b].narrow(0, off, n).fill_(1);
    }
    auto batched = model->Forward(tokens, mask);
    ASSERT_TRUE(batched.ok()) << batched.status();
    for (int b = 0; b < 3; ++b) {
      const int64_t n = static_cast<int64_t>(seqs[b].size());
      const int64_t off = left_pad ? t - n : 0;
      at::Tensor alone_tokens = Row(seqs[b]);
      auto alone = model->Forward(alone_tokens, at::ones_like(alone_tokens));
      ASSERT_TRUE(alone.ok());
      EXPECT_LE(MaxAbsDiff((*batched)[b].narrow(0, off, n), (*alone)[0]), 1e-5)
          << "row " << b << (left_pad ? " left" : " right") << " padded";
    }
  }
}

TEST_P(VariantTest, BatchedDecodeOverSlotsOfDifferentLengths) {
  auto model = MakeModel(GetParam());
  auto cache = KvCache::Create(model->config(), 6, 64, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok());
  const std::vector<std::vector<int32_t>> prompts = {Tokens(5, 1), Tokens(9, 2), Tokens(2, 3)};
  const std::vector<int64_t> slots = {4, 0, 2};  // not consecutive
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(model->Prefill(*cache, slots[i], prompts[i]).ok());
  }
  std::vector<int32_t> next = {17, 42, 67};
  for (int step = 0; step < 3; ++step) {
    auto batched = model->Decode(*cache, slots, next);
    ASSERT_TRUE(batched.ok()) << batched.status();
    // Compare with a fresh full forward over each sequence.
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<int32_t> seq = prompts[i];
      for (int s = 0; s <= step; ++s) seq.push_back((17 + 25 * i + s) % 256);
      at::Tensor row = Row(seq);
      auto full = model->Forward(row, at::ones_like(row));
      ASSERT_TRUE(full.ok());
      EXPECT_LE(MaxAbsDiff((*batched)[i], (*full)[0][row.size(1) - 1]), 1e-5)
          << "slot " << slots[i] << " step " << step;
    }
    for (size_t i = 0; i < next.size(); ++i) {
      next[i] = static_cast<int32_t>((17 + 25 * i + step + 1) % 256);
    }
  }
  EXPECT_EQ(cache->length(4), 5 + 3);
  EXPECT_EQ(cache->length(2), 2 + 3);
}

TEST_P(VariantTest, PrefixSharingEqualsIndependentPrefill) {
  auto model = MakeModel(GetParam());
  auto cache = KvCache::Create(model->config(), 4, 64, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok());
  const std::vector<int32_t> prompt = Tokens(11, 4);
  ASSERT_TRUE(model->Prefill(*cache, 0, prompt).ok());
  cache->CopyPrefix(0, 1, 11);
  KvCache::Prefix snapshot = cache->SavePrefix(0, 11);
  cache->LoadPrefix(snapshot, 3);
  ASSERT_TRUE(model->Prefill(*cache, 2, prompt).ok());  // independent
  for (int step = 0; step < 2; ++step) {
    const int32_t token = 5 + step;
    auto logits = model->Decode(*cache, {0, 1, 2, 3}, {token, token, token, token});
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (int s = 0; s < 4; ++s) {
      // Slot 2 was prefilled independently; 0 is the original, 1 a copy,
      // 3 a snapshot restore.
      EXPECT_LE(MaxAbsDiff((*logits)[s], (*logits)[2]), 1e-5) << "slot " << s;
    }
  }
}

TEST_P(VariantTest, Bf16IsCloseToFp32) {
  auto fp32 = MakeModel(GetParam(), at::kFloat);
  auto bf16 = MakeModel(GetParam(), at::kBFloat16);
  at::Tensor tokens = Row(Tokens(16));
  auto a = fp32->Forward(tokens, at::ones_like(tokens));
  auto b = bf16->Forward(tokens, at::ones_like(tokens));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->scalar_type(), at::kFloat);
  const double diff = MaxAbsDiff(*a, *b);
  const double scale = a->abs().max().item<double>();
  EXPECT_GT(diff, 0.0);
  EXPECT_LE(diff, 0.1 * scale) << "bf16 drifted: " << diff << " vs " << scale;
  RecordProperty("bf16_max_abs_diff", std::to_string(diff));
  RecordProperty("fp32_max_abs_logit", std::to_string(scale));
  // Decoding in bf16 works too.
  auto cache = KvCache::Create(bf16->config(), 2, 32, at::kBFloat16, at::kCPU);
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(bf16->Prefill(*cache, 1, Tokens(4)).ok());
  auto step = bf16->Decode(*cache, {1}, {3});
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_TRUE(step->isfinite().all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Layouts, VariantTest,
                         ::testing::Values(Variant::kQwen2, Variant::kQwen3, Variant::kLlama3),
                         [](const auto& info) { return VariantName(info.param); });

TEST(TransformerTest, VariantFeaturesChangeTheOutput) {
  // Each optional feature is live: turning it off changes the logits.
  at::Tensor tokens = Row(Tokens(40));
  auto logits_of = [&](const ModelConfig& c, const TensorMap& w) {
    auto m = Transformer::Create(c, w, at::kFloat, at::kCPU);
    EXPECT_TRUE(m.ok()) << m.status();
    return (*m)->Forward(tokens, at::ones_like(tokens)).value();
  };
  {
    ModelConfig llama = TinyConfig(Variant::kLlama3);
    TensorMap w = RandomWeights(llama, 3);
    ModelConfig plain = llama;
    plain.rope_scaling = RopeScaling();
    EXPECT_GT(MaxAbsDiff(logits_of(llama, w), logits_of(plain, w)), 1e-4);
  }
  {
    ModelConfig qwen2 = TinyConfig(Variant::kQwen2);
    TensorMap w = RandomWeights(qwen2, 3);
    TensorMap zero_bias = w;
    for (auto& [name, t] : zero_bias) {
      if (name.find(".bias") != std::string::npos) t = at::zeros_like(t);
    }
    EXPECT_GT(MaxAbsDiff(logits_of(qwen2, w), logits_of(qwen2, zero_bias)), 1e-4);
  }
  {
    ModelConfig qwen3 = TinyConfig(Variant::kQwen3);
    TensorMap w = RandomWeights(qwen3, 3);
    TensorMap unit_norm = w;
    for (auto& [name, t] : unit_norm) {
      if (name.find("_norm.weight") != std::string::npos &&
          name.find("self_attn") != std::string::npos) {
        t = at::ones_like(t);
      }
    }
    EXPECT_GT(MaxAbsDiff(logits_of(qwen3, w), logits_of(qwen3, unit_norm)), 1e-4);
  }
}

TEST(TransformerTest, RejectsBadWeightsByName) {
  ModelConfig config = TinyConfig(Variant::kQwen2);
  TensorMap w = RandomWeights(config, 1);
  {
    TensorMap missing = w;
    missing.erase("model.layers.1.mlp.up_proj.weight");
    auto m = Transformer::Create(config, missing, at::kFloat, at::kCPU);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("model.layers.1.mlp.up_proj.weight"));
  }
  {
    TensorMap bad = w;
    bad["model.layers.0.self_attn.k_proj.weight"] = at::zeros({16, 64});
    auto m = Transformer::Create(config, bad, at::kFloat, at::kCPU);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(std::string(m.status().message()),
                HasSubstr("model.layers.0.self_attn.k_proj.weight has shape "
                          "[16, 64], expected [32, 64]"));
  }
  {
    TensorMap extra = w;
    extra["model.layers.9.mlp.up_proj.weight"] = at::zeros({1});
    auto m = Transformer::Create(config, extra, at::kFloat, at::kCPU);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(std::string(m.status().message()),
                HasSubstr("unexpected weights (1): model.layers.9"));
  }
  {
    ModelConfig odd = config;
    odd.num_key_value_heads = 3;
    auto m = Transformer::Create(odd, w, at::kFloat, at::kCPU);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("num_key_value_heads"));
  }
  auto m = Transformer::Create(config, w, at::kFloat, at::kCPU);
  ASSERT_TRUE(m.ok());
  at::Tensor bad_ids = at::full({1, 3}, 300, at::kLong);
  auto f = (*m)->Forward(bad_ids, at::ones_like(bad_ids));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("token id 300"));
  auto cache = KvCache::Create(config, 1, 8, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok());
  auto p = (*m)->Prefill(*cache, 0, Tokens(9));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kOutOfRange);
}

TEST(TransformerTest, SwapWeightsChangesOutputAndVersion) {
  ModelConfig config = TinyConfig(Variant::kQwen3);
  auto m = Transformer::Create(config, RandomWeights(config, 1), at::kFloat, at::kCPU);
  ASSERT_TRUE(m.ok());
  at::Tensor tokens = Row(Tokens(5));
  at::Tensor before = (*m)->Forward(tokens, at::ones_like(tokens)).value();
  ASSERT_TRUE((*m)->SwapWeights(RandomWeights(config, 2), 7).ok());
  EXPECT_EQ((*m)->version(), 7);
  at::Tensor after = (*m)->Forward(tokens, at::ones_like(tokens)).value();
  EXPECT_GT(MaxAbsDiff(before, after), 1e-3);
  TensorMap bad = RandomWeights(config, 2);
  bad.erase("model.norm.weight");
  EXPECT_FALSE((*m)->SwapWeights(bad, 8).ok());
  EXPECT_EQ((*m)->version(), 7);
}

}  // namespace
}  // namespace cohort::model
