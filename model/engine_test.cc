#include "model/engine.h"

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/tiny_model.h"
#include "model/torch_error.h"

namespace cohort::model {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;
using testing::RandomWeights;
using testing::TinyConfig;
using testing::Variant;

std::unique_ptr<Engine> MakeEngine(int64_t slots, int64_t max_len = 128,
                                   Variant variant = Variant::kQwen2, EngineOptions options = {}) {
  ModelConfig config = TinyConfig(variant);
  auto model = Transformer::Create(config, RandomWeights(config, 1), at::kFloat, at::kCPU);
  EXPECT_TRUE(model.ok()) << model.status();
  options.num_slots = slots;
  options.max_len = max_len;
  auto engine = Engine::Create(std::move(model).value(), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(engine).value();
}

GenerationRequest Request(std::vector<int32_t> prompt, int64_t g, uint64_t seed,
                          int64_t max_new_tokens = 12) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.num_samples = g;
  r.params.seed = seed;
  r.params.max_new_tokens = max_new_tokens;
  return r;
}

GenerationResult Get(std::future<absl::StatusOr<GenerationResult>>& f) {
  absl::StatusOr<GenerationResult> r = f.get();
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : GenerationResult();
}

TEST(EngineTest, GeneratesGroupsWithVersionsAndLogProbs) {
  auto engine = MakeEngine(4);
  auto f = engine->Submit(Request({1, 2, 3, 4, 5}, 3, 42, 10));
  engine->RunUntilIdle();
  GenerationResult r = Get(f);
  ASSERT_EQ(r.completions.size(), 3u);
  for (const Completion& c : r.completions) {
    EXPECT_EQ(c.tokens.size(), 10u);
    EXPECT_EQ(c.logprobs.size(), 10u);
    EXPECT_THAT(c.versions, Each(0));
    EXPECT_EQ(c.finish_reason, FinishReason::kLength);
    for (float lp : c.logprobs) EXPECT_LT(lp, 0.0f);
  }
  // The three samples drew different tokens (own RNG each).
  EXPECT_NE(r.completions[0].tokens, r.completions[1].tokens);
  EngineStats stats = engine->stats();
  EXPECT_EQ(stats.prefill_tokens, 5);  // the prompt ran once for 3 samples
  EXPECT_EQ(stats.prefix_copies, 2);
  EXPECT_EQ(stats.generated_tokens, 30);
}

TEST(EngineTest, SeededGenerationIsReproducibleAndIndependentOfBatch) {
  const GenerationRequest a = Request({10, 20, 30}, 2, 7, 16);
  std::vector<Completion> alone;
  {
    auto engine = MakeEngine(8);
    auto f = engine->Submit(a);
    engine->RunUntilIdle();
    alone = Get(f).completions;
  }
  {
    // Same again: identical.
    auto engine = MakeEngine(8);
    auto f = engine->Submit(a);
    engine->RunUntilIdle();
    std::vector<Completion> again = Get(f).completions;
    for (int i = 0; i < 2; ++i) EXPECT_EQ(again[i].tokens, alone[i].tokens);
  }
  {
    // Among other requests, fewer slots (continuous batching, other slot
    // ids, other batch sizes): still identical.
    auto engine = MakeEngine(3);
    auto f1 = engine->Submit(Request({5, 6, 7, 8, 9, 10, 11}, 2, 1, 5));
    auto fa = engine->Submit(a);
    auto f2 = engine->Submit(Request({99}, 3, 2, 20));
    engine->RunUntilIdle();
    std::vector<Completion> mixed = Get(fa).completions;
    Get(f1);
    Get(f2);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(mixed[i].tokens, alone[i].tokens) << "sample " << i;
      for (size_t t = 0; t < mixed[i].logprobs.size(); ++t) {
        EXPECT_NEAR(mixed[i].logprobs[t], alone[i].logprobs[t], 1e-5);
      }
    }
  }
  {
    auto engine = MakeEngine(8);
    GenerationRequest other_seed = a;
    other_seed.params.seed = 8;
    auto f = engine->Submit(other_seed);
    engine->RunUntilIdle();
    EXPECT_NE(Get(f).completions[0].tokens, alone[0].tokens);
  }
}

