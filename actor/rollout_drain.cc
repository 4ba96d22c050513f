// Rollout: leaving and the learner going away. RequestDrain / Stop;
// FinishDrain hands every unfinished lease back (a final Heartbeat with
// released_lease_ids and leaving = true), stops the generators and reward
// clients and joins the threads; DropLocked / ReleaseLocked forget one
// lease's work (dropped: the lease is gone; released: handed back);
// LearnerFailedLocked / LearnerOkLocked keep the reconnect backoff.
#include "actor/rollout.h"

#include <algorithm>
#include <string>

#include "absl/time/clock.h"
#include "actor/rollout_internal.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

using rollout_internal::Transient;

void Rollout::RequestDrain() {
  absl::MutexLock lock(&mu_);
  RequestDrainLocked();
}

void Rollout::RequestDrainLocked() {
  if (draining_ || stop_) return;
  draining_ = true;
  drain_deadline_ = absl::Now() + options_.drain_grace;
  // Leases not started yet go back to the queue at once.
  for (const std::string& id : lease_order_) ReleaseLocked(id);
  lease_order_.clear();
  COHORT_LOG(INFO) << "draining: no more leases; " << work_.size()
                   << " group(s) in flight get until " << absl::FormatDuration(options_.drain_grace)
                   << " from now";
  cv_.SignalAll();
}

void Rollout::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  cv_.SignalAll();
}

void Rollout::FinishDrain() {
  std::string actor;
  int64_t version, tokens;
  std::vector<Generator*> generators;
  std::vector<RewardClient*> rewards;
  v1::EngineTime engine_time;
  {
    absl::MutexLock lock(&mu_);
    size_t handed_back = 0;
    for (auto& [id, work] : work_) {
      keeper_.Release(id);
      ++handed_back;
    }
    stats_.leases_released += static_cast<int64_t>(handed_back);
    released_total_->Increment(static_cast<double>(handed_back));
    if (handed_back > 0 || draining_) {
      COHORT_LOG(INFO) << (draining_ ? "drain finished: " : "stopping: ") << handed_back
                       << " unfinished lease(s) handed back, " << stats_.groups_submitted
                       << " group(s) submitted in all";
    }
    work_.clear();
    lease_order_.clear();
    stop_ = true;
    cv_.SignalAll();
    actor = actor_id_;
    version = swapped_version_;
    tokens = stats_.tokens_generated;
    engine_time = EngineTimeLocked();
    if (generator_ != nullptr) generators.push_back(generator_.get());
    for (auto& g : retired_generators_) generators.push_back(g.get());
    if (reward_ != nullptr) rewards.push_back(reward_.get());
  }
  for (RewardClient* r : rewards) r->Shutdown();
  for (Generator* g : generators) g->Stop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  // Hand the leases back; a learner that is away lets them expire instead.
  if (!actor.empty() && keeper_.pending_releases() > 0) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      absl::StatusOr<LeaseKeeper::BeatResult> beat =
          keeper_.Beat(actor, version, tokens, /*leaving=*/true, &engine_time);
      if (beat.ok() || !Transient(beat.status())) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
  absl::MutexLock lock(&mu_);
  UpdateEngineStateLocked();
}

void Rollout::DropLocked(const std::string& lease_id, const char* reason) {
  auto it = work_.find(lease_id);
  if (it == work_.end()) return;
  COHORT_LOG(INFO) << "dropping the work of lease " << lease_id << " (prompt "
                   << it->second.lease.prompt_id() << "): " << reason;
  work_.erase(it);
  keeper_.Remove(lease_id);
  ++stats_.groups_dropped;
  cv_.SignalAll();
}

void Rollout::ReleaseLocked(const std::string& lease_id) {
  auto it = work_.find(lease_id);
  if (it == work_.end()) return;
  work_.erase(it);
  keeper_.Release(lease_id);
  ++stats_.leases_released;
  released_total_->Increment();
  cv_.SignalAll();
}

void Rollout::LearnerFailedLocked(const absl::Status& status, const char* rpc) {
  ++learner_failures_;
  absl::Duration delay = BackoffDelay(options_.reconnect, std::min(learner_failures_, 30));
  learner_down_until_ = std::max(learner_down_until_, absl::Now() + delay);
  if (learner_failures_ == 1 || learner_failures_ % 20 == 0) {
    COHORT_LOG(WARNING) << "learner unreachable (" << rpc << ": " << status.message()
                        << "); backing off " << absl::FormatDuration(delay);
  }
}

void Rollout::LearnerOkLocked() {
  if (learner_failures_ > 0) {
    COHORT_LOG(INFO) << "learner reachable again after " << learner_failures_ << " failed call(s)";
  }
  learner_failures_ = 0;
  learner_down_until_ = absl::InfinitePast();
}

}  // namespace cohort::actor
