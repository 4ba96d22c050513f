#include "model/scoring.h"

#include <vector>

#include <gtest/gtest.h>

#include "model/engine.h"
#include "model/tiny_model.h"

namespace cohort::model {
namespace {

using testing::RandomWeights;
using testing::TinyConfig;
using testing::Variant;

class ScoringTest : public ::testing::TestWithParam<Variant> {};

// The scorer's log-probs equal the engine's behaviour log-probs for the same
// weights (fp32, temperature-only sampling).
TEST_P(ScoringTest, AgreesWithEngineBehaviourLogProbs) {
  ModelConfig config = TinyConfig(GetParam());
  auto model = Transformer::Create(config, RandomWeights(config, 4), at::kFloat, at::kCPU);
  ASSERT_TRUE(model.ok());
  EngineOptions options;
  options.num_slots = 3;
  options.max_len = 96;
  auto engine = Engine::Create(std::move(model).value(), options);
  ASSERT_TRUE(engine.ok());
  std::vector<std::pair<std::vector<int32_t>, double>> prompts = {
      {{1, 2, 3, 4, 5, 6}, 0.7}, {{200, 100}, 1.0}, {{9, 8, 7, 6, 5, 4, 3, 2, 1}, 1.3}};
  std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = prompts[i].first;
    r.num_samples = 2;
    r.params.temperature = prompts[i].second;
    r.params.max_new_tokens = 20 + 5 * static_cast<int64_t>(i);
    r.params.seed = 100 + i;
    futures.push_back((*engine)->Submit(r));
  }
  (*engine)->RunUntilIdle();
  double worst = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    absl::StatusOr<GenerationResult> result = futures[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    std::vector<ScoredSequence> batch;
    for (const Completion& c : result->completions) {
      batch.push_back({prompts[i].first, c.tokens});
    }
    // Score together with a longer unrelated sequence so rows are padded.
    batch.push_back({std::vector<int32_t>(40, 3), {4, 5}});
    auto scored = CompletionLogProbs((*engine)->model(), batch, prompts[i].second);
    ASSERT_TRUE(scored.ok()) << scored.status();
    for (size_t s = 0; s < result->completions.size(); ++s) {
      const Completion& c = result->completions[s];
      ASSERT_EQ((*scored)[s].size(), c.logprobs.size());
      for (size_t t = 0; t < c.logprobs.size(); ++t) {
        worst = std::max(worst, std::abs(double((*scored)[s][t]) - c.logprobs[t]));
      }
    }
  }
  EXPECT_LE(worst, 1e-5);
  RecordProperty("max_abs_diff", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Layouts, ScoringTest,
                         ::testing::Values(Variant::kQwen2, Variant::kQwen3, Variant::kLlama3),
                         [](const auto& info) { return VariantName(info.param); });

TEST(ScoringGradTest, KeepsAutogradToTheWeights) {
  ModelConfig config = TinyConfig(Variant::kQwen2);
  auto model = Transformer::Create(config, RandomWeights(config, 4), at::kFloat, at::kCPU);
  ASSERT_TRUE(model.ok());
  for (auto& [name, w] : (*model)->weights()) w.requires_grad_(true);
  at::Tensor tokens = at::tensor({1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 9, 10}, at::kLong).view({2, 6});
  at::Tensor mask = at::tensor({1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 6});
  ScoreOptions options;
  options.keep_graph = true;
  auto lp = TokenLogProbs(**model, tokens, mask, options);
  ASSERT_TRUE(lp.ok()) << lp.status();
  ASSERT_EQ(lp->sizes(), at::IntArrayRef({2, 5}));
  EXPECT_TRUE(lp->requires_grad());
  // Padding positions score 0.
  EXPECT_EQ((*lp)[0][3].item<float>(), 0.0f);
  EXPECT_EQ((*lp)[0][4].item<float>(), 0.0f);
  lp->sum().backward();
  const at::Tensor& g = (*model)->weights().at("model.layers.0.self_attn.q_proj.weight").grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
  // Without keep_graph: no history.
  auto plain = TokenLogProbs(**model, tokens, mask);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->requires_grad());
  EXPECT_LE((*plain - *lp).abs().max().item<double>(), 1e-6);
}

TEST(ScoringGradTest, RejectsBadInput) {
  ModelConfig config = TinyConfig(Variant::kQwen2);
  auto model = Transformer::Create(config, RandomWeights(config, 4), at::kFloat, at::kCPU);
  ASSERT_TRUE(model.ok());
  at::Tensor tokens = at::ones({1, 4}, at::kLong);
  ScoreOptions zero;
  zero.temperature = 0;
  EXPECT_FALSE(TokenLogProbs(**model, tokens, at::ones_like(tokens), zero).ok());
  EXPECT_FALSE(TokenLogProbs(**model, tokens, at::ones({1, 3}, at::kLong)).ok());
  EXPECT_FALSE(CompletionLogProbs(**model, {{{}, {1}}}).ok());
}

}  // namespace
}  // namespace cohort::model