TEST(EngineTest, ContinuousBatchingServesMoreSamplesThanSlots) {
  auto engine = MakeEngine(2);
  std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
  for (int i = 0; i < 4; ++i) {
    futures.push_back(
        engine->Submit(Request({static_cast<int32_t>(i + 1), 3, 5}, 3, i, 3 + 2 * i)));
  }
  engine->RunUntilIdle();
  for (int i = 0; i < 4; ++i) {
    GenerationResult r = Get(futures[i]);
    ASSERT_EQ(r.completions.size(), 3u);
    for (const Completion& c : r.completions) {
      EXPECT_EQ(c.tokens.size(), static_cast<size_t>(3 + 2 * i));
    }
  }
  EngineStats stats = engine->stats();
  EXPECT_EQ(stats.prefill_tokens, 4 * 3);
  EXPECT_EQ(stats.prefix_copies, 4 * 2);
  // 12 sequences of 3..9 tokens on 2 slots: each step runs 2 sequences
  // except at the very end, so about half of the total decode work per step.
  EXPECT_LE(stats.steps, (3 * (2 + 4 + 6 + 8)) / 2 + 4);
}

TEST(EngineTest, FinishReasons) {
  // Greedy, so the tokens are known in advance.
  auto engine = MakeEngine(4, /*max_len=*/16);
  GenerationRequest base = Request({1, 2, 3}, 1, 0, 8);
  base.params.temperature = 0;
  auto f = engine->Submit(base);
  engine->RunUntilIdle();
  const std::vector<int32_t> greedy = Get(f).completions[0].tokens;
  ASSERT_EQ(greedy.size(), 8u);

  // EOS: the 3rd greedy token (first occurrence) is an EOS id.
  GenerationRequest eos = base;
  eos.eos_ids = {greedy[2]};
  size_t first = 0;
  while (greedy[first] != greedy[2]) ++first;
  f = engine->Submit(eos);
  engine->RunUntilIdle();
  Completion c = Get(f).completions[0];
  EXPECT_EQ(c.finish_reason, FinishReason::kEos);
  EXPECT_EQ(c.tokens.size(), first + 1);  // the EOS token is kept

  // Context: prompt 3 + completion may not exceed max_len 16.
  GenerationRequest longer = base;
  longer.params.max_new_tokens = 100;
  f = engine->Submit(longer);
  engine->RunUntilIdle();
  c = Get(f).completions[0];
  EXPECT_EQ(c.finish_reason, FinishReason::kContext);
  EXPECT_EQ(c.tokens.size(), 13u);
}

TEST(EngineTest, StopStrings) {
  EngineOptions options;
  options.decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += static_cast<char>('a' + id % 26);
    return s;
  };
  auto engine = MakeEngine(4, 64, Variant::kQwen3, options);
  GenerationRequest base = Request({7, 8, 9}, 1, 0, 10);
  base.params.temperature = 0;
  auto f = engine->Submit(base);
  engine->RunUntilIdle();
  const std::vector<int32_t> greedy = Get(f).completions[0].tokens;
  const std::string text = options.decode(greedy);
  const std::string stop = text.substr(3, 2);
  const size_t end = text.find(stop) + stop.size();  // first completion

  GenerationRequest with_stop = base;
  with_stop.params.stop = {"not-there", stop};
  f = engine->Submit(with_stop);
  engine->RunUntilIdle();
  Completion c = Get(f).completions[0];
  EXPECT_EQ(c.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.tokens.size(), end);

  // Without a decode callback, stop strings are refused.
  auto plain = MakeEngine(1);
  f = plain->Submit(with_stop);
  absl::StatusOr<GenerationResult> refused = f.get();
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("decode"));
}

