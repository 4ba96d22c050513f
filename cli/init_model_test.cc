// `cohort init-model`, run as the real binary.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
// clang-format on

#include "core/safetensors.h"
#include "core/testing/require.h"
#include "core/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::string output;  // stdout and stderr
};

class InitModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("init_model_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result Run(const std::string& args) {
    const std::string log = (dir_ / "out.txt").string();
    std::string cmd =
        std::string(COHORT_BINARY_DIR) + "/cli/cohort init-model " + args + " > '" + log + "' 2>&1";
    int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.output = Slurp(log);
    return r;
  }

  // A byte-level-BPE-shaped tokenizer.json with ids 0..299 and two added
  // tokens at 300 and 301, plus a tokenizer_config.json naming them.
  std::string SmallTokenizer() {
    fs::path tok_dir = dir_ / "tok";
    fs::create_directories(tok_dir);
    nlohmann::json vocab = nlohmann::json::object();
    for (int i = 0; i < 300; ++i) vocab["t" + std::to_string(i)] = i;
    nlohmann::json tok = {
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
        {"added_tokens",
         {{{"id", 300}, {"content", "<|endoftext|>"}, {"special", true}},
          {{"id", 301}, {"content", "<|im_end|>"}, {"special", true}}}}};
    std::ofstream(tok_dir / "tokenizer.json") << tok.dump();
    std::ofstream(tok_dir / "tokenizer_config.json")
        << R"({"eos_token": "<|im_end|>", "bos_token": null})";
    return (tok_dir / "tokenizer.json").string();
  }

  static std::string Slurp(const fs::path& p) { return testutil::Slurp(p.string()); }

  fs::path dir_;
};

TEST_F(InitModelTest, TinyWithTokenizer) {
  std::string tok = SmallTokenizer();
  fs::path out = dir_ / "tiny";
  Result r = Run("--preset tiny --tokenizer " + tok + " --out " + out.string() + " --seed 7");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("wrote " + out.string()));
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json",
                        "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(out / f)) << f;
  }
  auto cfg = nlohmann::json::parse(Slurp(out / "config.json"));
  EXPECT_EQ(cfg["architectures"][0], "Qwen3ForCausalLM");
  EXPECT_EQ(cfg["vocab_size"], 320);  // 302 rounded up to a multiple of 64
  EXPECT_EQ(cfg["hidden_size"], 64);
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["eos_token_id"], nlohmann::json::parse("[301, 300]"));
  EXPECT_TRUE(cfg["bos_token_id"].is_null());

  auto loaded = model::LoadModelDir(out.string(), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::TensorMap& w = loaded->weights;
  EXPECT_TRUE(at::equal(w.at("model.norm.weight"), at::ones({64})));
  EXPECT_TRUE(at::equal(w.at("model.layers.1.self_attn.q_norm.weight"), at::ones({16})));
  at::Tensor emb = w.at("model.embed_tokens.weight");
  EXPECT_EQ(emb.size(0), 320);
  EXPECT_NEAR(emb.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(emb.mean().item<double>(), 0.0, 0.002);
  EXPECT_EQ(w.count("lm_head.weight"), 0u);  // tied

  // Same seed, same bytes; another seed, other weights.
  fs::path again = dir_ / "again";
  ASSERT_EQ(Run("--preset tiny --tokenizer " + tok + " --out " + again.string() + " --seed 7").code,
            0);
  EXPECT_EQ(Slurp(out / "model.safetensors"), Slurp(again / "model.safetensors"));
  fs::path other = dir_ / "other";
  ASSERT_EQ(Run("--preset tiny --tokenizer " + tok + " --out " + other.string() + " --seed 8").code,
            0);
  EXPECT_NE(Slurp(out / "model.safetensors"), Slurp(other / "model.safetensors"));
}

TEST_F(InitModelTest, Bf16AndSharded) {
  fs::path out = dir_ / "bf16";
  Result r = Run("--preset tiny --tokenizer " + SmallTokenizer() + " --out " + out.string() +
                 " --dtype bfloat16 --max-shard-bytes 40000");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  auto ckpt = safetensors::Checkpoint::Open(out.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_GT((*ckpt)->files().size(), 1u);
  for (const safetensors::TensorInfo* t : (*ckpt)->tensors()) EXPECT_EQ(t->dtype, "BF16");
  auto loaded = model::LoadModelDir(out.string(), at::kBFloat16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
}

TEST_F(InitModelTest, SharedQwen3Tokenizer) {
  fs::path tok = fs::path(COHORT_SOURCE_DIR) / "../shared/data/tokenizers/qwen3";
  if (!fs::exists(tok / "tokenizer.json")) {
    COHORT_SKIP_OR_FAIL("no shared data at " << tok
                                             << " (only present on the project's build machine)");
  }
  fs::path out = dir_ / "tiny_qwen3";
  Result r = Run("--preset tiny --tokenizer " + tok.string() + " --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.output;
  auto cfg = nlohmann::json::parse(Slurp(out / "config.json"));
  EXPECT_EQ(cfg["vocab_size"], 151680);  // ids up to 151668, rounded up to 64
  EXPECT_EQ(cfg["eos_token_id"], nlohmann::json::parse("[151645, 151643]"));
  EXPECT_EQ(Slurp(out / "tokenizer.json"), Slurp(tok / "tokenizer.json"));
}

TEST_F(InitModelTest, ErrorsAreClear) {
  Result r = Run("--preset huge --out " + (dir_ / "x").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.output, HasSubstr("unknown model preset 'huge'"));
  EXPECT_THAT(
      r.output,
      HasSubstr(
          "tiny, tiny-qwen2, tiny-llama, tiny-quickstart, qwen2.5-0.5b, qwen3-0.6b, llama3-1b"));

  r = Run("--preset tiny");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.output, HasSubstr("--out"));

  std::ofstream(dir_ / "bad.json") << R"({"model": {"vocab": []}})";
  r = Run("--preset tiny --tokenizer " + (dir_ / "bad.json").string() + " --out " +
          (dir_ / "x").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.output, HasSubstr("no model.vocab object"));

  r = Run("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.output, HasSubstr("--preset"));
}

}  // namespace
}  // namespace cohort::cli
