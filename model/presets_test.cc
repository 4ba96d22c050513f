#include "model/presets.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace cohort::model {
namespace {

TEST(PresetsTest, EveryPresetIsAValidConfig) {
  std::set<std::string> names;
  for (const ModelPreset& p : ModelPresets()) {
    SCOPED_TRACE(p.name);
    EXPECT_TRUE(names.insert(p.name).second) << "duplicate preset";
    EXPECT_NE(std::string(p.description), "");
    absl::StatusOr<ModelConfig> c = PresetConfig(p.name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->architecture.empty());
    EXPECT_GT(c->vocab_size, 0);
    EXPECT_GT(c->hidden_size, 0);
    EXPECT_EQ(c->num_attention_heads % c->num_key_value_heads, 0);
  }
  EXPECT_EQ(PresetNames().size(), ModelPresets().size());
}

TEST(PresetsTest, TinyLayoutsShareShapes) {
  ModelConfig tiny = *PresetConfig("tiny");
  ModelConfig qwen2 = *PresetConfig("tiny-qwen2");
  ModelConfig llama = *PresetConfig("tiny-llama");
  for (const ModelConfig* c : {&qwen2, &llama}) {
    EXPECT_EQ(c->hidden_size, tiny.hidden_size);
    EXPECT_EQ(c->num_hidden_layers, tiny.num_hidden_layers);
    EXPECT_EQ(c->num_key_value_heads, tiny.num_key_value_heads);
  }
  EXPECT_TRUE(tiny.qk_norm);
  EXPECT_TRUE(qwen2.attention_bias);
  EXPECT_FALSE(llama.tie_word_embeddings);
  EXPECT_EQ(llama.rope_scaling.type, "llama3");
  EXPECT_EQ(llama.rope_scaling.original_max_position_embeddings, 64);
  ModelConfig big = *PresetConfig("llama3-1b");
  EXPECT_TRUE(big.tie_word_embeddings);
  EXPECT_EQ(big.rope_scaling.factor, 32.0);
  EXPECT_EQ(big.eos_token_ids, std::vector<int64_t>{128001});
}

TEST(PresetsTest, UnknownPresetListsTheKnownOnes) {
  absl::StatusOr<ModelConfig> c = PresetConfig("huge");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("unknown model preset 'huge' (known: tiny, tiny-qwen2"),
            std::string::npos)
      << c.status();
}

}  // namespace
}  // namespace cohort::model
