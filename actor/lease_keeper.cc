#include "actor/lease_keeper.h"

#include <algorithm>
#include <set>

namespace cohort::actor {

void LeaseKeeper::Add(const std::string& lease_id, int64_t deadline_unix_ms) {
  absl::MutexLock lock(&mu_);
  held_[lease_id] = deadline_unix_ms;
}

void LeaseKeeper::Remove(const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  held_.erase(lease_id);
}

void LeaseKeeper::Release(const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  if (held_.erase(lease_id) > 0) releases_.push_back(lease_id);
}

void LeaseKeeper::Clear() {
  absl::MutexLock lock(&mu_);
  held_.clear();
  releases_.clear();
}

size_t LeaseKeeper::held() const {
  absl::MutexLock lock(&mu_);
  return held_.size();
}

size_t LeaseKeeper::pending_releases() const {
  absl::MutexLock lock(&mu_);
  return releases_.size();
}

std::vector<std::string> LeaseKeeper::HeldIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, deadline] : held_) ids.push_back(id);
  return ids;
}

absl::StatusOr<LeaseKeeper::BeatResult> LeaseKeeper::Beat(
    const std::string& actor_id, int64_t policy_version, int64_t total_generated_tokens,
    bool leaving, const cohort::v1::EngineTime* engine_time) {
  cohort::v1::HeartbeatRequest request;
  request.set_actor_id(actor_id);
  request.set_policy_version(policy_version);
  request.set_leaving(leaving);
  if (engine_time != nullptr) *request.mutable_engine_time() = *engine_time;
  size_t releases_sent = 0;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, deadline] : held_) request.add_lease_ids(id);
    for (const std::string& id : releases_) request.add_released_lease_ids(id);
    releases_sent = releases_.size();
    request.set_generated_tokens(std::max<int64_t>(0, total_generated_tokens - reported_tokens_));
  }
  absl::StatusOr<cohort::v1::HeartbeatResponse> response = learner_->Heartbeat(request);
  if (!response.ok()) return response.status();
  BeatResult result;
  std::set<std::string> expired(response->expired_lease_ids().begin(),
                                response->expired_lease_ids().end());
  absl::MutexLock lock(&mu_);
  reported_tokens_ = std::max(reported_tokens_, total_generated_tokens);
  // Releases added during the call stay for the next beat.
  releases_.erase(releases_.begin(),
                  releases_.begin() + static_cast<std::ptrdiff_t>(releases_sent));
  for (const std::string& id : request.lease_ids()) {
    auto it = held_.find(id);
    if (it == held_.end()) continue;  // removed meanwhile
    if (expired.count(id) > 0) {
      held_.erase(it);
      result.expired.push_back(id);
    } else if (response->deadline_unix_ms() > 0) {
      it->second = response->deadline_unix_ms();
    }
  }
  result.response = *std::move(response);
  return result;
}

}  // namespace cohort::actor
