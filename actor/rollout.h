// The actor's rollout loop: join the learner, keep the generator full with
// leased prompts, score finished groups while generation continues, submit
// them, and leave cleanly.
//
//   Rollout rollout(options, learner_client);
//   absl::Status s = rollout.Run();   // until drained or stopped
//   // elsewhere, on SIGTERM: rollout.RequestDrain();
//
// Pipeline of one lease: leased -> generating -> generated -> scoring ->
// scored -> submitted. The loop leases ahead so that about
// ceil(slots / G) + 1 groups are queued or decoding at any time, and stops
// starting new groups while `max_unsubmitted_groups` wait for rewards or
// submission (then the engine waits "for rewards"). Scoring runs on its own
// threads, in batches of whatever groups are finished; weights are fetched
// on their own thread whenever the learner reports a newer version, and
// swapped in between decode steps. Heartbeats run on their own thread.
//
// Deterministic mode (JoinResponse.deterministic): each lease is generated
// alone, in lease order, with exactly the version it pins (fetched first if
// needed), with the seeds the lease gives.
//
// Failures:
//   - learner unreachable (UNAVAILABLE / DEADLINE_EXCEEDED): back off
//     (options.reconnect) and retry; leases keep being heartbeated.
//   - NOT_FOUND "unknown actor" (learner restarted) or Heartbeat.rejoin:
//     Join again and carry on with the leases held; the next heartbeat
//     drops those that are gone. A new run_id drops all work. A learner
//     that resumed from a checkpoint can be at an older policy version
//     than this actor: its version becomes the latest and is fetched.
//   - a group the learner refuses (INVALID_ARGUMENT / FAILED_PRECONDITION,
//     e.g. tokens of a version it no longer publishes): dropped, and its
//     lease handed back so the prompt is leased again at once.
//   - Join refused (FAILED_PRECONDITION / INVALID_ARGUMENT: fingerprint or
//     protocol version): Run() returns that error (the binary exits with it).
//   - a lease whose prompt does not fit the context, or that the generator
//     refuses as invalid: submitted with empty completions whose rewards are
//     REWARD_STATUS_INVALID naming the problem (the learner accounts for the
//     prompt; it is never silently dropped).
//   - weights that fail verification are never swapped (WeightClient).
//
// Drain (RequestDrain, or the learner's drain flag): no more leases; leases
// not started yet are handed back at once; work in flight gets until
// drain_grace to be submitted; the rest is handed back explicitly
// (Heartbeat.released_lease_ids). Run() then returns OK.
//
// Every heartbeat and every submitted group carry the engine's wall time by
// state since the first Join (EngineTime: busy, idle waiting for prompts,
// weights or rewards), which the learner reports per actor
// (ActorInfo.engine_time, the run's summary.json).
//
// Metrics (cohort_actor_ prefix): generated_tokens_total,
// tokens_per_second, engine_seconds_total{state=busy|idle_prompts|
// idle_weights|idle_rewards}, engine_idle_fraction{reason}, leases_held,
// token_staleness (histogram of latest version - token version at
// submission), groups_submitted_total, groups_dropped_total{reason},
// leases_released_total, joins_total, policy_version.
//
// Thread-safety: Run() once, from one thread; RequestDrain(), Stop() and
// the getters from any thread.
#ifndef COHORT_ACTOR_ROLLOUT_H_
#define COHORT_ACTOR_ROLLOUT_H_

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
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "actor/generator.h"
#include "actor/lease_keeper.h"
#include "actor/learner_client.h"
#include "actor/reward_client.h"
#include "actor/weight_client.h"
#include "cohort/v1/learner.pb.h"
#include "core/metrics.h"
#include "core/rpc.h"

namespace cohort::actor {

// Builds the generator for the model a Join names (called again when a
// later Join names another model).
using GeneratorFactory =
    std::function<absl::StatusOr<std::unique_ptr<Generator>>(const cohort::v1::JoinResponse&)>;
// Builds the reward client for the servers a Join names.
using RewardClientFactory =
    std::function<absl::StatusOr<std::unique_ptr<RewardClient>>(const cohort::v1::JoinResponse&)>;

struct RolloutOptions {
  std::string actor_name;         // non-empty
  int64_t pid = 0;                // JoinRequest.pid
  int32_t slots = 8;              // JoinRequest.slots
  std::string model_fingerprint;  // "" = generate with the learner's model
  GeneratorFactory make_generator;
  RewardClientFactory make_reward_client;

  // Leases queued beyond those the generator works on; -1 = ceil(slots/G).
  int lease_ahead = -1;
  // Groups generated but not yet submitted beyond which no new group
  // starts; -1 = 2 * ceil(slots/G) + 2.
  int max_unsubmitted_groups = -1;
  int reward_threads = 2;       // concurrent Score calls
  int reward_batch_groups = 8;  // groups per Score call, at most
  absl::Duration drain_grace = absl::Seconds(5);
  // Backoff while the learner is unreachable (max_attempts is ignored:
  // reconnecting never gives up).
  RetryPolicy reconnect = {1, absl::Milliseconds(200), absl::Seconds(5), 2.0, 0.2};
  // Heartbeat period until Join says otherwise; and at most this (so
  // leases are renewed well within their TTL).
  absl::Duration heartbeat_interval = absl::Seconds(2);
  int weight_fetch_attempts = 3;
  MetricsRegistry* metrics = nullptr;  // default MetricsRegistry::Default()
};

struct RolloutStats {
  int64_t joins = 0;
  int64_t groups_submitted = 0;  // accepted (or duplicate) by the learner
  int64_t groups_refused = 0;    // accepted = false
  int64_t groups_dropped = 0;    // lease gone before submission
  int64_t groups_invalid = 0;    // bad prompt, submitted as INVALID
  int64_t leases_granted = 0;
  int64_t leases_released = 0;
  int64_t tokens_generated = 0;
  int64_t weight_swaps = 0;
  std::set<int64_t> policy_versions_seen;  // versions of submitted tokens
  // Engine time by state, seconds.
  double busy_seconds = 0;
  double idle_prompts_seconds = 0;
  double idle_weights_seconds = 0;
  double idle_rewards_seconds = 0;
};

class Rollout {
 public:
  // `learner` is not owned and must outlive the rollout.
  Rollout(RolloutOptions options, LearnerClient* learner);
  ~Rollout();  // Stop()s and joins every thread
  Rollout(const Rollout&) = delete;
  Rollout& operator=(const Rollout&) = delete;

