// In-process fakes of the actor's interfaces, for tests: a generator that
// makes up tokens, a reward client that scores by rule, and a learner with
// a small in-memory ledger (exactly-once accounting, leases with
// deadlines, versioned weights as real checksummed chunk streams, optional
// deltas) with fault injection. FakeLearnerServer (fake_learner_server.h)
// serves the same ledger as a real cohort.v1.Learner gRPC server.
//
// Thread-safety: every fake is thread-safe.
#ifndef COHORT_ACTOR_TESTING_FAKES_H_
#define COHORT_ACTOR_TESTING_FAKES_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "actor/generator.h"
#include "actor/learner_client.h"
#include "actor/reward_client.h"
#include "actor/weights.h"
#include "cohort/v1/learner.pb.h"

namespace cohort::actor::testing {

// Tokens of sample i of a request: seed-derived ids, `tokens_per_sample`
// of them (the last one EOS when eos_ids is non-empty), one step per
// `step_time`; the version recorded per token is the one installed when
// that step ran. Requests are worked on `slots / G` at a time.
class FakeGenerator final : public Generator {
 public:
  struct Options {
    int64_t slots = 8;
    int64_t max_len = 256;
    int tokens_per_sample = 4;
    absl::Duration step_time = absl::Milliseconds(1);
    int64_t initial_version = -1;
  };
  explicit FakeGenerator(Options options);
  ~FakeGenerator() override;

  void Submit(GenerateSpec spec, GenerateCallback done) override;
  absl::Status SwapWeights(std::shared_ptr<const HostWeights> weights) override;
  int64_t version() const override;
  int64_t max_len() const override { return options_.max_len; }
  int64_t slots() const override { return options_.slots; }
  int64_t generated_tokens() const override;
  void Stop() override;

  // Requests submitted so far and the most ever in flight at once.
  std::vector<GenerateSpec> submitted() const;
  int max_in_flight() const;
  // Versions swapped in, in order.
  std::vector<int64_t> swaps() const;

 private:
  struct Request {
    GenerateSpec spec;
    GenerateCallback done;
    std::vector<GeneratedSample> samples;
    int step = 0;
    size_t index = 0;
  };
  void Loop();

  const Options options_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<Request>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const HostWeights> pending_ ABSL_GUARDED_BY(mu_);
  int64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<GenerateSpec> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> swaps_ ABSL_GUARDED_BY(mu_);
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// Reward 1 when the completion text is non-empty, else 0, status OK; or,
// while failing, every sample ERROR (as RewardClient does after giving up).
class FakeRewardClient final : public RewardClient {
 public:
  std::vector<cohort::v1::RewardResult> Score(
      const std::vector<cohort::v1::ScoreSample>& samples) override;
  void Shutdown() override {}
  void SetFailing(bool failing);
  // Blocks Score calls until Unblock (simulates a slow server).
  void Block();
  void Unblock();
  int64_t calls() const;
  int64_t samples() const;

 private:
  mutable absl::Mutex mu_;
  bool failing_ ABSL_GUARDED_BY(mu_) = false;
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
};

// Deterministic random weights of `version`: `tensors` F32 tensors of
// `elements` each ("w.<i>"); consecutive versions differ in a few elements.
HostWeights FakeWeights(int64_t version, int tensors = 3, int64_t elements = 1000);

// Chunks of a full (or, with `base`, delta) stream of `w`, checksummed as
// FetchPolicy sends them.
std::vector<cohort::v1::WeightChunk> ChunkWeights(const HostWeights& w, int64_t chunk_bytes,
                                                  const HostWeights* base = nullptr);

// An in-memory learner: N prompts (prompt i has tokens {1, 2, ..., 3 + i %
// 5}), one epoch, leases with a TTL, SubmitGroup idempotent by lease id,
// FetchPolicy from FakeWeights. Fault injection: SetUnavailable, Restart
// (forgets actors and leases: "unknown actor"), CorruptNextFetches.
class FakeLearner final : public LearnerClient {
 public:
  struct Options {
    int prompts = 20;
    int group_size = 2;
    int64_t lease_ttl_ms = 2000;
    int64_t heartbeat_interval_ms = 50;
    bool deterministic = false;
    std::vector<std::string> reward_addresses = {"fake:1"};
    int64_t chunk_bytes = 1024;
    bool offer_deltas = true;
    // Prompt ids whose prompt is too long (1000 tokens).
    std::set<int64_t> long_prompts;
    std::string refuse_join;  // non-empty: Join fails FAILED_PRECONDITION with it
    // The model Join names (default: fingerprint "fake-model", EOS 2, no
    // files) and the weights of each version (default FakeWeights).
    cohort::v1::ModelFiles model;
    std::function<HostWeights(int64_t version)> weights;
    std::string task = "fake";  // Lease.task
    std::string answer = "42";  // Lease.answer
    int max_new_tokens = 8;
  };
  explicit FakeLearner(Options options);

