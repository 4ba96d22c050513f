// Rollout: rewards and submission. ScoreLoop (options.reward_threads of
// them) takes every generated group, up to options.reward_batch_groups per
// Score call, while generation continues; SubmitReady (control thread)
// sends scored groups to the learner: transient failures keep the group for
// a later try, a refusal hands its lease back, an accepted group's lease is
// forgotten.
#include "actor/rollout.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "actor/rollout_internal.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

using rollout_internal::Transient;
using rollout_internal::UnknownActor;

void Rollout::ScoreLoop() {
  for (;;) {
    struct Item {
      std::string lease_id;
      uint64_t serial;
      size_t first;  // index of its first sample
      int count;
    };
    std::vector<Item> items;
    std::vector<v1::ScoreSample> samples;
    RewardClient* reward = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || CountLocked(Stage::kGenerated) > 0;
      };
      while (!ready()) cv_.Wait(&mu_);
      if (stop_) return;
      for (auto& [id, work] : work_) {
        if (work.stage != Stage::kGenerated) continue;
        work.stage = Stage::kScoring;
        Item& item = items.emplace_back();
        item.lease_id = id;
        item.serial = work.serial;
        item.first = samples.size();
        item.count = work.group.completions_size();
        for (int i = 0; i < work.group.completions_size(); ++i) {
          const v1::Completion& c = work.group.completions(i);
          v1::ScoreSample& s = samples.emplace_back();
          s.set_id(absl::StrCat(id, "/", i));
          s.set_task(work.lease.task());
          s.set_prompt(work.lease.prompt_text());
          s.set_completion(c.text());
          s.set_answer(work.lease.answer());
          s.set_extra_json(work.lease.extra_json());
          s.set_completion_tokens(c.token_ids_size());
        }
        if (static_cast<int>(items.size()) >= std::max(1, options_.reward_batch_groups)) break;
      }
      reward = reward_.get();
    }
    std::vector<v1::RewardResult> results = reward->Score(samples);
    absl::MutexLock lock(&mu_);
    for (const Item& item : items) {
      auto it = work_.find(item.lease_id);
      if (it == work_.end() || it->second.serial != item.serial ||
          it->second.stage != Stage::kScoring) {
        continue;
      }
      for (int i = 0; i < item.count; ++i) {
        *it->second.group.mutable_completions(i)->mutable_reward() = results[item.first + i];
      }
      it->second.stage = Stage::kScored;
    }
    UpdateEngineStateLocked();
    cv_.SignalAll();
  }
}

void Rollout::SubmitReady() {
  struct Item {
    std::string lease_id;
    uint64_t serial;
    v1::SubmitGroupRequest request;
  };
  std::vector<Item> items;
  {
    absl::MutexLock lock(&mu_);
    if (!joined_ || need_rejoin_ || absl::Now() < learner_down_until_) return;
    for (auto& [id, work] : work_) {
      if (work.stage != Stage::kScored) continue;
      work.stage = Stage::kSubmitting;
      Item& item = items.emplace_back();
      item.lease_id = id;
      item.serial = work.serial;
      item.request.set_actor_id(actor_id_);
      *item.request.mutable_group() = work.group;
      if (items.size() >= 16) break;
    }
    if (!items.empty()) {
      const v1::EngineTime engine_time = EngineTimeLocked();
      for (Item& item : items) *item.request.mutable_engine_time() = engine_time;
    }
  }
  bool learner_away = false;
  for (Item& item : items) {
    absl::StatusOr<v1::SubmitGroupResponse> response =
        learner_away ? absl::UnavailableError("not tried") : learner_->SubmitGroup(item.request);
    absl::MutexLock lock(&mu_);
    auto it = work_.find(item.lease_id);
    const bool ours = it != work_.end() && it->second.serial == item.serial;
    if (!response.ok()) {
      if (Transient(response.status()) || UnknownActor(response.status())) {
        if (ours) it->second.stage = Stage::kScored;  // try again later
        if (UnknownActor(response.status())) {
          need_rejoin_ = true;
        } else if (!learner_away) {
          LearnerFailedLocked(response.status(), "SubmitGroup");
        }
        learner_away = true;
        continue;
      }
      // Hand the lease back rather than let it expire: its prompt is leased
      // again at once (e.g. a group of versions a restarted learner has
      // not published again).
      COHORT_LOG(WARNING) << "SubmitGroup for lease " << item.lease_id
                          << " refused: " << response.status().message()
                          << "; dropping the group and handing the lease back";
      if (ours) {
        ++stats_.groups_dropped;
        ReleaseLocked(item.lease_id);
      }
      continue;
    }
    LearnerOkLocked();
    if (response->accepted()) {
      ++stats_.groups_submitted;
      submitted_total_->Increment();
      for (const v1::Completion& c : item.request.group().completions()) {
        for (int64_t v : c.policy_versions()) {
          stats_.policy_versions_seen.insert(v);
          staleness_->Observe(static_cast<double>(std::max<int64_t>(0, latest_version_ - v)));
        }
      }
    } else {
      ++stats_.groups_refused;
      COHORT_LOG(INFO) << "learner did not take lease " << item.lease_id << " ("
                       << response->reason_code() << "): " << response->reason();
    }
    if (ours) {
      work_.erase(it);
      keeper_.Remove(item.lease_id);
    }
  }
  absl::MutexLock lock(&mu_);
  leases_held_->Set(static_cast<double>(keeper_.held()));
}

}  // namespace cohort::actor
