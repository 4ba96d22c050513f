// The contract between the learner's main loop (learner/loop.h: ledger,
// batches, versions, checkpoints) and the policy trainer (learner/trainer.h:
// GRPO/SFT losses, AdamW, log-prob recompute, model/optimizer files).
// Torch-free, so the loop, the service and their tests build without
// LibTorch; the real trainer implements PolicyTrainer, tests use
// FakePolicyTrainer (learner/fake_trainer.h).
//
// Call order (all from the loop's one training thread):
//   info()                          once, after construction
//   LoadCheckpoint(dir)             at most once, before anything else, when
//                                   resuming
//   ExportWeights()                 for version 0 (the initial weights), and
//                                   after each TrainStep that changed them
//   TrainStep(batch)                once per batch of grpo.prompts_per_step
//                                   groups, in ledger order
//   SaveCheckpoint(dir)             every checkpoint.every_steps steps, on
//                                   Admin/Checkpoint and on stop
//
// Thread-safety: a PolicyTrainer is used by one thread at a time (the
// loop's); it need not be thread-safe. The WeightSnapshot it returns is
// immutable and may be read by any number of threads afterwards.
#ifndef COHORT_LEARNER_TRAINER_INTERFACE_H_
#define COHORT_LEARNER_TRAINER_INTERFACE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::learner {

// ---------------------------------------------------------------------------
// Training data: one scored group as the actor submitted it (validated by
// the service: lengths match, ids inside the vocabulary, log-probs finite).

enum class SampleFinish { kEos, kStop, kLength, kContext, kCancelled };

struct TrainSample {
  std::vector<int32_t> tokens;    // completion ids (prompt excluded)
  std::vector<float> logprobs;    // behaviour log-probs, one per token
  std::vector<int64_t> versions;  // policy version per token
  SampleFinish finish = SampleFinish::kEos;
  // Reward status OK: reward is meaningful. Non-OK samples (verifier
  // TIMEOUT/ERROR/INVALID) are left out of the advantage statistics and the
  // loss.
  bool ok = false;
  double reward = 0.0;  // NaN when !ok
  std::map<std::string, double> components;
  // LENGTH or CONTEXT: cut at the limit (grpo.mask_truncated_completions).
  bool truncated() const {
    return finish == SampleFinish::kLength || finish == SampleFinish::kContext;
  }
};

struct TrainGroup {
  int64_t prompt_id = 0;   // ledger key (record index) ...
  int32_t epoch = 0;       // ... with the epoch
  std::string prompt_uid;  // dataset id
  std::string lease_id;
  std::vector<int32_t> prompt_tokens;  // formatted prompt
  std::vector<TrainSample> samples;    // G, in sample order
};

// ---------------------------------------------------------------------------
// Weights as published: the bytes actors fetch. Torch-free on purpose so the
// weight store and its fetchers do not link LibTorch.

enum class WeightDType { kF32, kBF16, kF16 };
inline int64_t WeightDTypeSize(WeightDType dtype) { return dtype == WeightDType::kF32 ? 4 : 2; }

struct WeightTensor {
  std::string name;  // HF name, e.g. "model.layers.0.mlp.up_proj.weight"
  WeightDType dtype = WeightDType::kF32;
  std::vector<int64_t> shape;
  // Contiguous little-endian row-major bytes; size = numel * dtype size.
  // Shared, immutable once in a snapshot.
  std::shared_ptr<const uint8_t[]> data;
  int64_t size = 0;
};

// Every tensor of the policy, in the order they are streamed (sorted by
// name, so two snapshots of one model line up tensor by tensor).
struct WeightSnapshot {
  std::vector<WeightTensor> tensors;
};

// Allocates an uninitialised buffer for WeightTensor::data.
inline std::shared_ptr<uint8_t[]> AllocateWeightBytes(int64_t size) {
  return std::shared_ptr<uint8_t[]>(new uint8_t[size > 0 ? size : 1]);
}

// ---------------------------------------------------------------------------

struct StepResult {
  // The batch was not applied (NaN/Inf loss or gradient): the weights are
  // unchanged; reason says why. The loop still counts the groups as trained
  // (they were in exactly one batch) and logs the reason.
  bool skipped = false;
  std::string skip_reason;
  int64_t optimizer_steps = 0;  // grpo.num_iterations unless skipped
  int64_t tokens = 0;           // completion tokens trained on
  // Per-step metrics, by name without prefix: "loss", "reward_mean",
  // "accuracy", "kl", "clip_low", "clip_high", "entropy", "mismatch_kl",
  // "grad_norm", "lr", "zero_std_fraction", "response_length_mean", ...
  // They go to metrics.jsonl and to /metrics as cohort_learner_<name>.
  std::map<std::string, double> metrics;
};

// What the service tells actors in Join and checks submissions against.
struct TrainerInfo {
  int64_t vocab_size = 0;
  std::string model_fingerprint;
  std::string config_json;        // the model's config.json
  std::string dtype = "float32";  // served weights: "float32" | "bfloat16"
};

class PolicyTrainer {
 public:
  virtual ~PolicyTrainer() = default;

  virtual TrainerInfo info() const = 0;

  // One training batch: advantages per group, grpo.num_iterations updates
  // (micro-batches, accumulation, clipping, scheduler step). Errors (non-OK)
  // are fatal to the run: they mean the trainer cannot continue (device
  // failure, bug); a bad batch is StepResult::skipped instead.
  virtual absl::StatusOr<StepResult> TrainStep(const std::vector<TrainGroup>& batch) = 0;

  // Copies the current parameters, in TrainerInfo::dtype, into a new
  // snapshot (the one copy publishing costs the training loop).
  virtual absl::StatusOr<WeightSnapshot> ExportWeights() = 0;

  // Writes everything the trainer needs to resume bit-identically (model
  // in HF layout via SaveModelDir, optimizer, scheduler, RNG states) into
  // `dir`, which exists and is empty; the loop adds the ledger and makes
  // the directory complete atomically (tmp dir, fsync, rename, marker).
  virtual absl::Status SaveCheckpoint(const std::string& dir) = 0;
  // Restores what SaveCheckpoint wrote.
  virtual absl::Status LoadCheckpoint(const std::string& dir) = 0;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_TRAINER_INTERFACE_H_
