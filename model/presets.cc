#include "model/presets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort::model {
namespace {

// What every preset starts from.
ModelConfig Base() {
  ModelConfig c;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  return c;
}

// The tiny shapes: hidden 64, 2 layers, 4 heads, 2 kv heads, head_dim 16.
ModelConfig TinyShapes() {
  ModelConfig c = Base();
  c.vocab_size = 1024;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 4096;
  return c;
}

// Llama 3's RoPE scaling (factor, low 1, high 4) over `original` positions.
void Llama3Rope(ModelConfig& c, double factor, int64_t original) {
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = factor;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = original;
}

ModelConfig Tiny() {
  ModelConfig c = TinyShapes();
  c.architecture = "Qwen3ForCausalLM";
  c.model_type = "qwen3";
  c.qk_norm = true;
  return c;
}

ModelConfig TinyQwen2() {
  ModelConfig c = TinyShapes();
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.attention_bias = true;
  return c;
}

ModelConfig TinyLlama() {
  // A short original context, so that the scaling changes most frequencies.
  ModelConfig c = TinyShapes();
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.tie_word_embeddings = false;
  Llama3Rope(c, 8.0, 64);
  return c;
}

ModelConfig TinyQuickstart() {
  // The quickstart's model (the addition task; about 0.2M parameters with
  // its 28-token vocabulary): qwen3 layout, 4 layers, 4 heads (no GQA), a
  // short context.
  ModelConfig c = Base();
  c.architecture = "Qwen3ForCausalLM";
  c.model_type = "qwen3";
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 192;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rope_theta = 10000.0;
  c.qk_norm = true;
  return c;
}

ModelConfig Qwen25_05B() {
  ModelConfig c = Base();
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 32768;
  c.attention_bias = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151643};
  return c;
}

ModelConfig Qwen3_06B() {
  ModelConfig c = Base();
  c.architecture = "Qwen3ForCausalLM";
  c.model_type = "qwen3";
  c.vocab_size = 151936;
  c.hidden_size = 1024;
  c.intermediate_size = 3072;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 40960;
  c.qk_norm = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151645};
  return c;
}

ModelConfig Llama3_1B() {
  ModelConfig c = Base();
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 128256;
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.num_hidden_layers = 16;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 64;
  c.max_position_embeddings = 131072;
  Llama3Rope(c, 32.0, 8192);
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  return c;
}

}  // namespace

const std::vector<ModelPreset>& ModelPresets() {
  static const auto* presets = new std::vector<ModelPreset>{
      {"tiny", "qwen3 layout, hidden 64, 2 layers, vocab 1024 (CPU tests)", Tiny},
      {"tiny-qwen2", "the tiny shapes in the Qwen2 layout", TinyQwen2},
      {"tiny-llama", "the tiny shapes in the Llama 3 layout", TinyLlama},
      {"tiny-quickstart", "the quickstart's model (qwen3 layout, 4 layers)", TinyQuickstart},
      {"qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B shapes", Qwen25_05B},
      {"qwen3-0.6b", "Qwen/Qwen3-0.6B shapes", Qwen3_06B},
      {"llama3-1b", "meta-llama/Llama-3.2-1B shapes", Llama3_1B},
  };
  return *presets;
}

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  for (const ModelPreset& p : ModelPresets()) {
    if (name == p.name) return p.make();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown model preset '", name, "' (known: ", absl::StrJoin(PresetNames(), ", "), ")"));
}

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const ModelPreset& p : ModelPresets()) names.push_back(p.name);
  return names;
}

}  // namespace cohort::model
