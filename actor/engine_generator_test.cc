#include "actor/engine_generator.h"

#include <future>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/aten.h"

#include "model/checkpoint.h"
#include "model/tiny_model.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;
using ::testing::HasSubstr;

std::shared_ptr<const HostWeights> Weights(const model::ModelConfig& config, uint64_t seed,
                                           int64_t version) {
  model::TensorMap map = model::RandomInitWeights(config, seed);
  auto w = std::make_shared<HostWeights>();
  w->version = version;
  for (const model::TensorSpec& spec : model::ExpectedTensors(config)) {
    at::Tensor t = map.at(spec.name).contiguous();
    HostTensor& h = w->tensors.emplace_back();
    h.name = spec.name;
    h.dtype = v1::DTYPE_F32;
    h.shape = spec.shape;
    h.data.assign(static_cast<const char*>(t.data_ptr()), t.numel() * sizeof(float));
  }
  return w;
}

absl::StatusOr<std::vector<GeneratedSample>> Generate(Generator& g, std::vector<int32_t> prompt,
                                                      int max_new, uint64_t seed = 7) {
  GenerateSpec spec;
  spec.prompt = std::move(prompt);
  spec.num_samples = 3;
  spec.sampling.set_temperature(1.0f);
  spec.sampling.set_top_p(1.0f);
  spec.sampling.set_max_new_tokens(max_new);
  spec.sampling.set_seed(seed);
  std::promise<absl::StatusOr<std::vector<GeneratedSample>>> p;
  auto f = p.get_future();
  g.Submit(spec,
           [&p](absl::StatusOr<std::vector<GeneratedSample>> r) { p.set_value(std::move(r)); });
  return f.get();
}

TEST(EngineGenerator, GeneratesWithFetchedWeightsAndSwapsBetweenSteps) {
  model::ModelConfig config = model::testing::TinyConfig(model::testing::Variant::kQwen3);
  config.max_position_embeddings = 64;
  v1::ModelFiles files;
  files.set_config_json(config.ToJson());
  files.set_source("tiny");
  EngineGeneratorOptions options;
  options.slots = 4;
  auto g = MakeEngineGenerator(files, options);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->max_len(), 64);
  // No weights yet.
  EXPECT_EQ(Generate(**g, {1, 2, 3}, 4).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*g)->SwapWeights(Weights(config, 1, 5)).ok());
  auto r = Generate(**g, {1, 2, 3}, 8);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  for (const GeneratedSample& s : *r) {
    EXPECT_EQ(s.tokens.size(), 8u);
    EXPECT_EQ(s.logprobs.size(), 8u);
    EXPECT_THAT(s.versions, ::testing::Each(5));
    EXPECT_EQ(s.finish_reason, v1::FINISH_REASON_LENGTH);
  }
  // The same seed and weights give the same tokens.
  auto again = Generate(**g, {1, 2, 3}, 8);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[1].tokens, (*r)[1].tokens);
  // A swap: later requests carry the new version.
  ASSERT_TRUE((*g)->SwapWeights(Weights(config, 2, 6)).ok());
  auto after = Generate(**g, {1, 2, 3}, 4);
  ASSERT_TRUE(after.ok());
  EXPECT_THAT((*after)[0].versions, ::testing::Each(6));
  EXPECT_EQ((*g)->version(), 6);
  // A prompt that does not fit, and weights of the wrong shape.
  EXPECT_EQ(Generate(**g, std::vector<int32_t>(64, 1), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto wrong = std::make_shared<HostWeights>(*Weights(config, 3, 7));
  wrong->tensors.pop_back();
  EXPECT_FALSE((*g)->SwapWeights(wrong).ok());
  EXPECT_GT((*g)->generated_tokens(), 0);
  (*g)->Stop();
  EXPECT_EQ(Generate(**g, {1, 2}, 4).status().code(), absl::StatusCode::kCancelled);
}

TEST(EngineGenerator, BadModelFilesAreNamed) {
  v1::ModelFiles files;
  EXPECT_THAT(MakeEngineGenerator(files, {}).status().message(), HasSubstr("config.json"));
  files.set_config_json("{}");
  files.set_source("x");
  EXPECT_THAT(MakeEngineGenerator(files, {}).status().message(), HasSubstr("config.json of x"));
}

}  // namespace
}  // namespace cohort::actor
