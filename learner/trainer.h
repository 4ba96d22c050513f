// The policy trainer: GRPO (and its variants) and SFT on a model::Transformer
// whose weights require grad, with a hand-written AdamW on ATen. Implements
// PolicyTrainer (trainer_interface.h) for the learner's loop.
//
//   TrainerOptions options = TrainerOptions::FromConfig(run_config);
//   ASSIGN_OR_RETURN(auto trainer, Trainer::Create(model_config, weights, options));
//   ASSIGN_OR_RETURN(StepResult r, trainer->TrainStep(groups));
//
// One TrainStep: advantages per group from its OK samples (advantages.h);
// the batch's trainable sequences (OK, non-empty, not masked as truncated)
// sorted by length and packed into micro-batches of at most
// optim.micro_batch_tokens tokens (rows x the micro-batch's longest
// sequence): with optim.padding_free (the default) a row holds several
// sequences, first fit, each with its own positions and attention
// (Transformer::PrepareStack's segments), so rows carry (almost) no
// padding; without it, one padded row per sequence. grpo.num_iterations optimizer
// steps, each accumulating the gradients of every micro-batch (each
// micro-batch's loss is its exact share of the batch loss, grpo_loss.h),
// clipping the global norm to optim.max_grad_norm, and applying AdamW at the
// scheduled learning rate (linear warm-up, then constant or cosine).
//
// Log-probs are recomputed at the sampling temperature in fp32 and only at
// completion positions. The output projection runs in chunks of at most
// kLogitChunkElements logits: a first pass without autograd gives the
// log-probs (and the entropy), the loss's gradient with respect to them is
// taken on the small [sequences, tokens] tensor, and a second pass per chunk
// backpropagates it into the hidden states and the output projection; then
// the transformer trunk is backpropagated once (with
// optim.activation_checkpointing, layer by layer from each layer's saved
// input, the layer rerun with autograd: only the layers' inputs live
// through the forward). The embedding's gradient is added into its rows
// with index_add_, so a tied embedding never holds a second dense
// [vocab, hidden] gradient. So tokens x vocabulary
// logits never exist at once (151,936 columns for Qwen) at the cost of one
// extra output-projection forward. When a micro-batch's logits fit in one
// chunk the single pass is used instead.
//
// On fp32 CPU the trunk, the head's log-softmax + gather + entropy and
// AdamW run the fused kernels of model/fused_ops.h (fused_kernels; equal
// to the plain ATen ops up to rounding, docs/learner.md).
//
// The ratio's denominator is the actor's behaviour log-prob, except in
// deterministic mode or with TIS, where it is the learner's own log-prob
// before the batch's first update (then ratio = 1 at the first iteration and
// TIS weights exp(old - behaviour)). The reference model (a frozen copy of
// the initial policy) exists only when grpo.beta > 0.
//
// A NaN/Inf loss or gradient norm stops the batch before the optimizer
// step: the gradients are dropped and weights and AdamW state are left as
// they were; StepResult says why. Deterministic mode: sequences in the
// given order, at::set_num_threads(threads), the actor's floating-point
// log-probs unused by the loss, TIS off; identical inputs give bit-identical
// weights (see docs/learner.md for what it costs).
//
// Thread-safety: not thread-safe (one training thread, as PolicyTrainer).
#ifndef COHORT_LEARNER_TRAINER_H_
#define COHORT_LEARNER_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/config.h"
#include "learner/grpo_loss.h"
#include "learner/trainer_interface.h"
#include "model/model_config.h"
#include "model/tensor_map.h"
#include "model/transformer.h"

