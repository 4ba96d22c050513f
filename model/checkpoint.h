// Hugging Face model directories: load and save.
//
// A model directory holds config.json, the weights as model.safetensors or
// as shards model-0000N-of-0000M.safetensors listed by
// model.safetensors.index.json, and optionally generation_config.json,
// tokenizer.json and tokenizer_config.json. Tensor names follow the
// Qwen2 / Qwen3 / Llama layout of transformers (see ExpectedTensors).
//
// Functions here are thread-compatible: they share no state.
#ifndef COHORT_MODEL_CHECKPOINT_H_
#define COHORT_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/safetensors.h"
#include "model/model_config.h"
#include "model/presets.h"
#include "model/tensor_map.h"

namespace cohort::model {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a model with `config` has, by HF name, with its shape
// (Linear weights are [out, in]): model.embed_tokens.weight, per layer
// self_attn.{q,k,v,o}_proj.weight (+ q/k/v biases with attention_bias,
// + self_attn.{q,k}_norm.weight with qk_norm), mlp.{gate,up,down}_proj.weight,
// input_layernorm.weight, post_attention_layernorm.weight; model.norm.weight;
// lm_head.weight unless tie_word_embeddings.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

// Compares a set of (name, shape) against ExpectedTensors and reports every
// missing, extra and mis-shaped tensor in one InvalidArgument error.
// With tied embeddings a present lm_head.weight is tolerated (some
// checkpoints carry it; it is ignored).
absl::Status CheckTensorSet(const ModelConfig& config, const std::vector<TensorSpec>& present);

struct LoadedModel {
  ModelConfig config;
  TensorMap weights;  // CPU, contiguous, in the requested dtype
};

// Reads `dir`/config.json and the safetensors weights (single or sharded),
// checks them against ExpectedTensors (all problems in one error), and
// converts F32/BF16/F16/F64 file data to `dtype` (kFloat, kBFloat16 or
// kHalf) on the CPU. The returned tensors own their memory (the files are
// unmapped on return). Ignores lm_head.weight of tied models and
// rotary_emb.inv_freq buffers written by old transformers versions.
absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, at::ScalarType dtype);

struct SaveOptions {
  at::ScalarType dtype = at::kFloat;  // kFloat, kBFloat16 or kHalf
  uint64_t max_shard_bytes = safetensors::kDefaultMaxShardBytes;
  // Copied into the directory when not empty.
  std::string tokenizer_json;         // path to a tokenizer.json
  std::string tokenizer_config_json;  // path to a tokenizer_config.json
};

// Writes a model directory transformers and vLLM load: config.json (with
// torch_dtype set to options.dtype), model.safetensors or shards + index
// when larger than max_shard_bytes, generation_config.json (bos/eos), and
// the tokenizer files when given. `weights` must match ExpectedTensors
// (checked first; nothing is written otherwise) and may live on any device.
// Atomic: everything is written into a temporary sibling directory which
// then replaces `dir` in one rename (an existing `dir` is swapped out with
// renameat2(RENAME_EXCHANGE) and removed), so a reader sees the old or the
// new directory, never a mix.
absl::Status SaveModelDir(const std::string& dir, const ModelConfig& config,
                          const TensorMap& weights, const SaveOptions& options = {});

// Architecture presets (PresetConfig, PresetNames): model/presets.h,
// included above for the callers of this header.

// Random weights as transformers' _init_weights makes them: normal(0, std)
// for linear and embedding weights (std = initializer_range, 0.02), ones
// for RMSNorm weights, zeros for biases. fp32 on the CPU; deterministic for
// a seed (tensors are filled in ExpectedTensors order from one generator).
TensorMap RandomInitWeights(const ModelConfig& config, uint64_t seed, double std = 0.02);

// "F32" -> kFloat, "BF16" -> kBFloat16, ...; error for other dtypes.
absl::StatusOr<at::ScalarType> ScalarTypeFromSafetensors(const std::string& dtype);
// kFloat -> "F32", ...; error for types safetensors cannot hold.
absl::StatusOr<std::string> SafetensorsDtype(at::ScalarType type);

}  // namespace cohort::model

#endif  // COHORT_MODEL_CHECKPOINT_H_
