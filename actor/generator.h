// The generation side of an actor, as the rollout loop sees it: submit a
// prompt with G samples, get G completions back through a callback, swap
// weights between decode steps. Torch-free: the LibTorch implementation over
// model::Engine is EngineGenerator (actor/engine_generator.h, its own
// library); tests use FakeGenerator (actor/testing/fakes.h).
//
// Contract of every implementation:
//   - Submit() never blocks on generation. `done` runs exactly once, on the
//     generator's thread (or inline in Submit for a request rejected at
//     once), with G samples in sample order, or InvalidArgument (bad
//     request, e.g. a prompt that does not fit the context), Cancelled
//     (Stop() came first) or Internal.
//   - SwapWeights() validates the tensor set and installs it before the
//     next decode step; sequences in flight continue, and each token records
//     the version of the weights it was drawn from. A request submitted
//     after SwapWeights() returned OK, while no other request is in flight,
//     is generated entirely with the new version (deterministic mode relies
//     on this).
//   - Everything is thread-safe; Stop() is idempotent.
#ifndef COHORT_ACTOR_GENERATOR_H_
#define COHORT_ACTOR_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "actor/weights.h"
#include "cohort/v1/common.pb.h"

namespace cohort::actor {

struct GenerateSpec {
  std::vector<int32_t> prompt;
  int32_t num_samples = 1;  // G
  cohort::v1::SamplingParams sampling;
  std::vector<int32_t> eos_ids;
};

struct GeneratedSample {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;    // behaviour log-prob per token
  std::vector<int64_t> versions;  // policy version per token
  cohort::v1::FinishReason finish_reason = cohort::v1::FINISH_REASON_UNSPECIFIED;
  std::string text;  // decoded tokens
};

using GenerateCallback = std::function<void(absl::StatusOr<std::vector<GeneratedSample>>)>;

class Generator {
 public:
  virtual ~Generator() = default;

  virtual void Submit(GenerateSpec spec, GenerateCallback done) = 0;
  virtual absl::Status SwapWeights(std::shared_ptr<const HostWeights> weights) = 0;
  // Version of the weights installed now (the last swap may still be
  // pending until the next step).
  virtual int64_t version() const = 0;
  // Prompt + completion positions per sequence: a prompt must be shorter.
  virtual int64_t max_len() const = 0;
  // Concurrent sequences.
  virtual int64_t slots() const = 0;
  // Tokens sampled so far.
  virtual int64_t generated_tokens() const = 0;
  // Cancels everything queued or in flight (their callbacks get Cancelled)
  // and stops the generator's thread. Submit() afterwards is Cancelled.
  virtual void Stop() = 0;
};

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_GENERATOR_H_
