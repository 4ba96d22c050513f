// The leases an actor holds, kept alive by heartbeats.
//
// Beat() sends one Heartbeat: it renews every held lease, hands back the
// released ones (HeartbeatRequest.released_lease_ids, sent until a beat
// succeeds), reports the tokens generated since the last successful beat and
// the engine time by state, and removes (and returns) the leases the learner
// says are gone, so the rollout drops their work. The caller runs Beat() on
// its own schedule (JoinResponse.heartbeat_interval_ms) on a thread that
// never blocks on generation or rewards.
//
// Thread-safety: thread-safe. Beat() calls the learner without holding the
// lock.
#ifndef COHORT_ACTOR_LEASE_KEEPER_H_
#define COHORT_ACTOR_LEASE_KEEPER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "actor/learner_client.h"

namespace cohort::actor {

class LeaseKeeper {
 public:
  // `learner` is not owned and must outlive the keeper.
  explicit LeaseKeeper(LearnerClient* learner) : learner_(learner) {}

  // Starts renewing `lease_id` (deadline: Unix ms from the lease).
  void Add(const std::string& lease_id, int64_t deadline_unix_ms);
  // Stops renewing it (submitted, or its work dropped).
  void Remove(const std::string& lease_id);
  // Stops renewing it and hands it back with the next beat.
  void Release(const std::string& lease_id);
  // Forgets everything (a new run: the old leases mean nothing).
  void Clear();

  size_t held() const;
  size_t pending_releases() const;
  std::vector<std::string> HeldIds() const;

  struct BeatResult {
    cohort::v1::HeartbeatResponse response;
    std::vector<std::string> expired;  // removed from the held set
  };
  // `total_generated_tokens`: the actor's running total; the beat reports
  // the increase since the last successful beat. `engine_time` (running
  // totals, may be null) goes out as HeartbeatRequest.engine_time.
  absl::StatusOr<BeatResult> Beat(const std::string& actor_id, int64_t policy_version,
                                  int64_t total_generated_tokens, bool leaving,
                                  const cohort::v1::EngineTime* engine_time = nullptr);

 private:
  LearnerClient* const learner_;
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> held_ ABSL_GUARDED_BY(mu_);  // id -> deadline
  std::vector<std::string> releases_ ABSL_GUARDED_BY(mu_);
  int64_t reported_tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_LEASE_KEEPER_H_
