#include "learner/weight_server.h"

#include <cstring>
#include <unistd.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/file.h"
#include "learner/trainer.h"
#include "model/checkpoint.h"
#include "model/tiny_model.h"

namespace cohort::learner {
namespace {

using model::testing::TinyConfig;
using model::testing::Variant;
using ::testing::HasSubstr;

int64_t ParameterBytes(const model::ModelConfig& config, int64_t element_size) {
  int64_t n = 0;
  for (const auto& [name, shape] : model::Transformer::ExpectedWeightShapes(config)) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    n += numel * element_size;
  }
  return n;
}

std::string TempDir(const std::string& name) {
  std::string dir = std::filesystem::temp_directory_path() /
                    ("weight_server_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// What a generate stage serves equals what the Trainer would have served,
// byte for byte, in both served dtypes and both head layouts.
TEST(WeightServerTest, ServesTheTrainersBytesWithOneCopyAndNoOptimizer) {
  for (Variant variant : {Variant::kQwen2, Variant::kQwen3}) {
    for (const std::string dtype : {"float32", "bfloat16"}) {
      SCOPED_TRACE(dtype);
      const model::ModelConfig config = TinyConfig(variant);
      TrainerOptions to;
      to.serve_dtype = dtype;
      auto trainer = Trainer::Create(config, model::testing::RandomWeights(config, 7), to);
      ASSERT_TRUE(trainer.ok()) << trainer.status();
      auto server = WeightServer::Create(config, model::testing::RandomWeights(config, 7), dtype);
      ASSERT_TRUE(server.ok()) << server.status();

      absl::StatusOr<WeightSnapshot> want = (*trainer)->ExportWeights();
      absl::StatusOr<WeightSnapshot> got = (*server)->ExportWeights();
      ASSERT_TRUE(want.ok() && got.ok());
      ASSERT_EQ(got->tensors.size(), want->tensors.size());
      for (size_t i = 0; i < got->tensors.size(); ++i) {
        const WeightTensor& a = got->tensors[i];
        const WeightTensor& b = want->tensors[i];
        ASSERT_EQ(a.name, b.name);
        ASSERT_EQ(a.dtype, b.dtype);
        ASSERT_EQ(a.shape, b.shape);
        ASSERT_EQ(a.size, b.size);
        EXPECT_EQ(std::memcmp(a.data.get(), b.data.get(), a.size), 0) << a.name;
      }
      EXPECT_EQ((*server)->info().model_fingerprint, (*trainer)->info().model_fingerprint);
      EXPECT_EQ((*server)->info().vocab_size, (*trainer)->info().vocab_size);
      EXPECT_EQ((*server)->info().dtype, dtype);

      // One copy of the parameters in the served dtype: no fp32 master
      // copy, no AdamW moments, no reference model.
      const int64_t served = ParameterBytes(config, dtype == "bfloat16" ? 2 : 4);
      EXPECT_EQ((*server)->held_bytes(), served);
      // Exporting again shares the buffers (no copy per version).
      absl::StatusOr<WeightSnapshot> again = (*server)->ExportWeights();
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(again->tensors[0].data.get(), got->tensors[0].data.get());

      absl::StatusOr<StepResult> step = (*server)->TrainStep({});
      EXPECT_EQ(step.status().code(), absl::StatusCode::kFailedPrecondition);
    }
  }
}

// Its checkpoint holds the model (HF layout, the served weights) and no
// optimizer state, and loads back; a checkpoint of another model is refused.
TEST(WeightServerTest, CheckpointHoldsTheModelAndNoOptimizerState) {
  const model::ModelConfig config = TinyConfig(Variant::kQwen2);
  auto server = WeightServer::Create(config, model::testing::RandomWeights(config, 3), "float32");
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string dir = TempDir("ckpt");
  ASSERT_TRUE((*server)->SaveCheckpoint(dir).ok());
  EXPECT_FALSE(PathExists(dir + "/optimizer.safetensors"));
  EXPECT_FALSE(PathExists(dir + "/reference.safetensors"));
  absl::StatusOr<model::LoadedModel> m = model::LoadModelDir(dir + "/model", at::kFloat);
  ASSERT_TRUE(m.ok()) << m.status();
  const model::TensorMap want = model::testing::RandomWeights(config, 3);
  for (const auto& [name, w] : want) {
    EXPECT_TRUE(at::equal(m->weights.at(name), w)) << name;
  }
  EXPECT_TRUE((*server)->LoadCheckpoint(dir).ok());

  model::ModelConfig other = config;
  other.num_hidden_layers += 1;
  auto other_server =
      WeightServer::Create(other, model::testing::RandomWeights(other, 3), "float32");
  ASSERT_TRUE(other_server.ok());
  absl::Status s = (*other_server)->LoadCheckpoint(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("another model"));
  std::filesystem::remove_all(dir);
}

TEST(WeightServerTest, RefusesBadWeightsAndDtype) {
  const model::ModelConfig config = TinyConfig(Variant::kQwen2);
  model::TensorMap weights = model::testing::RandomWeights(config, 1);
  weights.erase(weights.begin());
  EXPECT_FALSE(WeightServer::Create(config, weights, "float32").ok());
  auto bad = WeightServer::Create(config, model::testing::RandomWeights(config, 1), "int8");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("int8"));
}

}  // namespace
}  // namespace cohort::learner
