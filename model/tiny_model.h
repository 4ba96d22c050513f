// Random-weight models for tests and benchmarks: the right HF names and
// shapes, no download. Header-only; not for production use.
#ifndef COHORT_MODEL_TINY_MODEL_H_
#define COHORT_MODEL_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "model/aten.h"
#include <ATen/CPUGeneratorImpl.h>

#include "model/model_config.h"
#include "model/presets.h"
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

// A small config of each layout: the tiny presets (model/presets.h: hidden
// 64, 2 layers, 4 heads, 2 KV heads (GQA), head_dim 16), smaller still for
// unit tests: vocab 256, context 512, rms_norm_eps 1e-6 in every layout, and
// Qwen3 with an untied lm_head so that both head paths are covered.
inline ModelConfig TinyConfig(Variant variant = Variant::kQwen2) {
  const char* preset = variant == Variant::kQwen2   ? "tiny-qwen2"
                       : variant == Variant::kQwen3 ? "tiny"
                                                    : "tiny-llama";
  ModelConfig c = *PresetConfig(preset);
  c.vocab_size = 256;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-6;
  if (variant == Variant::kQwen3) c.tie_word_embeddings = false;
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
