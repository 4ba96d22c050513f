// Model architecture presets for `cohort init-model`, tests and benchmarks,
// written once: one row per preset in model/presets.cc (name, one-line
// description, the config). Adding a preset is adding a row there.
//
//   tiny             qwen3-style (q/k norm, tied embeddings): hidden 64,
//                    2 layers, 4 heads, 2 kv heads, head_dim 16,
//                    intermediate 128, vocab 1024; runs in milliseconds on a CPU
//   tiny-qwen2       the same shapes in the Qwen2 layout (q/k/v biases)
//   tiny-llama       the same shapes in the Llama 3 layout (untied lm_head,
//                    llama3 RoPE scaling, original context 64)
//   tiny-quickstart  the quickstart's model: qwen3 layout, hidden 64,
//                    4 layers, 4 heads (4 kv heads), head_dim 16, intermediate
//                    192, context 256; takes its tokenizer's vocabulary
//   qwen2.5-0.5b     Qwen/Qwen2.5-0.5B shapes (q/k/v bias, tied, vocab 151936)
//   qwen3-0.6b       Qwen/Qwen3-0.6B shapes (q/k norm, head_dim 128, tied)
//   llama3-1b        meta-llama/Llama-3.2-1B shapes (llama3 RoPE scaling, tied)
// Token ids (bos/eos) are the originals'; callers adapt them (and the vocab
// size) to their tokenizer.
//
// Torch-free (target cohort_model_config). Thread-safety: constants.
#ifndef COHORT_MODEL_PRESETS_H_
#define COHORT_MODEL_PRESETS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_config.h"

namespace cohort::model {

struct ModelPreset {
  const char* name;
  const char* description;  // one line
  ModelConfig (*make)();
};

// Every preset, in the order --help lists them.
const std::vector<ModelPreset>& ModelPresets();

// The config of preset `name`; InvalidArgument naming the known presets.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);
std::vector<std::string> PresetNames();

}  // namespace cohort::model

#endif  // COHORT_MODEL_PRESETS_H_