  // Joins and works until drained (OK) or stopped (OK), or until the
  // learner refuses the actor (the error).
  absl::Status Run();
  // Asks for a drain (idempotent).
  void RequestDrain();
  // Ends Run() now: cancels generation, hands every lease back. Idempotent.
  void Stop();

  RolloutStats stats() const;
  std::string actor_id() const;
  int64_t policy_version() const;  // of the generator
  bool joined() const;

 private:
  enum class Stage { kLeased, kGenerating, kGenerated, kScoring, kScored, kSubmitting };
  struct Work {
    cohort::v1::Lease lease;
    Stage stage = Stage::kLeased;
    uint64_t serial = 0;            // distinguishes a re-granted lease id
    cohort::v1::ScoredGroup group;  // completions once generated
    bool invalid = false;           // bad prompt: submitted as INVALID
  };
  enum class EngineState { kBusy, kIdlePrompts, kIdleWeights, kIdleRewards, kCount };

  struct Planned {
    std::string lease_id;
    uint64_t serial = 0;
    GenerateSpec spec;
  };

  // Control thread.
  absl::Status DoJoin() ABSL_LOCKS_EXCLUDED(mu_);
  void SubmitReady() ABSL_LOCKS_EXCLUDED(mu_);
  void LeaseMore() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<Planned> PlanDispatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishDrain() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasActionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Other threads.
  void HeartbeatLoop();
  void ScoreLoop();
  void WeightLoop();
  void OnGenerated(const std::string& lease_id, uint64_t serial,
                   absl::StatusOr<std::vector<GeneratedSample>> result);

  // Helpers (mu_ held).
  void RequestDrainLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkInvalidLocked(Work& work, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLocked(const std::string& lease_id, const char* reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(const std::string& lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LearnerFailedLocked(const absl::Status& status, const char* rpc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LearnerOkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int CountLocked(Stage stage) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Groups generated but not yet submitted.
  int UnsubmittedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int MaxUnsubmittedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Leases to ask for now to keep the engine full (<= 0: none).
  int LeaseWantLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Groups queued or decoding in the generator that keep it full.
  int GroupsPerEngineLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t WantedVersionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateEngineStateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Books the time so far (UpdateEngineStateLocked) and returns the totals
  // by state, as HeartbeatRequest.engine_time carries them.
  cohort::v1::EngineTime EngineTimeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const RolloutOptions options_;
  LearnerClient* const learner_;
  MetricsRegistry* const metrics_;
  LeaseKeeper keeper_;
  WeightClient weights_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // any state change
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool need_rejoin_ ABSL_GUARDED_BY(mu_) = false;
  bool joined_ ABSL_GUARDED_BY(mu_) = false;
  cohort::v1::JoinResponse join_ ABSL_GUARDED_BY(mu_);
  std::string actor_id_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Generator> generator_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<RewardClient> reward_ ABSL_GUARDED_BY(mu_);
  // Replaced by a later Join; kept until the rollout ends because other
  // threads may still hold a pointer to them.
  std::vector<std::unique_ptr<Generator>> retired_generators_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<RewardClient>> retired_rewards_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Work> work_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> lease_order_ ABSL_GUARDED_BY(mu_);  // kLeased, in grant order
  uint64_t next_serial_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t latest_version_ ABSL_GUARDED_BY(mu_) = 0;
  bool have_weights_ ABSL_GUARDED_BY(mu_) = false;
  int64_t swapped_version_ ABSL_GUARDED_BY(mu_) = -1;  // last version swapped in
  // Deterministic mode: WeightLoop is fetching or swapping (no group starts).
  bool fetching_weights_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time weight_retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time lease_not_before_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool lease_refused_for_version_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time learner_down_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int learner_failures_ ABSL_GUARDED_BY(mu_) = 0;
  RolloutStats stats_ ABSL_GUARDED_BY(mu_);
  EngineState engine_state_ ABSL_GUARDED_BY(mu_) = EngineState::kIdleWeights;
  absl::Time engine_state_since_ ABSL_GUARDED_BY(mu_);
  double engine_seconds_[static_cast<int>(EngineState::kCount)] ABSL_GUARDED_BY(mu_) = {};

  std::vector<std::thread> threads_;

  // Metrics.
  Counter* tokens_total_;
  Gauge* tokens_per_second_;
  Gauge* leases_held_;
  Gauge* version_gauge_;
  Histogram* staleness_;
  Counter* submitted_total_;
  Counter* released_total_;
  Counter* joins_total_;
  Counter* engine_seconds_total_[static_cast<int>(EngineState::kCount)];
  Gauge* idle_fraction_[static_cast<int>(EngineState::kCount)];
};

// "FAILED_PRECONDITION: ..." in a sentence for the log: why the learner
// refused this actor (INTERNAL: why this actor cannot use what the
// learner's Join names, e.g. no reward server address).
std::string DescribeJoinRefusal(const absl::Status& status);

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_ROLLOUT_H_
