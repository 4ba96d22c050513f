// A decoder-only transformer in the Hugging Face Qwen2 / Qwen2.5 / Qwen3 /
// Llama 3 layout, written with ATen ops (no torch::nn modules).
//
// Supports RMSNorm, RoPE with rope_theta and Llama 3 frequency scaling,
// grouped-query attention, SwiGLU MLP, q/k/v biases (Qwen2), per-head q/k
// RMSNorm (Qwen3), tied or untied embeddings, fp32 and bf16 weights.
//
// Three entry points share one layer stack:
//   Forward  full padded batch with an attention mask (training, scoring);
//            differentiable when the weights require grad and grad mode is on.
//   Prefill  appends tokens to one KV-cache slot (prompt prefill).
//   Decode   one new token for each of a set of slots of different lengths.
// Logits are always returned as fp32.
//
// Thread-safety: not thread-safe. A Transformer and the KvCache it writes are
// used by one thread at a time (the Engine's loop, or the learner);
// ValidateWeights() is const and may be called from any thread.
#ifndef COHORT_MODEL_TRANSFORMER_H_
#define COHORT_MODEL_TRANSFORMER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/model_config.h"
#include "model/tensor_map.h"

namespace cohort::model {

class KvCache;

class Transformer {
 public:
  // Takes the weights by Hugging Face name (see ExpectedWeightShapes), checks
  // that every expected tensor is present with its shape and that there is
  // nothing extra, and converts them to `dtype` (kFloat or kBFloat16) on
  // `device`. Returns InvalidArgument naming the first bad tensor.
  static absl::StatusOr<std::unique_ptr<Transformer>> Create(const ModelConfig& config,
                                                             TensorMap weights,
                                                             at::ScalarType dtype,
                                                             at::Device device);

  // The names and shapes the config implies (HF layout; Linear is [out, in]).
  static std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedWeightShapes(
      const ModelConfig& config);

  // Checks `weights` against ExpectedWeightShapes: missing, extra and
  // mis-shaped tensors are reported by name.
  static absl::Status CheckWeights(const ModelConfig& config, const TensorMap& weights);

  // Replaces all weights (same checks as Create) and records `version`.
  // Call between steps; the KV caches written with the old weights stay as
  // they are.
  absl::Status SwapWeights(TensorMap weights, int64_t version);

  // tokens: [B, T] integer ids; attention_mask: [B, T] (1 real, 0 padding;
  // left or right padding). Positions are counted over real tokens only, so
  // a left-padded row equals the same row unpadded. Returns logits
  // [B, T, vocab] fp32; rows at padding positions are unspecified.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& tokens,
                                     const at::Tensor& attention_mask) const;

  // Forward without the output projection: the final-normed hidden states
  // [B, T, hidden] in the model's dtype, same checks and masking as Forward.
  // Training computes logits from these in chunks over the sequence with
  // output_embedding(), so tokens x vocabulary never exist at once.
  absl::StatusOr<at::Tensor> ForwardHidden(const at::Tensor& tokens,
                                           const at::Tensor& attention_mask) const;
  // The output projection [vocab, hidden]: lm_head.weight, or the token
  // embedding when tied (the same tensor as in weights()).
  const at::Tensor& output_embedding() const { return lm_head_; }
  // The token embedding [vocab, hidden] (the same tensor as in weights()).
  const at::Tensor& token_embedding() const { return embed_; }

  // --- The layer stack one layer at a time, for a trainer that drives it
  // itself (packed rows, activation checkpointing by recomputing a layer in
  // backward, the embedding's gradient accumulated by the caller). With
  // hidden = embed(tokens), hidden = StackLayer(i, hidden, in) for each i <
  // num_layers(), FinalNorm(hidden) is ForwardHidden's result.
  struct StackInputs {
    at::Tensor rope;     // [2, B, T, 1, head_dim] cos, sin of each position
    at::Tensor allowed;  // [B, 1, T, T] bool
  };
  // `segments` [B, T] integer: 0 = padding, else the id of the sequence the
  // token belongs to; each sequence is contiguous in its row, a row may
  // hold several (packed). Positions restart at 0 where a sequence starts
  // and a token attends only to its own sequence's earlier tokens, so a
  // packed row computes what each sequence alone would. segments =
  // attention_mask is ForwardHidden's padded layout. Checks the ids and
  // lengths as ForwardHidden does.
  absl::StatusOr<StackInputs> PrepareStack(const at::Tensor& tokens,
                                           const at::Tensor& segments) const;
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  // Layer i on hidden [B, T, hidden] (differentiable). Throws c10::Error on
  // shape errors; callers guard it.
  at::Tensor StackLayer(int64_t i, const at::Tensor& hidden, const StackInputs& in) const;
  at::Tensor FinalNorm(const at::Tensor& hidden) const;  // throws as StackLayer
  // StackLayer and FinalNorm on fp32/fp64 CPU weights run the fused kernels
  // of model/fused_ops.h (RMSNorm, q/k norm + RoPE, attention (q.k^T, masked
  // softmax, .v; up to head_dim 128 and 512 positions, else the masked
  // softmax between batched matmuls), SiLU * up: one autograd node each)
  // unless turned off here; they then equal the plain ATen ops up to
  // rounding. Forward, Prefill, Decode and
  // PrefillBatch (the engine) always run the plain ops.
  void set_fused_stack(bool on) { fused_stack_ = on; }
  bool fused_stack() const { return fused_stack_; }

