// GPU paths of the model library. The CPU parts (batched prefill, KV-cache
// sizing, refusals) run everywhere; the GPU parts skip with a message when
// LibTorch has no CUDA or no device is present. Tolerances (bf16 has an
// 8-bit mantissa, about 2-3 significant digits):
//   bf16 GPU vs fp32 CPU logits, same weights: max |diff| <= 0.06 and the
//     arg-max agrees on >= 90% of positions (random tiny model, logits of
//     std ~1);
//   engine behaviour log-probs vs the scorer, both bf16 on the GPU:
//     max |diff| <= 0.08 (fp32 on the CPU: 1e-5, scoring_test);
//   CUDA-graph vs eager decode step: fp32 1e-4, bf16 0.03.
#include <cmath>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/attention.h"
#include "model/cuda_graph_decoder.h"
#include "model/engine.h"
#include "model/gpu.h"
#include "model/kv_cache.h"
#include "model/scoring.h"
#include "model/tiny_model.h"

namespace cohort::model {
namespace {

using testing::RandomWeights;
using testing::TinyConfig;
using testing::Variant;

std::unique_ptr<Transformer> Model(Variant v, at::ScalarType dtype, at::Device device,
                                   uint64_t seed = 3) {
  ModelConfig c = TinyConfig(v);
  auto m = Transformer::Create(c, RandomWeights(c, seed), dtype, device);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(m).value();
}

std::vector<std::vector<int32_t>> Prompts() {
  return {{1, 2, 3, 4, 5, 6, 7}, {9, 8}, {100, 101, 102, 103}, {42}};
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kFloat) - b.to(at::kCPU, at::kFloat)).abs().max().item<double>();
}

#define SKIP_WITHOUT_GPU()                                                            \
  if (!CudaPresent()) {                                                               \
    GTEST_SKIP() << "no CUDA: LibTorch without CUDA or no device (GPU test skipped)"; \
  }

