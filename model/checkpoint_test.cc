#include "model/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

// <ATen/core/ivalue.h> must precede <ATen/ATen.h> with clang 14 in C++20
// mode (otherwise: "arithmetic on a pointer to an incomplete type IValue").
// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
// clang-format on

#include "core/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

ModelConfig SmallConfig(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.architecture = type == "qwen2"   ? "Qwen2ForCausalLM"
                   : type == "qwen3" ? "Qwen3ForCausalLM"
                                     : "LlamaForCausalLM";
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.attention_bias = type == "qwen2";
  c.qk_norm = type == "qwen3";
  c.tie_word_embeddings = type != "llama";
  c.bos_token_id = 1;
  c.eos_token_ids = {2, 3};
  return c;
}

TensorMap RandomWeights(const ModelConfig& c, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  TensorMap w;
  for (const TensorSpec& spec : ExpectedTensors(c)) {
    w.emplace(spec.name, at::randn(spec.shape).to(dtype));
  }
  return w;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("checkpoint_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void ExpectBitEqual(const TensorMap& a, const TensorMap& b) {
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, t] : a) {
      auto it = b.find(name);
      ASSERT_NE(it, b.end()) << name;
      ASSERT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
      EXPECT_TRUE(at::equal(it->second, t)) << name;
    }
  }

  fs::path dir_;
};

