// cohort's transformer against Hugging Face transformers, on the CPU.
//
// Each folder under model/testdata/hf_ref/ is a tiny random model written by
// `cohort init-model` (config.json + model.safetensors) with hf_logits.json:
// the fp32 logits transformers computed for the same directory and input
// ids (made by scripts/device/check_hf_logits.py; see docs/models.md). The
// test runs cohort's forward on the same ids and requires max |diff| <= 1e-4.
#include <filesystem>
#include <fstream>

// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
// clang-format on

#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace cohort::model {
namespace {

namespace fs = std::filesystem;

constexpr double kTolerance = 1e-4;

TEST(ReferenceLogitsTest, MatchesTransformers) {
  const fs::path root = fs::path(COHORT_SOURCE_DIR) / "model/testdata/hf_ref";
  int checked = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const fs::path golden_path = entry.path() / "hf_logits.json";
    if (!fs::exists(golden_path)) continue;
    SCOPED_TRACE(entry.path().string());
    std::ifstream in(golden_path);
    nlohmann::json golden = nlohmann::json::parse(in);
    std::vector<int64_t> ids = golden["ids"].get<std::vector<int64_t>>();
    const int64_t t = static_cast<int64_t>(ids.size());
    const int64_t vocab = golden["shape"][1].get<int64_t>();
    std::vector<float> want;
    want.reserve(t * vocab);
    for (const auto& row : golden["logits"]) {
      for (const auto& v : row) want.push_back(v.get<float>());
    }
    ASSERT_EQ(static_cast<int64_t>(want.size()), t * vocab);

    auto model = LoadModelDir(entry.path().string(), at::kFloat);
    ASSERT_TRUE(model.ok()) << model.status();
    auto transformer = Transformer::Create(model->config, std::move(model->weights), at::kFloat,
                                           at::Device(at::kCPU));
    ASSERT_TRUE(transformer.ok()) << transformer.status();
    at::Tensor tokens = at::tensor(ids, at::kLong).reshape({1, t});
    auto logits = (*transformer)->Forward(tokens, at::ones({1, t}, at::kLong));
    ASSERT_TRUE(logits.ok()) << logits.status();
    at::Tensor got = logits->to(at::kFloat).reshape({t, vocab});
    at::Tensor ref = at::from_blob(want.data(), {t, vocab}, at::kFloat);
    const double max_diff = (got - ref).abs().max().item<double>();
    std::printf("%s: max |cohort - transformers| = %.3g over [%lld, %lld] logits\n",
                entry.path().filename().c_str(), max_diff, static_cast<long long>(t),
                static_cast<long long>(vocab));
    EXPECT_LE(max_diff, kTolerance);
    ++checked;
  }
  if (checked == 0) {
    GTEST_SKIP()
        << "no hf_logits.json under " << root
        << " (made on a machine with transformers by scripts/device/run_reference_check.sh)";
  }
}

}  // namespace
}  // namespace cohort::model