  absl::StatusOr<cohort::v1::JoinResponse> Join(const cohort::v1::JoinRequest& request) override;
  absl::StatusOr<cohort::v1::LeasePromptsResponse> LeasePrompts(
      const cohort::v1::LeasePromptsRequest& request) override;
  absl::StatusOr<cohort::v1::HeartbeatResponse> Heartbeat(
      const cohort::v1::HeartbeatRequest& request) override;
  absl::StatusOr<cohort::v1::SubmitGroupResponse> SubmitGroup(
      const cohort::v1::SubmitGroupRequest& request) override;
  // Each chunk's payload is handed over in three uneven pieces, as a
  // message received in several slices is.
  absl::Status FetchPolicy(const cohort::v1::FetchPolicyRequest& request,
                           const std::function<absl::Status(const ChunkView&)>& on_chunk) override;

  // Faults and control.
  void SetUnavailable(bool unavailable);
  void Restart();  // forgets actors and outstanding leases (they return to the queue)
  void CorruptNextFetches(int n);
  // A new latest version (lower: a learner resumed from an older
  // checkpoint). Groups with tokens of a later version are refused.
  void Publish(int64_t version);
  void SetDrain(bool drain);
  void SetPinnedVersion(int64_t version);  // deterministic mode: version leases pin
  // While held, LeasePrompts grants nothing (retry_after_ms 20): a test
  // makes sure work remains for after an event (a swap) it waits for.
  void HoldLeases(bool hold);

  // Accounting.
  std::map<int64_t, int> trained() const;  // prompt id -> accepted submissions
  std::vector<cohort::v1::ScoredGroup> groups() const;
  int64_t queued() const;
  int64_t outstanding() const;  // leased, not settled
  int64_t released() const;     // leases handed back
  // HeartbeatRequest.engine_time of the last heartbeat that carried one.
  cohort::v1::EngineTime last_engine_time() const;
  // SubmitGroupRequest.engine_time of the last group that carried one.
  cohort::v1::EngineTime last_submit_engine_time() const;
  int64_t joins() const;
  int64_t full_fetches() const;
  int64_t delta_fetches() const;
  // The highest HeartbeatRequest.policy_version any actor reported.
  int64_t max_reported_version() const;
  bool done() const;  // every prompt settled

 private:
  struct LeaseState {
    int64_t prompt_id;
    std::string actor_id;
    int64_t deadline_ms;
  };
  absl::Status Check(const std::string& actor_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  bool unavailable_ ABSL_GUARDED_BY(mu_) = false;
  bool drain_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_leases_ ABSL_GUARDED_BY(mu_) = false;
  int64_t max_reported_version_ ABSL_GUARDED_BY(mu_) = 0;
  int corrupt_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t latest_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t pinned_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_actor_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_lease_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t incarnation_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<std::string> actors_ ABSL_GUARDED_BY(mu_);
  std::deque<int64_t> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LeaseState> leases_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> submitted_leases_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, int> trained_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> settled_ ABSL_GUARDED_BY(mu_);
  std::vector<cohort::v1::ScoredGroup> groups_ ABSL_GUARDED_BY(mu_);
  int64_t released_ ABSL_GUARDED_BY(mu_) = 0;
  cohort::v1::EngineTime engine_time_ ABSL_GUARDED_BY(mu_);
  cohort::v1::EngineTime submit_engine_time_ ABSL_GUARDED_BY(mu_);
  int64_t joins_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t full_fetches_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t delta_fetches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cohort::actor::testing

#endif  // COHORT_ACTOR_TESTING_FAKES_H_