namespace cohort::learner {

// Output-projection logits computed at once, at most (64 Mi fp32 = 256 MiB).
inline constexpr int64_t kLogitChunkElements = int64_t{64} << 20;

struct TrainerOptions {
  GrpoSection grpo;
  OptimSection optim;
  double temperature = 1.0;             // sampling.temperature
  int64_t max_completion_length = 256;  // sampling.max_new_tokens (dr_grpo)
  // Optimizer steps the cosine schedule spans when optim.total_steps is 0.
  int64_t planned_steps = 0;
  bool determinism = false;  // learner.determinism
  // learner.threads: at::set_num_threads and, on CPU, OpenBLAS's own pool
  // (openblas_set_num_threads); 0 = leave both as they are.
  int threads = 0;
  std::string serve_dtype = "float32";                 // ExportWeights: float32 | bfloat16
  int64_t logit_chunk_elements = kLogitChunkElements;  // > 0
  bool padding_free = true;                            // optim.padding_free
  bool activation_checkpointing = false;               // optim.activation_checkpointing
  // The fused CPU kernels (model/fused_ops.h) for the trunk (Transformer::
  // set_fused_stack), the head's log-softmax + gather + entropy and AdamW;
  // false runs the plain ATen ops (tests and benchmarks compare the two).
  bool fused_kernels = true;
  // On CPU, set glibc's malloc to keep freed memory (M_TRIM_THRESHOLD 1 GiB)
  // and to serve blocks up to 32 MiB from the heap (M_MMAP_THRESHOLD), for
  // the whole process, once: a step's activations then reuse the previous
  // step's pages instead of faulting in fresh ones.
  bool keep_freed_memory = true;

  // grpo, optim (padding_free, activation_checkpointing included),
  // sampling.temperature / max_new_tokens, model.dtype (served weights),
  // learner.determinism and learner.threads; planned_steps stays 0.
  static TrainerOptions FromConfig(const RunConfig& config);
};

class Trainer final : public PolicyTrainer {
 public:
  // `weights` are the initial policy (any dtype; trained in fp32 on
  // `device`). Checks the options (grpo_loss.h, the optimizer's ranges).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const model::ModelConfig& config,
                                                         model::TensorMap weights,
                                                         const TrainerOptions& options,
                                                         at::Device device = at::kCPU);
  ~Trainer() override;

  TrainerInfo info() const override;
  absl::StatusOr<StepResult> TrainStep(const std::vector<TrainGroup>& batch) override;
  absl::StatusOr<WeightSnapshot> ExportWeights() override;
  // Writes model/ (HF layout, fp32, via SaveModelDir), optimizer.safetensors
  // (AdamW moments), reference.safetensors (beta > 0), rng.safetensors and
  // trainer_state.json (steps, AdamW step count) into `dir`.
  absl::Status SaveCheckpoint(const std::string& dir) override;
  absl::Status LoadCheckpoint(const std::string& dir) override;

  // SFT: NLL on every completion token of every sample (rewards ignored),
  // same packing, accumulation, clipping and schedule; one optimizer step.
  absl::StatusOr<StepResult> SftStep(const std::vector<TrainGroup>& batch);

  // The current policy (for evaluation and greedy/sampled generation). Its
  // weights are the trained fp32 tensors themselves (requires_grad set):
  // read them under at::NoGradGuard and do not modify them.
  const model::Transformer& policy() const { return *policy_; }
  // Detached fp32 copies of the current weights by HF name.
  model::TensorMap PolicyWeights() const;
  int64_t optimizer_steps() const { return optimizer_steps_; }
  // Learning rate of the next optimizer step.
  double NextLearningRate() const;

 private:
  struct Sequence;
  struct MicroBatch;
  struct Adam;

  Trainer(const TrainerOptions& options, at::Device device);
  absl::StatusOr<StepResult> RunBatch(const std::vector<TrainGroup>& batch, bool sft);

  // Constant after construction.
  const TrainerOptions options_;
  const GrpoLossOptions loss_options_;
  const at::Device device_;
  const bool recompute_old_;  // ratio against the learner's own log-probs
  std::string fingerprint_;

  std::unique_ptr<model::Transformer> policy_;
  std::unique_ptr<model::Transformer> reference_;  // beta > 0 only
  std::vector<std::string> names_;                 // parameter names, sorted
  std::unique_ptr<Adam> adam_;
  int64_t optimizer_steps_ = 0;
  int64_t batches_ = 0;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_TRAINER_H_
