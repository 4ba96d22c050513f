// The architecture of a decoder-only model, read from a Hugging Face
// `config.json` (Qwen2, Qwen2.5, Qwen3, Llama 3 layouts). Torch-free.
#ifndef COHORT_MODEL_MODEL_CONFIG_H_
#define COHORT_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::model {

// Llama 3 style RoPE frequency scaling ("rope_type": "llama3").
struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // e.g. "Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM"
  std::string model_type;    // "qwen2", "qwen3", "llama"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA; == num_attention_heads for MHA
  int64_t head_dim = 0;             // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;          // q/k/v projections have biases (Qwen2)
  bool qk_norm = false;                 // per-head RMSNorm on q and k (Qwen3)
  std::string torch_dtype = "float32";  // "float32", "bfloat16", "float16"
  int64_t bos_token_id = -1;            // -1: none
  std::vector<int64_t> eos_token_ids;   // config's eos_token_id (int or list)

  // Parses config.json text; errors name the key and what was expected.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& text);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // Writes config.json text that Hugging Face transformers loads.
  std::string ToJson() const;
  // Stable hash of the fields that shape the tensors (actors and learner
  // must agree on it).
  std::string Fingerprint() const;
};

}  // namespace cohort::model

#endif  // COHORT_MODEL_MODEL_CONFIG_H_
