#include "model/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "model/aten.h"

namespace cohort::model {
namespace {

at::Tensor LogProbsOf(const std::vector<float>& logits, double temperature) {
  at::Tensor t = at::tensor(at::ArrayRef<float>(logits), at::kFloat).unsqueeze(0);
  return TemperatureLogProbs(t, {temperature})[0].contiguous();
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  at::Tensor lp = LogProbsOf(logits, 1.0);
  SamplingParams params;
  auto draw = [&](uint64_t seed, int64_t sample) {
    SampleRng rng = SampleRng::ForSample(seed, sample);
    std::vector<int32_t> ids;
    for (int i = 0; i < 20; ++i) {
      ids.push_back(SampleFromLogProbs(lp.data_ptr<float>(), 50, params, rng).id);
    }
    return ids;
  };
  EXPECT_EQ(draw(7, 0), draw(7, 0));
  EXPECT_NE(draw(7, 0), draw(8, 0));
  EXPECT_NE(draw(7, 0), draw(7, 1));
}

TEST(SamplerTest, FrequenciesFollowTheTemperatureSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f};
  for (double temperature : {1.0, 0.5, 2.0}) {
    at::Tensor lp = LogProbsOf(logits, temperature);
    SamplingParams params;
    params.temperature = temperature;
    SampleRng rng(123);
    std::map<int32_t, int> counts;
    const int n = 40000;
    for (int i = 0; i < n; ++i) {
      SampledToken t = SampleFromLogProbs(lp.data_ptr<float>(), 4, params, rng);
      ++counts[t.id];
      // Behaviour log-prob = log-softmax(logits / T) at the drawn id.
      double z = 0;
      for (float l : logits) z += std::exp(l / temperature);
      ASSERT_NEAR(t.logprob, logits[t.id] / temperature - std::log(z), 1e-5);
    }
    double z = 0;
    for (float l : logits) z += std::exp(l / temperature);
    for (int id = 0; id < 4; ++id) {
      const double p = std::exp(logits[id] / temperature) / z;
      EXPECT_NEAR(counts[id] / double(n), p, 0.01) << "id " << id << " T " << temperature;
    }
  }
}

TEST(SamplerTest, TopKAndTopPTruncateButLogProbIsFullSoftmax) {
  const std::vector<float> logits = {3.0f, 2.9f, 1.0f, 0.5f, 0.0f};
  at::Tensor lp = LogProbsOf(logits, 1.0);
  const float* p = lp.data_ptr<float>();
  SamplingParams top_k;
  top_k.top_k = 2;
  SamplingParams top_p;
  top_p.top_p = 0.6;  // p(0) ~ 0.45, p(0)+p(1) ~ 0.86: keeps {0, 1}
  SampleRng rng(5);
  std::map<int32_t, int> k_counts, p_counts;
  for (int i = 0; i < 5000; ++i) {
    SampledToken a = SampleFromLogProbs(p, 5, top_k, rng);
    SampledToken b = SampleFromLogProbs(p, 5, top_p, rng);
    ++k_counts[a.id];
    ++p_counts[b.id];
    EXPECT_FLOAT_EQ(a.logprob, p[a.id]);
    EXPECT_FLOAT_EQ(b.logprob, p[b.id]);
  }
  EXPECT_EQ(k_counts.size(), 2u);
  EXPECT_GT(k_counts[0], 0);
  EXPECT_GT(k_counts[1], 0);
  EXPECT_EQ(p_counts.size(), 2u);
  SamplingParams tiny_p;
  tiny_p.top_p = 0.01;  // only the most likely token
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(SampleFromLogProbs(p, 5, tiny_p, rng).id, 0);
  }
}

TEST(SamplerTest, GreedyTakesArgmaxWithUnscaledLogProb) {
  const std::vector<float> logits = {0.1f, 0.7f, 0.7f, -2.0f};
  at::Tensor lp = LogProbsOf(logits, 0.0);  // T = 0 scores at T = 1
  SamplingParams greedy;
  greedy.temperature = 0;
  SampleRng rng(1);
  SampledToken t = SampleFromLogProbs(lp.data_ptr<float>(), 4, greedy, rng);
  EXPECT_EQ(t.id, 1);  // ties: lowest id
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_NEAR(t.logprob, 0.7 - std::log(z), 1e-6);
}

TEST(SamplerTest, ValidateNamesTheBadField) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.temperature = -1;
  EXPECT_NE(std::string(p.Validate().message()).find("temperature"), std::string::npos);
  p = SamplingParams();
  p.top_p = 0;
  EXPECT_NE(std::string(p.Validate().message()).find("top_p"), std::string::npos);
  p = SamplingParams();
  p.top_k = -3;
  EXPECT_NE(std::string(p.Validate().message()).find("top_k"), std::string::npos);
  p = SamplingParams();
  p.max_new_tokens = 0;
  EXPECT_NE(std::string(p.Validate().message()).find("max_new_tokens"), std::string::npos);
  p = SamplingParams();
  p.stop = {""};
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace cohort::model
