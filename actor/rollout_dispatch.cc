// Rollout: keeping the engine full. How many groups the generator works on
// and how many may wait for rewards or submission (GroupsPerEngineLocked,
// MaxUnsubmittedLocked), leasing ahead of need (LeaseMore), turning leases
// into generation specs in lease order (PlanDispatchLocked; a prompt that
// does not fit the context is marked INVALID), and the generator's
// completion callback (OnGenerated) that fills the group's completions.
#include "actor/rollout.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "actor/rollout_internal.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

using rollout_internal::UnknownActor;

int Rollout::GroupsPerEngineLocked() const {
  if (join_.deterministic()) return 1;
  const int g = std::max(1, join_.group_size());
  const int slots = generator_ != nullptr ? static_cast<int>(generator_->slots()) : options_.slots;
  return (slots + g - 1) / g + 1;
}

int Rollout::MaxUnsubmittedLocked() const {
  if (options_.max_unsubmitted_groups >= 0) return std::max(1, options_.max_unsubmitted_groups);
  return 2 * GroupsPerEngineLocked() + 2;
}

int Rollout::LeaseWantLocked() const {
  if (generator_ == nullptr || UnsubmittedLocked() >= MaxUnsubmittedLocked()) return 0;
  const int g = std::max(1, join_.group_size());
  const int slots = static_cast<int>(generator_->slots());
  const int ahead = options_.lease_ahead >= 0 ? options_.lease_ahead : (slots + g - 1) / g;
  const int target = GroupsPerEngineLocked() + ahead;
  const int working = CountLocked(Stage::kLeased) + CountLocked(Stage::kGenerating);
  return target - working;
}

int Rollout::CountLocked(Stage stage) const {
  int n = 0;
  for (const auto& [id, work] : work_) n += work.stage == stage ? 1 : 0;
  return n;
}

int Rollout::UnsubmittedLocked() const {
  int n = 0;
  for (const auto& [id, work] : work_) {
    n += (work.stage != Stage::kLeased && work.stage != Stage::kGenerating) ? 1 : 0;
  }
  return n;
}

void Rollout::LeaseMore() {
  v1::LeasePromptsRequest request;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (draining_ || stop_ || !joined_ || need_rejoin_ || !have_weights_ ||
        now < lease_not_before_ || now < learner_down_until_) {
      return;
    }
    const int want = LeaseWantLocked();
    if (want <= 0) return;
    request.set_actor_id(actor_id_);
    request.set_max_prompts(want);
    request.set_policy_version(swapped_version_);
  }
  absl::StatusOr<v1::LeasePromptsResponse> response = learner_->LeasePrompts(request);
  absl::MutexLock lock(&mu_);
  if (!response.ok()) {
    if (UnknownActor(response.status())) {
      need_rejoin_ = true;
    } else {
      LearnerFailedLocked(response.status(), "LeasePrompts");
    }
    return;
  }
  LearnerOkLocked();
  latest_version_ = std::max(latest_version_, response->policy_version());
  if (response->drain() && !draining_) {
    COHORT_LOG(INFO) << "the learner asks its actors to finish and leave";
    RequestDrainLocked();
  }
  if (response->leases().empty()) {
    const int64_t ms = response->retry_after_ms() > 0 ? response->retry_after_ms() : 200;
    lease_not_before_ = absl::Now() + absl::Milliseconds(ms);
    lease_refused_for_version_ = swapped_version_ < latest_version_;
    return;
  }
  lease_refused_for_version_ = false;
  for (const v1::Lease& lease : response->leases()) {
    if (draining_ || stop_) {
      keeper_.Add(lease.lease_id(), lease.deadline_unix_ms());
      keeper_.Release(lease.lease_id());
      ++stats_.leases_released;
      released_total_->Increment();
      continue;
    }
    if (work_.count(lease.lease_id()) > 0) {
      COHORT_LOG(WARNING) << "lease " << lease.lease_id() << " granted twice; ignoring the repeat";
      continue;
    }
    Work& work = work_[lease.lease_id()];
    work.lease = lease;
    work.serial = next_serial_++;
    keeper_.Add(lease.lease_id(), lease.deadline_unix_ms());
    lease_order_.push_back(lease.lease_id());
    ++stats_.leases_granted;
    if (!lease.model_fingerprint().empty() &&
        lease.model_fingerprint() != join_.model().model_fingerprint()) {
      need_rejoin_ = true;  // the stage switched models
    }
  }
  leases_held_->Set(static_cast<double>(keeper_.held()));
  cv_.SignalAll();
}