  // Appends `tokens` to `slot` of `cache`, starting at the slot's current
  // length (positions continue from there), and advances the length.
  // Returns the logits of the last token [vocab], or of all new tokens
  // [T, vocab] when all_logits.
  absl::StatusOr<at::Tensor> Prefill(KvCache& cache, int64_t slot,
                                     const std::vector<int32_t>& tokens,
                                     bool all_logits = false) const;

  // One decode step: token i is appended to slots[i] at that slot's current
  // length; every slot's length advances by one. Slots must be distinct.
  // Returns logits [n, vocab].
  absl::StatusOr<at::Tensor> Decode(KvCache& cache, const std::vector<int64_t>& slots,
                                    const std::vector<int32_t>& tokens) const;

  // Prefills several prompts at once, one per slot, as one padded batch;
  // each slot must be empty (length 0) and ends with its prompt's length.
  // Returns the logits of each prompt's last token [n, vocab] fp32, equal
  // (up to rounding) to n separate Prefill calls.
  absl::StatusOr<at::Tensor> PrefillBatch(KvCache& cache, const std::vector<int64_t>& slots,
                                          const std::vector<std::vector<int32_t>>& prompts) const;

  // Decode's computation on device tensors, with no host synchronization
  // and no checks, so that it can be captured in a CUDA graph
  // (cuda_graph_decoder.h): ids [n, 1] and pos [n] (write position = the
  // slot's current length) long, slot_index [n] long; reads keys [0,
  // read_len) of slots [first_slot, first_slot + n) (first_slot >= 0) or of
  // slot_index (first_slot < 0). Does not advance the cache's lengths.
  // Throws c10::Error; callers guard it.
  at::Tensor DecodeOnDevice(KvCache& cache, const at::Tensor& ids, const at::Tensor& pos,
                            const at::Tensor& slot_index, int64_t first_slot,
                            int64_t read_len) const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }
  int64_t version() const { return version_; }
  void set_version(int64_t version) { version_ = version; }
  // The weights by HF name, in the model's dtype and device. Tied models
  // have no lm_head.weight entry. The learner may set requires_grad on them
  // and update them in place.
  TensorMap& weights() { return weights_; }
  const TensorMap& weights() const { return weights_; }
  // Bytes of the weights one decode step reads (all layers, final norm and
  // the output projection; the embedding lookup reads one row per token).
  int64_t DecodeWeightBytes() const;

 private:
  struct Layer {
    at::Tensor input_norm, post_norm;
    at::Tensor wq, wk, wv, wo, bq, bk, bv;  // biases undefined without bias
    at::Tensor q_norm, k_norm;              // undefined without qk_norm
    at::Tensor w_gate, w_up, w_down;
  };
  // Describes where each layer's attention reads its keys and values.
  struct AttentionPlan;

  Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device);
  absl::Status Install(TensorMap weights);
  at::Tensor RunLayers(at::Tensor hidden, const at::Tensor& positions,
                       const AttentionPlan& plan) const;
  at::Tensor RunLayer(int64_t i, const at::Tensor& hidden, const at::Tensor& rope,
                      const AttentionPlan& plan) const;
  at::Tensor RopeTable(const at::Tensor& positions) const;
  at::Tensor Attention(int64_t layer_index, const Layer& layer, const at::Tensor& normed,
                       const at::Tensor& rope, const AttentionPlan& plan) const;
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  at::Tensor Logits(const at::Tensor& hidden) const;
  bool UseFused(const at::Tensor& hidden) const;
  at::Tensor FusedLayer(int64_t i, const at::Tensor& hidden, const StackInputs& in) const;

  // Constant after construction.
  const ModelConfig config_;
  const at::ScalarType dtype_;
  const at::Device device_;
  at::Tensor inv_freq_;  // [head_dim / 2] fp32, Llama 3 scaling applied

  // Replaced by SwapWeights.
  TensorMap weights_;
  std::vector<Layer> layers_;
  at::Tensor embed_, final_norm_, lm_head_;  // lm_head_ aliases embed_ if tied
  int64_t version_ = 0;
  bool fused_stack_ = true;
};

}  // namespace cohort::model

#endif  // COHORT_MODEL_TRANSFORMER_H_
