// Random-weight models for tests and benchmarks: the right HF names and
// shapes, no download. Header-only; not for production use.
#ifndef COHORT_MODEL_TINY_MODEL_H_
#define COHORT_MODEL_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "model/aten.h"
#include <ATen/CPUGeneratorImpl.h>

#include "model/model_config.h"
#include "model/tensor_map.h"
#include "model/transformer.h"

namespace cohort::model::testing {

enum class Variant { kQwen2, kQwen3, kLlama3 };

// The layout's name, e.g. for parametrized test names.
inline std::string VariantName(Variant variant) {
  switch (variant) {
    case Variant::kQwen2:
      return "Qwen2";
    case Variant::kQwen3:
      return "Qwen3";
    case Variant::kLlama3:
      return "Llama3";
  }
  return "unknown";
}

// A small config of each layout: vocab 256, hidden 64, 2 layers, 4 heads,
// 2 KV heads (GQA), head_dim 16.
inline ModelConfig TinyConfig(Variant variant = Variant::kQwen2) {
  ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-6;
  switch (variant) {
    case Variant::kQwen2:
      c.architecture = "Qwen2ForCausalLM";
      c.model_type = "qwen2";
      c.attention_bias = true;
      c.tie_word_embeddings = true;
      c.rope_theta = 1000000.0;
      break;
    case Variant::kQwen3:
      c.architecture = "Qwen3ForCausalLM";
      c.model_type = "qwen3";
      c.qk_norm = true;
      c.tie_word_embeddings = false;
      c.rope_theta = 1000000.0;
      break;
    case Variant::kLlama3:
      c.architecture = "LlamaForCausalLM";
      c.model_type = "llama";
      c.tie_word_embeddings = false;
      c.rope_theta = 500000.0;
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = 8.0;
      c.rope_scaling.low_freq_factor = 1.0;
      c.rope_scaling.high_freq_factor = 4.0;
      // Small so that the scaled band covers this head_dim's frequencies.
      c.rope_scaling.original_max_position_embeddings = 64;
      break;
  }
  return c;
}

// Random weights for `config`: matrices N(0, std), norms 1 + N(0, 0.1),
// biases N(0, 0.1); deterministic in `seed`.
inline TensorMap RandomWeights(const ModelConfig& config, uint64_t seed, double std = 0.08) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TensorMap weights;
  for (const auto& [name, shape] : Transformer::ExpectedWeightShapes(config)) {
    at::Tensor t = at::empty(shape, at::kFloat);
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (is_norm) {
      t.normal_(1.0, 0.1, gen);
    } else if (is_bias) {
      t.normal_(0.0, 0.1, gen);
    } else {
      t.normal_(0.0, std, gen);
    }
    weights[name] = t;
  }
  return weights;
}

}  // namespace cohort::model::testing

#endif  // COHORT_MODEL_TINY_MODEL_H_