TEST(ExpectedTensorsTest, FollowsTheHfLayout) {
  auto names = [](const ModelConfig& c) {
    std::map<std::string, std::vector<int64_t>> m;
    for (const TensorSpec& t : ExpectedTensors(c)) m[t.name] = t.shape;
    return m;
  };
  auto qwen2 = names(SmallConfig("qwen2"));
  EXPECT_EQ(qwen2.at("model.embed_tokens.weight"), (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(qwen2.at("model.layers.1.self_attn.q_proj.weight"), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(qwen2.at("model.layers.1.self_attn.k_proj.weight"), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(qwen2.at("model.layers.0.self_attn.k_proj.bias"), (std::vector<int64_t>{16}));
  EXPECT_EQ(qwen2.at("model.layers.0.mlp.down_proj.weight"), (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(qwen2.count("lm_head.weight"), 0u);
  EXPECT_EQ(qwen2.count("model.layers.0.self_attn.q_norm.weight"), 0u);
  EXPECT_EQ(qwen2.size(), 1 + 2 * 12 + 1u);

  auto qwen3 = names(SmallConfig("qwen3"));
  EXPECT_EQ(qwen3.at("model.layers.0.self_attn.q_norm.weight"), (std::vector<int64_t>{8}));
  EXPECT_EQ(qwen3.count("model.layers.0.self_attn.q_proj.bias"), 0u);

  auto llama = names(SmallConfig("llama"));
  EXPECT_EQ(llama.at("lm_head.weight"), (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(llama.size(), 1 + 2 * 9 + 2u);
}

TEST(PresetTest, ParameterCountsMatchThePublishedModels) {
  auto count = [](const std::string& preset) {
    auto c = PresetConfig(preset);
    EXPECT_TRUE(c.ok()) << preset;
    int64_t n = 0;
    for (const TensorSpec& t : ExpectedTensors(*c)) {
      int64_t k = 1;
      for (int64_t d : t.shape) k *= d;
      n += k;
    }
    return n;
  };
  EXPECT_EQ(count("qwen2.5-0.5b"), 494032768);  // Qwen/Qwen2.5-0.5B
  EXPECT_EQ(count("qwen3-0.6b"), 596049920);    // Qwen/Qwen3-0.6B
  EXPECT_EQ(count("llama3-1b"), 1235814400);    // meta-llama/Llama-3.2-1B
  EXPECT_LT(count("tiny"), 200000);
  auto bad = PresetConfig("gpt2");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("unknown model preset 'gpt2'"));
  // Every preset survives config.json.
  for (const std::string& name : PresetNames()) {
    auto c = PresetConfig(name);
    auto again = ModelConfig::FromJson(c->ToJson());
    ASSERT_TRUE(again.ok()) << name << ": " << again.status();
    EXPECT_EQ(again->Fingerprint(), c->Fingerprint()) << name;
  }
}

TEST(PresetTest, RandomInitFollowsTransformers) {
  auto c = PresetConfig("tiny");
  ASSERT_TRUE(c.ok());
  c->attention_bias = true;
  TensorMap a = RandomInitWeights(*c, 42);
  TensorMap b = RandomInitWeights(*c, 42);
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  EXPECT_FALSE(at::equal(a.at("model.embed_tokens.weight"),
                         RandomInitWeights(*c, 43).at("model.embed_tokens.weight")));
  EXPECT_TRUE(at::equal(a.at("model.layers.0.input_layernorm.weight"), at::ones({64})));
  EXPECT_TRUE(at::equal(a.at("model.layers.0.self_attn.k_norm.weight"), at::ones({16})));
  EXPECT_TRUE(at::equal(a.at("model.layers.0.self_attn.q_proj.bias"), at::zeros({64})));
  at::Tensor up = a.at("model.layers.1.mlp.up_proj.weight");
  EXPECT_NEAR(up.std().item<double>(), 0.02, 0.001);
}

TEST_F(CheckpointTest, RoundTripFp32IsBitExact) {
  for (const char* type : {"qwen2", "qwen3", "llama"}) {
    ModelConfig c = SmallConfig(type);
    TensorMap w = RandomWeights(c, at::kFloat, 1);
    std::string dir = (dir_ / type).string();
    ASSERT_TRUE(SaveModelDir(dir, c, w).ok());
    EXPECT_TRUE(fs::exists(fs::path(dir) / "model.safetensors"));
    EXPECT_FALSE(fs::exists(fs::path(dir) / "model.safetensors.index.json"));
    auto loaded = LoadModelDir(dir, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectBitEqual(w, loaded->weights);
    EXPECT_EQ(loaded->config.ToJson(), c.ToJson()) << type;
    EXPECT_EQ(loaded->config.Fingerprint(), c.Fingerprint());
  }
}

TEST_F(CheckpointTest, RoundTripBf16IsBitExactAndConverts) {
  ModelConfig c = SmallConfig("qwen3");
  TensorMap w = RandomWeights(c, at::kBFloat16, 2);
  std::string dir = (dir_ / "bf16").string();
  SaveOptions opts;
  opts.dtype = at::kBFloat16;
  ASSERT_TRUE(SaveModelDir(dir, c, w, opts).ok());
  auto cfg = nlohmann::json::parse(std::ifstream(fs::path(dir) / "config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  auto file = safetensors::File::Open((fs::path(dir) / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find("model.norm.weight")->dtype, "BF16");
  EXPECT_EQ((*file)->metadata().at("format"), "pt");

  auto loaded = LoadModelDir(dir, at::kBFloat16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectBitEqual(w, loaded->weights);
  // BF16 -> F32 on load is exact.
  auto as_f32 = LoadModelDir(dir, at::kFloat);
  ASSERT_TRUE(as_f32.ok());
  for (const auto& [name, t] : w) {
    EXPECT_TRUE(at::equal(as_f32->weights.at(name), t.to(at::kFloat))) << name;
  }
  // F32 weights saved as BF16 round to nearest.
  TensorMap w32 = RandomWeights(c, at::kFloat, 3);
  ASSERT_TRUE(SaveModelDir(dir, c, w32, opts).ok());
  auto rounded = LoadModelDir(dir, at::kFloat);
  ASSERT_TRUE(rounded.ok());
  const auto& name = "model.layers.1.mlp.up_proj.weight";
  EXPECT_TRUE(at::equal(rounded->weights.at(name), w32.at(name).to(at::kBFloat16).to(at::kFloat)));
}

TEST_F(CheckpointTest, ShardedSaveAndLoad) {
  ModelConfig c = SmallConfig("llama");
  TensorMap w = RandomWeights(c, at::kFloat, 4);
  std::string dir = (dir_ / "sharded").string();
  SaveOptions opts;
  opts.max_shard_bytes = 16 * 1024;  // embeddings alone are 12 KiB
  ASSERT_TRUE(SaveModelDir(dir, c, w, opts).ok());
  EXPECT_FALSE(fs::exists(fs::path(dir) / "model.safetensors"));
  auto index = nlohmann::json::parse(std::ifstream(fs::path(dir) / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  for (const std::string& s : shards) {
    EXPECT_TRUE(fs::exists(fs::path(dir) / s)) << s;
    EXPECT_THAT(s, ::testing::MatchesRegex("model-0000[0-9]-of-0000[0-9]\\.safetensors"));
  }
  EXPECT_EQ(index["weight_map"].size(), ExpectedTensors(c).size());
  auto loaded = LoadModelDir(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectBitEqual(w, loaded->weights);
}

TEST_F(CheckpointTest, ReportsAllMissingExtraAndMisShapedTensors) {
  ModelConfig c = SmallConfig("qwen2");
  TensorMap w = RandomWeights(c, at::kFloat, 5);
  // Write the directory by hand, bypassing SaveModelDir's own check.
  w.erase("model.layers.0.self_attn.q_proj.bias");
  w.erase("model.norm.weight");
  w["model.layers.0.mlp.up_proj.weight"] = at::zeros({48, 31});
  w["model.layers.7.mlp.up_proj.weight"] = at::zeros({2});
  w["lm_head.weight"] = at::zeros({96, 32});  // tied: tolerated
  std::vector<safetensors::TensorView> views;
  for (const auto& [name, t] : w) {
    views.push_back({name, "F32", std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                     t.data_ptr(), static_cast<size_t>(t.numel()) * 4});
  }
  fs::path dir = dir_ / "bad";
  fs::create_directories(dir);
  ASSERT_TRUE(safetensors::WriteFile((dir / "model.safetensors").string(), views).ok());
  std::ofstream(dir / "config.json") << c.ToJson();

  auto loaded = LoadModelDir(dir.string(), at::kFloat);
  ASSERT_FALSE(loaded.ok());
  std::string msg(loaded.status().message());
  EXPECT_THAT(msg, HasSubstr(dir.string()));
  EXPECT_THAT(msg, HasSubstr("2 missing: model.layers.0.self_attn.q_proj.bias, model.norm.weight"));
  EXPECT_THAT(msg, HasSubstr("1 unexpected: model.layers.7.mlp.up_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("1 with the wrong shape: model.layers.0.mlp.up_proj.weight is "
                             "[48, 31], expected [48, 32]"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("lm_head")));

  // SaveModelDir refuses the same set and writes nothing.
  fs::path out = dir_ / "refused";
  absl::Status s = SaveModelDir(out.string(), c, w);
  EXPECT_THAT(std::string(s.message()), HasSubstr("2 missing"));
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(CheckpointTest, RefusesNonFloatTensorsAndBadDirs) {
  ModelConfig c = SmallConfig("llama");
  auto missing = LoadModelDir((dir_ / "nope").string(), at::kFloat);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("config.json"));

  TensorMap w = RandomWeights(c, at::kFloat, 6);
  w["model.norm.weight"] = at::ones({32}, at::kLong);
  std::vector<safetensors::TensorView> views;
  for (const auto& [name, t] : w) {
    views.push_back({name, t.scalar_type() == at::kLong ? "I64" : "F32",
                     std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr(),
                     static_cast<size_t>(t.numel()) * t.element_size()});
  }
  fs::path dir = dir_ / "ints";
  fs::create_directories(dir);
  ASSERT_TRUE(safetensors::WriteFile((dir / "model.safetensors").string(), views).ok());
  std::ofstream(dir / "config.json") << c.ToJson();
  auto loaded = LoadModelDir(dir.string(), at::kFloat);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("tensor 'model.norm.weight': dtype I64 is not a floating-point type"));
  EXPECT_FALSE(LoadModelDir(dir.string(), at::kLong).ok());
}

TEST_F(CheckpointTest, LoadsF16Files) {
  ModelConfig c = SmallConfig("qwen3");
  TensorMap w = RandomWeights(c, at::kHalf, 7);
  std::string dir = (dir_ / "f16").string();
  SaveOptions opts;
  opts.dtype = at::kHalf;
  ASSERT_TRUE(SaveModelDir(dir, c, w, opts).ok());
  auto loaded = LoadModelDir(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (const auto& [name, t] : w) {
    EXPECT_TRUE(at::equal(loaded->weights.at(name), t.to(at::kFloat))) << name;
  }
}

TEST_F(CheckpointTest, SaveReplacesExistingDirectoryAndCopiesTokenizer) {
  ModelConfig c = SmallConfig("qwen3");
  std::string dir = (dir_ / "model").string();
  fs::path tok = dir_ / "tok.json";
  fs::path tok_cfg = dir_ / "tok_cfg.json";
  std::ofstream(tok) << R"({"model": {"vocab": {}}})";
  std::ofstream(tok_cfg) << R"({"eos_token": "x"})";
  SaveOptions opts;
  opts.tokenizer_json = tok.string();
  opts.tokenizer_config_json = tok_cfg.string();
  ASSERT_TRUE(SaveModelDir(dir, c, RandomWeights(c, at::kFloat, 8), opts).ok());
  std::ofstream(fs::path(dir) / "stale.txt") << "old";
  TensorMap w2 = RandomWeights(c, at::kFloat, 9);
  ASSERT_TRUE(SaveModelDir(dir, c, w2, opts).ok());
  EXPECT_FALSE(fs::exists(fs::path(dir) / "stale.txt"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tokenizer_config.json"));
  auto gen = nlohmann::json::parse(std::ifstream(fs::path(dir) / "generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 1);
  EXPECT_EQ(gen["eos_token_id"], nlohmann::json::parse("[2, 3]"));
  auto loaded = LoadModelDir(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok());
  ExpectBitEqual(w2, loaded->weights);
  // No temporary directories are left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_THAT(e.path().filename().string(), ::testing::Not(HasSubstr(".tmp-")));
    ++entries;
  }
  EXPECT_EQ(entries, 3);  // model, tok.json, tok_cfg.json

  SaveOptions bad = opts;
  bad.tokenizer_json = (dir_ / "absent.json").string();
  absl::Status s = SaveModelDir(dir, c, w2, bad);
  EXPECT_THAT(std::string(s.message()), HasSubstr("absent.json"));
  auto still = LoadModelDir(dir, at::kFloat);  // the old directory is intact
  ASSERT_TRUE(still.ok());
}

}  // namespace
}  // namespace cohort::model