TEST(EngineTest, WeightSwapMidBatchChangesRecordedVersions) {
  auto engine = MakeEngine(4, 128, Variant::kQwen3);
  auto f = engine->Submit(Request({3, 1, 4, 1, 5}, 2, 9, 12));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine->Step());
  ModelConfig config = TinyConfig(Variant::kQwen3);
  ASSERT_TRUE(engine->SwapWeights(RandomWeights(config, 2), 5).ok());
  TensorMap bad = RandomWeights(config, 3);
  bad.erase("model.layers.0.self_attn.q_norm.weight");
  absl::Status rejected = engine->SwapWeights(bad, 6);
  EXPECT_THAT(std::string(rejected.message()), HasSubstr("model.layers.0.self_attn.q_norm.weight"));
  engine->RunUntilIdle();
  EXPECT_EQ(engine->policy_version(), 5);
  GenerationResult r = Get(f);
  for (const Completion& c : r.completions) {
    ASSERT_EQ(c.versions.size(), 12u);
    // Each of the 4 steps placed/decoded with version 0: the first token
    // (from the prefill) and 4 decode steps; the rest with version 5.
    // Nothing was dropped.
    for (int t = 0; t < 5; ++t) EXPECT_EQ(c.versions[t], 0) << t;
    for (int t = 5; t < 12; ++t) EXPECT_EQ(c.versions[t], 5) << t;
  }
}

TEST(EngineTest, TruncatedSamplingInBf16) {
  ModelConfig config = TinyConfig(Variant::kLlama3);
  auto model = Transformer::Create(config, RandomWeights(config, 1), at::kBFloat16, at::kCPU);
  ASSERT_TRUE(model.ok());
  EngineOptions options;
  options.num_slots = 4;
  options.max_len = 64;
  auto engine = Engine::Create(std::move(model).value(), options);
  ASSERT_TRUE(engine.ok());
  GenerationRequest r = Request({1, 2, 3}, 4, 5, 16);
  r.params.top_k = 5;
  r.params.top_p = 0.9;
  r.params.temperature = 0.8;
  auto f = (*engine)->Submit(r);
  (*engine)->RunUntilIdle();
  GenerationResult result = Get(f);
  ASSERT_EQ(result.completions.size(), 4u);
  for (const Completion& c : result.completions) {
    ASSERT_EQ(c.tokens.size(), 16u);
    for (float lp : c.logprobs) {
      EXPECT_TRUE(std::isfinite(lp));
      EXPECT_LT(lp, 0.0f);
    }
  }
}

TEST(EngineTest, BadRequestsAreRefusedClearly) {
  auto engine = MakeEngine(2, 8);
  auto expect_error = [&](GenerationRequest r, const std::string& what) {
    auto f = engine->Submit(std::move(r));
    absl::StatusOr<GenerationResult> result = f.get();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(what));
  };
  expect_error(Request({}, 1, 0), "empty prompt");
  expect_error(Request({1, 999}, 1, 0), "token id 999");
  expect_error(Request({1, 2, 3, 4, 5, 6, 7, 8}, 1, 0), "max_len");
  expect_error(Request({1}, 0, 0), "num_samples");
  GenerationRequest bad_t = Request({1}, 1, 0);
  bad_t.params.temperature = -1;
  expect_error(bad_t, "temperature");
}

TEST(EngineTest, LoopThreadAndIdempotentStop) {
  auto engine = MakeEngine(4);
  engine->Start();
  std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
  for (int i = 0; i < 3; ++i) {
    futures.push_back(engine->Submit(Request({1, 2, 3}, 2, i, 6)));
  }
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_EQ(Get(f).completions.size(), 2u);
  }
  // A long request is cancelled by Stop().
  auto pending = engine->Submit(Request({1, 2}, 4, 0, 100));
  engine->Stop();
  engine->Stop();
  absl::StatusOr<GenerationResult> r = pending.get();
  if (!r.ok()) EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  auto after = engine->Submit(Request({1}, 1, 0));
  EXPECT_EQ(after.get().status().code(), absl::StatusCode::kCancelled);
}