class GpuTest : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuTest, BatchedPrefillEqualsSeparatePrefills) {
  auto m = Model(GetParam(), at::kFloat, at::kCPU);
  auto one = KvCache::Create(m->config(), 6, 32, at::kFloat, at::kCPU).value();
  auto batch = KvCache::Create(m->config(), 6, 32, at::kFloat, at::kCPU).value();
  const auto prompts = Prompts();
  const std::vector<int64_t> slots = {4, 0, 2, 5};
  std::vector<at::Tensor> separate;
  for (size_t i = 0; i < prompts.size(); ++i) {
    separate.push_back(m->Prefill(one, slots[i], prompts[i]).value());
  }
  absl::StatusOr<at::Tensor> logits = m->PrefillBatch(batch, slots, prompts);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(0), 4);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_LT(MaxDiff((*logits)[i], separate[i]), 1e-5) << i;
    EXPECT_EQ(batch.length(slots[i]), static_cast<int64_t>(prompts[i].size()));
  }
  // The caches agree too: one decode step from each gives the same logits.
  std::vector<int32_t> next = {5, 6, 7, 8};
  at::Tensor a = m->Decode(one, slots, next).value();
  at::Tensor b = m->Decode(batch, slots, next).value();
  EXPECT_LT(MaxDiff(a, b), 1e-5);
  // Refusals: a used slot, a repeated slot, an empty prompt.
  EXPECT_EQ(m->PrefillBatch(batch, {0}, {{1}}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(m->PrefillBatch(batch, {1, 1}, {{1}, {2}}).ok());
  EXPECT_FALSE(m->PrefillBatch(batch, {1}, {{}}).ok());
}

TEST(GpuHelpersTest, KvCacheSizingFromFreeMemory) {
  ModelConfig c = TinyConfig(Variant::kQwen2);  // 2 layers, 2 kv heads, head_dim 16
  EXPECT_EQ(KvBytesPerSlot(c, 100, at::kBFloat16), 2 * 2 * 2 * 16 * 100 * 2);
  const int64_t per = KvBytesPerSlot(c, 100, at::kBFloat16);
  EXPECT_EQ(KvSlotsForBytes(c, 100, at::kBFloat16, per * 10, 0.5).value(), 5);
  EXPECT_EQ(KvSlotsForBytes(c, 100, at::kBFloat16, per * 10, 1.0, 3).value(), 3);
  EXPECT_EQ(KvSlotsForBytes(c, 100, at::kBFloat16, per / 2, 0.9).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(KvSlotsForBytes(c, 100, at::kBFloat16, per, 1.5).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(FreeDeviceBytes(at::kCPU).ok());
  // On the CPU neither sizing nor graphs apply; the engine ignores both.
  auto m = Model(Variant::kQwen2, at::kFloat, at::kCPU);
  auto cache = KvCache::Create(m->config(), 2, 16, at::kFloat, at::kCPU).value();
  EXPECT_FALSE(CudaGraphDecoder::Create(*m, cache).ok());
  EngineOptions options;
  options.num_slots = 3;
  options.max_len = 64;
  options.kv_cache_fraction = 0.5;
  auto engine = Engine::Create(std::move(m), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto f = (*engine)->Submit({{1, 2, 3}, 2, {}, {}});
  (*engine)->RunUntilIdle();
  EXPECT_TRUE(f.get().ok());
}

TEST_P(GpuTest, Bf16GpuLogitsMatchFp32Cpu) {
  SKIP_WITHOUT_GPU();
  auto cpu = Model(GetParam(), at::kFloat, at::kCPU);
  auto gpu = Model(GetParam(), at::kBFloat16, at::Device(at::kCUDA, 0));
  at::Tensor tokens = at::randint(0, 256, {3, 24}, at::kLong);
  at::Tensor mask = at::ones({3, 24}, at::kLong);
  mask.narrow(1, 0, 5)[1].zero_();  // one left-padded row
  at::Tensor a = cpu->Forward(tokens, mask).value();
  at::Tensor b = gpu->Forward(tokens, mask).value().cpu();
  ASSERT_EQ(b.scalar_type(), at::kFloat);  // logits are fp32 even in bf16
  at::Tensor real = mask.to(at::kBool);
  const double diff = (a - b).abs().amax(-1).masked_select(real).max().item<double>();
  const double agree =
      (a.argmax(-1) == b.argmax(-1)).masked_select(real).to(at::kFloat).mean().item<double>();
  RecordProperty("max_abs_diff", std::to_string(diff));
  std::printf(
      "{\"test\":\"bf16_gpu_vs_fp32_cpu\",\"variant\":\"%s\",\"max_abs_diff\":%.5f,"
      "\"argmax_agreement\":%.4f}\n",
      testing::VariantName(GetParam()).c_str(), diff, agree);
  EXPECT_LE(diff, 0.06);
  EXPECT_GE(agree, 0.9);
}

TEST_P(GpuTest, FusedAttentionMatchesMath) {
  SKIP_WITHOUT_GPU();
  if (!FusedAttentionFor(at::zeros({1}, at::Device(at::kCUDA, 0)))) {
    GTEST_SKIP() << "LibTorch < 2: no fused attention";
  }
  auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, 0);
  at::Tensor q = at::randn({2, 8, 5, 64}, opts);
  at::Tensor k = at::randn({2, 2, 9, 64}, opts);
  at::Tensor v = at::randn({2, 2, 9, 64}, opts);
  at::Tensor allowed = at::rand({2, 1, 5, 9}, opts.dtype(at::kFloat)) > 0.3;
  allowed.select(3, 0).fill_(true);  // no empty row
  EXPECT_LT(MaxDiff(GroupedAttention(q, k, v, allowed), GroupedAttentionMath(q, k, v, allowed)),
            0.03);
}

TEST_P(GpuTest, CudaGraphDecodeEqualsEager) {
  SKIP_WITHOUT_GPU();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Device dev(at::kCUDA, 0);
    auto m = Model(GetParam(), dtype, dev);
    auto eager = KvCache::Create(m->config(), 8, 64, dtype, dev).value();
    auto graph = KvCache::Create(m->config(), 8, 64, dtype, dev).value();
    CudaGraphOptions go;
    go.length_buckets = {16, 32};
    auto decoder = CudaGraphDecoder::Create(*m, graph, go);
    ASSERT_TRUE(decoder.ok()) << decoder.status();
    const std::vector<int64_t> slots = {0, 2, 3, 6};  // holes: bucket 8 covers them
    ASSERT_TRUE(m->PrefillBatch(eager, slots, Prompts()).ok());
    ASSERT_TRUE(m->PrefillBatch(graph, slots, Prompts()).ok());
    std::vector<int32_t> tokens = {11, 12, 13, 14};
    double worst = 0;
    for (int step = 0; step < 20; ++step) {
      at::Tensor a = m->Decode(eager, slots, tokens).value();
      absl::StatusOr<at::Tensor> b = (*decoder)->Decode(slots, tokens);
      ASSERT_TRUE(b.ok()) << b.status();
      worst = std::max(worst, MaxDiff(a, *b));
      at::Tensor next = a.argmax(-1).cpu();
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = next[i].item<int32_t>();
    }
    std::printf(
        "{\"test\":\"cuda_graph_vs_eager\",\"dtype\":\"%s\",\"max_abs_diff\":%.6f,"
        "\"graphs\":%lld}\n",
        c10::toString(dtype), worst, static_cast<long long>((*decoder)->graphs_captured()));
    EXPECT_LE(worst, dtype == at::kFloat ? 1e-4 : 0.03);
    // Prompt 0 is 7 tokens: 27 positions after 20 steps crosses 16 -> 32.
    EXPECT_EQ((*decoder)->graphs_captured(), 2);
    EXPECT_EQ((*decoder)->replays(), 20);
  }
}

TEST_P(GpuTest, Bf16EngineLogProbsMatchScorer) {
  SKIP_WITHOUT_GPU();
  const at::Device dev(at::kCUDA, 0);
  auto m = Model(GetParam(), at::kBFloat16, dev);
  EngineOptions options;
  options.num_slots = 8;
  options.max_len = 96;
  auto engine = Engine::Create(std::move(m), options).value();
  GenerationRequest r;
  r.prompt = {5, 6, 7, 8, 9};
  r.num_samples = 4;
  r.params.temperature = 0.8;
  r.params.max_new_tokens = 24;
  r.params.seed = 9;
  auto f = engine->Submit(r);
  engine->RunUntilIdle();
  GenerationResult res = f.get().value();
  std::vector<ScoredSequence> seqs;
  for (const Completion& c : res.completions) seqs.push_back({r.prompt, c.tokens});
  auto scored = CompletionLogProbs(engine->model(), seqs, 0.8);
  ASSERT_TRUE(scored.ok()) << scored.status();
  double worst = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (size_t t = 0; t < res.completions[i].logprobs.size(); ++t) {
      worst = std::max(
          worst, std::abs(static_cast<double>((*scored)[i][t]) - res.completions[i].logprobs[t]));
    }
  }
  std::printf("{\"test\":\"bf16_engine_vs_scorer\",\"variant\":\"%s\",\"max_abs_diff\":%.5f}\n",
              testing::VariantName(GetParam()).c_str(), worst);
  EXPECT_LE(worst, 0.08);
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuTest,
                         ::testing::Values(Variant::kQwen2, Variant::kQwen3, Variant::kLlama3),
                         [](const auto& info) { return testing::VariantName(info.param); });

}  // namespace
}  // namespace cohort::model
