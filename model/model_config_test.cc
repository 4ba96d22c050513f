#include "model/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::model {
namespace {

using ::testing::HasSubstr;

// As published on the Hugging Face hub (Qwen/Qwen2.5-0.5B).
constexpr char kQwen25[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
  "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
  "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
  "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// Qwen/Qwen3-0.6B.
constexpr char kQwen3[] = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
  "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// meta-llama/Llama-3.2-1B-Instruct.
constexpr char kLlama[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

TEST(ModelConfigTest, ParsesQwen25) {
  auto c = ModelConfig::FromJson(kQwen25);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c->model_type, "qwen2");
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->hidden_size, 896);
  EXPECT_EQ(c->head_dim, 64);  // 896 / 14
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, "");
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(151643));
}

TEST(ModelConfigTest, ParsesQwen3) {
  auto c = ModelConfig::FromJson(kQwen3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);  // explicit, != 1024 / 16
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->max_position_embeddings, 40960);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(151645));
}

TEST(ModelConfigTest, ParsesLlama3) {
  auto c = ModelConfig::FromJson(kLlama);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_FALSE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, DefaultsWhenKeysAreAbsent) {
  auto c = ModelConfig::FromJson(R"({"model_type": "llama", "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->torch_dtype, "float32");
}

TEST(ModelConfigTest, ReadsTransformers5RopeParameters) {
  auto c = ModelConfig::FromJson(R"({"model_type": "llama", "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "dtype": "bfloat16",
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

void ExpectError(const std::string& text, const std::string& needle) {
  auto c = ModelConfig::FromJson(text);
  ASSERT_FALSE(c.ok()) << "accepted: " << text;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(needle));
}

// kQwen3 with one key replaced (or removed when value is empty).
std::string Qwen3With(const std::string& key, const std::string& value) {
  auto j = nlohmann::json::parse(kQwen3);
  if (value.empty()) {
    j.erase(key);
  } else {
    j[key] = nlohmann::json::parse(value);
  }
  return j.dump();
}

TEST(ModelConfigTest, ErrorsNameTheKey) {
  ExpectError("{not json", "not valid JSON");
  ExpectError("[1]", "not a JSON object");
  ExpectError(Qwen3With("model_type", ""), "\"model_type\" is missing");
  ExpectError(Qwen3With("model_type", "\"gpt2\""), "\"model_type\" is \"gpt2\"");
  ExpectError(Qwen3With("hidden_size", ""), "\"hidden_size\" is missing");
  ExpectError(Qwen3With("hidden_size", "\"1024\""),
              "\"hidden_size\" is \"1024\", expected an integer");
  ExpectError(Qwen3With("num_hidden_layers", "0"),
              "\"num_hidden_layers\" is 0, expected a positive");
  ExpectError(Qwen3With("vocab_size", "-5"), "\"vocab_size\" is -5");
  ExpectError(Qwen3With("num_key_value_heads", "5"),
              "\"num_key_value_heads\" is 5, which does not divide");
  ExpectError(Qwen3With("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})"),
              "\"rope_scaling\" has rope_type \"yarn\"");
  ExpectError(Qwen3With("rms_norm_eps", "\"small\""), "\"rms_norm_eps\"");
  ExpectError(Qwen3With("hidden_act", "\"gelu\""), "\"hidden_act\" is \"gelu\"");
  ExpectError(Qwen3With("use_sliding_window", "true"), "\"use_sliding_window\"");
  ExpectError(Qwen3With("eos_token_id", "\"</s>\""), "\"eos_token_id\"");
  ExpectError(Qwen3With("torch_dtype", "\"int8\""), "\"torch_dtype\" is \"int8\"");
  ExpectError(Qwen3With("architectures", R"(["Qwen3Model"])"), "\"architectures\"");
  ExpectError(Qwen3With("tie_word_embeddings", "1"), "\"tie_word_embeddings\"");
  ExpectError(Qwen3With("head_dim", "3"), "\"head_dim\" is 3");
}

TEST(ModelConfigTest, ToJsonRoundTrips) {
  for (const char* text : {kQwen25, kQwen3, kLlama}) {
    auto c = ModelConfig::FromJson(text);
    ASSERT_TRUE(c.ok());
    std::string written = c->ToJson();
    auto again = ModelConfig::FromJson(written);
    ASSERT_TRUE(again.ok()) << again.status() << "\n" << written;
    EXPECT_EQ(again->ToJson(), written);
    EXPECT_EQ(again->Fingerprint(), c->Fingerprint());
    auto j = nlohmann::json::parse(written);
    // Fields transformers needs to pick the class and build the model.
    EXPECT_EQ(j["architectures"][0], c->architecture);
    EXPECT_EQ(j["model_type"], c->model_type);
    EXPECT_EQ(j["torch_dtype"], c->torch_dtype);
    EXPECT_EQ(j["head_dim"], c->head_dim);
  }
  auto llama = ModelConfig::FromJson(kLlama);
  auto j = nlohmann::json::parse(llama->ToJson());
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(j["eos_token_id"], nlohmann::json::parse("[128001, 128008, 128009]"));
}

TEST(ModelConfigTest, FingerprintTracksArchitecture) {
  auto a = ModelConfig::FromJson(kQwen3);
  auto b = ModelConfig::FromJson(Qwen3With("torch_dtype", "\"float32\""));
  auto c = ModelConfig::FromJson(Qwen3With("num_hidden_layers", "27"));
  auto d = ModelConfig::FromJson(Qwen3With("rope_theta", "10000"));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(a->Fingerprint().size(), 16u);
  EXPECT_EQ(a->Fingerprint(), b->Fingerprint());
  EXPECT_NE(a->Fingerprint(), c->Fingerprint());
  EXPECT_NE(a->Fingerprint(), d->Fingerprint());
}

TEST(ModelConfigTest, FromFileNamesThePath) {
  auto c = ModelConfig::FromFile("/nonexistent/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/config.json"));
}

}  // namespace
}  // namespace cohort::model
