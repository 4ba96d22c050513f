// Rollout: heartbeats and engine time. HeartbeatLoop renews the held leases
// every heartbeat interval (through LeaseKeeper), reports the tokens
// generated and the engine time by state, takes the learner's latest
// version, expired leases, rejoin and drain flags; UpdateEngineStateLocked
// books the engine's wall time as busy or idle waiting for prompts, weights
// or rewards.
#include "actor/rollout.h"

#include <algorithm>
#include <string>

#include "absl/time/clock.h"
#include "actor/rollout_internal.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

using rollout_internal::UnknownActor;

void Rollout::HeartbeatLoop() {
  absl::Time last = absl::Now();
  int64_t last_tokens = 0;
  for (;;) {
    std::string actor;
    int64_t version, tokens;
    bool leaving;
    v1::EngineTime engine_time;
    {
      absl::MutexLock lock(&mu_);
      absl::Duration interval = options_.heartbeat_interval;
      if (join_.heartbeat_interval_ms() > 0) {
        interval = std::min(interval, absl::Milliseconds(join_.heartbeat_interval_ms()));
      }
      const absl::Time until = absl::Now() + interval;
      while (!stop_ && absl::Now() < until) cv_.WaitWithDeadline(&mu_, until);
      if (stop_) return;
      if (need_rejoin_) continue;
      actor = actor_id_;
      version = swapped_version_;
      tokens = stats_.tokens_generated;
      leaving = draining_;
      // Fractions of engine time, for /metrics; the totals go to the learner.
      engine_time = EngineTimeLocked();
      double total = 0;
      for (double s : engine_seconds_) total += s;
      for (int i = 0; i < static_cast<int>(EngineState::kCount); ++i) {
        idle_fraction_[i]->Set(total > 0 ? engine_seconds_[i] / total : 0);
      }
    }
    const absl::Time now = absl::Now();
    tokens_per_second_->Set(static_cast<double>(tokens - last_tokens) /
                            std::max(1e-3, absl::ToDoubleSeconds(now - last)));
    last = now;
    last_tokens = tokens;
    absl::StatusOr<LeaseKeeper::BeatResult> beat =
        keeper_.Beat(actor, version, tokens, leaving, &engine_time);
    absl::MutexLock lock(&mu_);
    if (!beat.ok()) {
      if (UnknownActor(beat.status())) {
        COHORT_LOG(WARNING) << "the learner does not know this actor (" << beat.status().message()
                            << "); joining again";
        need_rejoin_ = true;
      } else {
        LearnerFailedLocked(beat.status(), "Heartbeat");
      }
      cv_.SignalAll();
      continue;
    }
    LearnerOkLocked();
    for (const std::string& id : beat->expired) DropLocked(id, "lease expired");
    latest_version_ = std::max(latest_version_, beat->response.latest_policy_version());
    if (beat->response.rejoin()) need_rejoin_ = true;
    leases_held_->Set(static_cast<double>(keeper_.held()));
    if (beat->response.drain() && !draining_) {
      COHORT_LOG(INFO) << "the learner asks its actors to finish and leave";
      RequestDrainLocked();
    }
    cv_.SignalAll();
  }
}

void Rollout::UpdateEngineStateLocked() {
  EngineState next;
  if (CountLocked(Stage::kGenerating) > 0) {
    next = EngineState::kBusy;
  } else if (!have_weights_ || need_rejoin_ ||
             (join_.deterministic() && WantedVersionLocked() != swapped_version_) ||
             (lease_refused_for_version_ && swapped_version_ < latest_version_)) {
    next = EngineState::kIdleWeights;
  } else if (UnsubmittedLocked() >= MaxUnsubmittedLocked()) {
    next = EngineState::kIdleRewards;
  } else {
    next = EngineState::kIdlePrompts;
  }
  // The time in the current state is booked on every call (not only on a
  // change), so the counters stay current while the engine stays busy.
  const absl::Time now = absl::Now();
  const double seconds = absl::ToDoubleSeconds(now - engine_state_since_);
  engine_seconds_[static_cast<int>(engine_state_)] += seconds;
  engine_seconds_total_[static_cast<int>(engine_state_)]->Increment(seconds);
  engine_state_ = next;
  engine_state_since_ = now;
}

v1::EngineTime Rollout::EngineTimeLocked() {
  UpdateEngineStateLocked();
  v1::EngineTime t;
  t.set_busy_seconds(engine_seconds_[static_cast<int>(EngineState::kBusy)]);
  t.set_idle_prompts_seconds(engine_seconds_[static_cast<int>(EngineState::kIdlePrompts)]);
  t.set_idle_weights_seconds(engine_seconds_[static_cast<int>(EngineState::kIdleWeights)]);
  t.set_idle_rewards_seconds(engine_seconds_[static_cast<int>(EngineState::kIdleRewards)]);
  return t;
}

}  // namespace cohort::actor
