// Internals shared by the translation units of Rollout (rollout.cc,
// rollout_drain.cc, rollout_dispatch.cc, rollout_scoring.cc,
// rollout_weights.cc, rollout_heartbeat.cc): how learner errors are
// classified, and the engine state names of the metrics. Not for use
// outside actor/rollout*.cc.
#ifndef COHORT_ACTOR_ROLLOUT_INTERNAL_H_
#define COHORT_ACTOR_ROLLOUT_INTERNAL_H_

#include <pthread.h>

#include "absl/status/status.h"

namespace cohort::actor::rollout_internal {

// Engine states in the order of Rollout::EngineState (metric label values).
inline constexpr const char* kStateNames[] = {"busy", "idle_prompts", "idle_weights",
                                              "idle_rewards"};

// A learner error worth retrying after a backoff (the learner is away or
// busy), as opposed to a refusal.
inline bool Transient(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kCancelled || s.code() == absl::StatusCode::kAborted ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

// NOT_FOUND "unknown actor": the learner restarted (or forgot this actor);
// Join again.
inline bool UnknownActor(const absl::Status& s) { return s.code() == absl::StatusCode::kNotFound; }

// Names the calling thread (at most 15 characters show), so per-thread CPU
// in /proc/<pid>/task/*/stat and in debuggers says which part of the actor
// it is.
inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace cohort::actor::rollout_internal

#endif  // COHORT_ACTOR_ROLLOUT_INTERNAL_H_
