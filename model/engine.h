// The generation engine: continuous batching over a fixed pool of KV-cache
// slots.
//
// A request is a prompt, a number of samples G, SamplingParams and EOS ids.
// Scheduling, once per Step():
//   1. Pending weights (SwapWeights) are installed; sequences in flight keep
//      their KV cache and continue with the new weights.
//   2. Free slots are filled, oldest request first. A request's prompt is
//      prefilled ONCE into one slot; its K/V rows are copied into each other
//      sample's slot (and kept as a snapshot while some of its samples still
//      wait for a slot). Every sample draws its first token from the
//      prompt's last logits with its own RNG.
//   3. One decode step runs over every active slot; each sample draws its
//      next token. A sequence that finishes frees its slot at once, and the
//      next Step() gives it to the next sample or request.
// Finish reasons: EOS (an eos id was drawn; it is kept in the completion),
// STOP (the decoded completion contains a stop string; the tokens up to and
// including the one that completed it are kept), LENGTH (max_new_tokens),
// CONTEXT (prompt + completion reached the slot's max_len). Requests still
// queued or in flight when Stop() is called end with status Cancelled.
//
// Every generated token records its behaviour log-prob (see sampler.h) and
// the policy version of the weights whose logits it was drawn from.
//
// Threads: Submit(), SwapWeights() and the getters are thread-safe. Either
// call Start() once (a loop thread runs Step() while there is work; Stop()
// may then be called from any thread), or drive the engine yourself with
// Step()/RunUntilIdle() and call Stop() from that same thread; never both.
#ifndef COHORT_MODEL_ENGINE_H_
#define COHORT_MODEL_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/cuda_graph_decoder.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "model/tensor_map.h"
#include "model/transformer.h"

namespace cohort::model {

enum class FinishReason { kEos, kStop, kLength, kContext };
const char* FinishReasonName(FinishReason reason);  // "eos", "stop", ...

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t num_samples = 1;  // G
  SamplingParams params;
  std::vector<int32_t> eos_ids;
};

struct Completion {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;    // behaviour log-prob per token
  std::vector<int64_t> versions;  // policy version per token
  FinishReason finish_reason = FinishReason::kLength;
};

struct GenerationResult {
  std::vector<Completion> completions;  // num_samples, in sample order
};

struct EngineOptions {
  int64_t num_slots = 16;       // sequences decoded together
  int64_t max_len = 2048;       // prompt + completion positions per slot
  int64_t initial_version = 0;  // policy version of the model's weights
  // Decodes token ids to text for stop strings; required only when a
  // request has stop strings. Called on the engine's thread.
  std::function<std::string(const std::vector<int32_t>&)> decode;
  // GPU only (ignored for a model on the CPU):
  // > 0: num_slots is instead as many slots of max_len as fit in this
  // fraction of the device's free memory (at most max_slots_from_memory).
  double kv_cache_fraction = 0;
  int64_t max_slots_from_memory = 1024;
  // Replay decode steps from CUDA graphs (cuda_graph_decoder.h) when the
  // build's LibTorch has CUDA.
  bool cuda_graphs = true;
  // Prefill the prompts of several new groups in one padded batch
  // (Transformer::PrefillBatch) when several slots are free. Unset: on for a
  // CUDA model, off on the CPU (where one prompt at a time is as fast and
  // results stay bit-identical to a request run alone).
  std::optional<bool> batched_prefill;
};

struct EngineStats {
  int64_t steps = 0;             // decode steps run
  int64_t generated_tokens = 0;  // tokens sampled
  int64_t prefill_tokens = 0;    // prompt tokens run through the model
  int64_t prefix_copies = 0;     // samples that reused a prefilled prompt
  int64_t prefill_batches = 0;   // batched prefills (several prompts each)
};

class Engine {
 public:
  // Takes ownership of the model; allocates the KV cache.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Transformer> model,
                                                        EngineOptions options);
  ~Engine();  // Stop()s

  // Queues a request. The future is fulfilled when all its samples finish,
  // with InvalidArgument for a bad request (empty prompt, id outside the
  // vocabulary, prompt not shorter than max_len, bad params), Cancelled if
  // the engine stops first, or Internal if the model fails.
  std::future<absl::StatusOr<GenerationResult>> Submit(GenerationRequest request);

  // Validates the weights now (shapes by name) and installs them before the
  // next step; tokens drawn from then on carry `version`.
  absl::Status SwapWeights(TensorMap weights, int64_t version);

  // Sequences decoded together (EngineOptions::num_slots, or what
  // kv_cache_fraction made of it). Fixed at Create().
  int64_t num_slots() const { return options_.num_slots; }

  // Starts the loop thread.
  void Start();
  // Cancels everything queued or in flight and joins the loop thread.
  // Idempotent; Submit() afterwards returns Cancelled.
  void Stop();

  // One scheduling iteration (install weights, fill slots, one decode
  // step). Returns false when there was nothing to do. Never throws: an
  // exception inside a step (torch, or EngineOptions::decode) fails the
  // requests in flight with its status and the engine carries on.
  bool Step();
  // Steps until no request is queued or in flight.
  void RunUntilIdle();

  int64_t policy_version() const;
  EngineStats stats() const;
  // The engine's model. Use it (e.g. to score) only from the stepping
  // thread, or while the engine is idle and its loop thread is not started.
  const Transformer& model() const { return *model_; }

 private:
  struct Group;
  struct Slot;

  Engine(std::unique_ptr<Transformer> model, KvCache cache, EngineOptions options);
  void Loop();
  // Loop-thread helpers.
  void InstallPendingWeights();
  void FillSlots();
  // Batched prefill of as many queued groups as there are free slots left
  // after the samples already waiting for one; each gets its sample 0 slot.
  void PrefillNewGroups(EngineStats& delta);
  void DecodeActive();
  // Draws the next token of the sequence in `slot` from `logprobs` (one
  // row) and finishes it when it ends. Returns true if it is still active.
  bool Advance(Slot& slot, const float* logprobs, int64_t version);
  void Finish(Slot& slot, FinishReason reason);
  void FailGroup(const std::shared_ptr<Group>& group, absl::Status status);
  void FailAll(const absl::Status& status);
  // Fails every group that holds a slot or waits for one (not the queue).
  void FailInFlight(const absl::Status& status);
  void AddStats(const EngineStats& delta);

  // Constant after construction.
  const EngineOptions options_;
  bool batched_prefill_ = false;

  // Owned by the stepping thread.
  std::unique_ptr<Transformer> model_;
  KvCache cache_;
  std::unique_ptr<CudaGraphDecoder> graphs_;  // null: eager decode; reads cache_
  std::vector<Slot> slots_;
  std::deque<std::shared_ptr<Group>> started_;  // prefilled, samples waiting
  int64_t active_ = 0;

  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Group>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_groups_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<std::pair<TensorMap, int64_t>> pending_weights_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool started_thread_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar work_cv_;  // signalled on Submit, SwapWeights, Stop
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace cohort::model

#endif  // COHORT_MODEL_ENGINE_H_