std::vector<Rollout::Planned> Rollout::PlanDispatchLocked() {
  std::vector<Planned> plan;
  if (stop_ || draining_ || need_rejoin_ || generator_ == nullptr || !have_weights_) return plan;
  if (join_.deterministic() && fetching_weights_) return plan;  // a swap is coming
  int generating = CountLocked(Stage::kGenerating);
  int unsubmitted = UnsubmittedLocked();
  const int max_generating = GroupsPerEngineLocked();
  const int max_unsubmitted = MaxUnsubmittedLocked();
  while (!lease_order_.empty() && generating < max_generating && unsubmitted < max_unsubmitted) {
    auto it = work_.find(lease_order_.front());
    if (it == work_.end() || it->second.stage != Stage::kLeased) {
      lease_order_.pop_front();
      continue;
    }
    Work& work = it->second;
    const v1::Lease& lease = work.lease;
    if (join_.deterministic() && lease.version_pinned() &&
        lease.policy_version() != swapped_version_) {
      break;  // WeightLoop fetches that version first
    }
    lease_order_.pop_front();
    const int64_t prompt_len = lease.prompt_token_ids_size();
    if (prompt_len == 0 || prompt_len >= generator_->max_len()) {
      MarkInvalidLocked(work, prompt_len == 0
                                  ? std::string("the lease's prompt has no tokens")
                                  : absl::StrCat("the prompt has ", prompt_len,
                                                 " tokens and does not fit the actor's context of ",
                                                 generator_->max_len(), " positions"));
      ++unsubmitted;
      continue;
    }
    Planned p;
    p.lease_id = it->first;
    p.serial = work.serial;
    p.spec.prompt.assign(lease.prompt_token_ids().begin(), lease.prompt_token_ids().end());
    p.spec.num_samples = lease.group_size() > 0 ? lease.group_size() : join_.group_size();
    p.spec.sampling = lease.has_sampling() ? lease.sampling() : join_.sampling();
    if (p.spec.sampling.seed() == 0) {
      thread_local absl::BitGen bitgen;
      p.spec.sampling.set_seed(absl::Uniform<uint64_t>(bitgen, 1, UINT64_MAX));
    }
    p.spec.eos_ids.assign(join_.model().eos_token_ids().begin(),
                          join_.model().eos_token_ids().end());
    work.stage = Stage::kGenerating;
    ++generating;
    plan.push_back(std::move(p));
  }
  return plan;
}

void Rollout::MarkInvalidLocked(Work& work, const std::string& reason) {
  COHORT_LOG(WARNING) << "lease " << work.lease.lease_id() << " (prompt " << work.lease.prompt_id()
                      << "): " << reason << "; submitting it as INVALID";
  work.invalid = true;
  work.group = v1::ScoredGroup();
  work.group.set_prompt_id(work.lease.prompt_id());
  work.group.set_epoch(work.lease.epoch());
  work.group.set_lease_id(work.lease.lease_id());
  work.group.set_prompt_uid(work.lease.prompt_uid());
  const int g = work.lease.group_size() > 0 ? work.lease.group_size() : join_.group_size();
  for (int i = 0; i < g; ++i) {
    v1::Completion* c = work.group.add_completions();
    c->set_finish_reason(v1::FINISH_REASON_CONTEXT);
    *c->mutable_reward() = UnscoredResult(absl::StrCat(work.lease.lease_id(), "/", i),
                                          v1::REWARD_STATUS_INVALID, reason);
  }
  work.stage = Stage::kScored;
  ++stats_.groups_invalid;
  cv_.SignalAll();
}

void Rollout::OnGenerated(const std::string& lease_id, uint64_t serial,
                          absl::StatusOr<std::vector<GeneratedSample>> result) {
  int64_t tokens = 0;
  if (result.ok()) {
    for (const GeneratedSample& s : *result) tokens += static_cast<int64_t>(s.tokens.size());
  }
  tokens_total_->Increment(static_cast<double>(tokens));
  absl::MutexLock lock(&mu_);
  stats_.tokens_generated += tokens;
  auto it = work_.find(lease_id);
  if (it == work_.end() || it->second.serial != serial || it->second.stage != Stage::kGenerating) {
    return;  // dropped meanwhile (expired, new run)
  }
  Work& work = it->second;
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kInvalidArgument) {
      MarkInvalidLocked(work, std::string(result.status().message()));
    } else {
      if (result.status().code() != absl::StatusCode::kCancelled) {
        COHORT_LOG(ERROR) << "generation failed for lease " << lease_id << ": "
                          << result.status().message() << "; handing the lease back";
      }
      ReleaseLocked(lease_id);
    }
    UpdateEngineStateLocked();
    return;
  }
  v1::ScoredGroup& group = work.group;
  group.set_prompt_id(work.lease.prompt_id());
  group.set_epoch(work.lease.epoch());
  group.set_lease_id(work.lease.lease_id());
  group.set_prompt_uid(work.lease.prompt_uid());
  for (GeneratedSample& s : *result) {
    v1::Completion* c = group.add_completions();
    c->mutable_token_ids()->Add(s.tokens.begin(), s.tokens.end());
    c->mutable_logprobs()->Add(s.logprobs.begin(), s.logprobs.end());
    c->mutable_policy_versions()->Add(s.versions.begin(), s.versions.end());
    c->set_finish_reason(s.finish_reason);
    c->set_text(std::move(s.text));
  }
  work.stage = Stage::kGenerated;
  UpdateEngineStateLocked();
  cv_.SignalAll();
}

}  // namespace cohort::actor