TEST(TorchErrorTest, MapsExceptionsToStatuses) {
  try {
    TORCH_CHECK(false, "shapes disagree");
  } catch (const std::exception& e) {
    absl::Status s = TorchError("decode", e);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(std::string(s.message()), HasSubstr("decode: shapes disagree"));
    // No C++ backtrace in the message.
    EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("frame #")));
  }
  EXPECT_EQ(TorchError("kv", std::bad_alloc()).code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<int> guarded = GuardTorch("load", []() -> absl::StatusOr<int> {
    at::Tensor a = at::zeros({2, 3});
    at::Tensor b = at::zeros({4, 5});
    return static_cast<int>(at::matmul(a, b).numel());  // throws: [2,3] x [4,5]
  });
  ASSERT_FALSE(guarded.ok());
  EXPECT_THAT(std::string(guarded.status().message()), HasSubstr("load: "));
  EXPECT_EQ(GuardTorch("ok", []() -> absl::StatusOr<int> { return 7; }).value(), 7);
  EXPECT_EQ(GuardTorch("any", []() -> absl::Status { throw 1; }).code(),
            absl::StatusCode::kInternal);
}

// An exception thrown inside a step (here by the decode callback, as a
// torch call could) fails the requests in flight; the loop thread survives
// and serves the next request.
TEST(EngineTest, ExceptionInsideStepFailsInFlightRequestsAndLoopGoesOn) {
  EngineOptions options;
  options.decode = [](const std::vector<int32_t>& ids) -> std::string {
    TORCH_CHECK(false, "decoder exploded");
    return "";
  };
  auto engine = MakeEngine(4, 64, Variant::kQwen2, options);
  engine->Start();
  GenerationRequest with_stop = Request({1, 2, 3}, 2, 5, 8);
  with_stop.params.stop = {"x"};
  auto failed = engine->Submit(with_stop);
  absl::StatusOr<GenerationResult> r = failed.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("decoder exploded"));
  auto next = engine->Submit(Request({4, 5, 6}, 3, 6, 8));
  GenerationResult ok = Get(next);
  ASSERT_EQ(ok.completions.size(), 3u);
  for (const Completion& c : ok.completions) EXPECT_EQ(c.tokens.size(), 8u);
  engine->Stop();
}

// Several new groups prefilled in one padded batch (on by default only on a
// GPU; forced here): the same completions as one prompt at a time (greedy,
// so rounding in the batched GEMM cannot change a draw on this model), the
// same prompt tokens counted once per group, and samples still placed.
TEST(EngineTest, BatchedPrefillMatchesOneAtATime) {
  auto run = [](bool batched) {
    EngineOptions options;
    options.batched_prefill = batched;
    auto engine = MakeEngine(12, 64, Variant::kQwen3, options);
    std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
    const std::vector<std::vector<int32_t>> prompts = {
        {1, 2, 3}, {4, 5, 6, 7, 8}, {9}, {10, 11}, {12, 13, 14, 15}, {16, 17}};
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerationRequest r = Request(prompts[i], i % 2 == 0 ? 1 : 3, 100 + i, 6 + i);
      r.params.temperature = 0;
      futures.push_back(engine->Submit(std::move(r)));
    }
    engine->RunUntilIdle();
    std::vector<std::vector<int32_t>> tokens;
    for (auto& f : futures) {
      for (const Completion& c : Get(f).completions) tokens.push_back(c.tokens);
    }
    return std::make_pair(tokens, engine->stats());
  };
  auto [one, one_stats] = run(false);
  auto [batched, batched_stats] = run(true);
  EXPECT_EQ(batched, one);
  EXPECT_EQ(batched_stats.prefill_tokens, one_stats.prefill_tokens);
  EXPECT_EQ(batched_stats.prefix_copies, one_stats.prefix_copies);
  EXPECT_EQ(batched_stats.generated_tokens, one_stats.generated_tokens);
  EXPECT_EQ(one.size(), 12u);
  EXPECT_EQ(one_stats.prefill_batches, 0);
  EXPECT_EQ(batched_stats.prefill_batches, 1);  // all six prompts at once
}

}  // namespace
}  // namespace cohort::model
