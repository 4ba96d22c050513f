// Rollout: construction, the public API, Join and the control loop
// (Run). The loop's other parts live in their own units:
//   rollout_dispatch.cc   leasing ahead and dispatching groups to the
//                         generator (keeping the engine full)
//   rollout_scoring.cc    reward batching and SubmitGroup
//   rollout_weights.cc    fetching and swapping weights
//   rollout_heartbeat.cc  heartbeats and engine time by state
//   rollout_drain.cc      drain, stop, lease hand-back, learner backoff
// See rollout.h for the contract.
#include "actor/rollout.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "actor/rollout_internal.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

using rollout_internal::kStateNames;
using rollout_internal::Transient;
using rollout_internal::UnknownActor;

std::string DescribeJoinRefusal(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInternal) {
    // DoJoin's own failure to use what the learner named.
    return absl::StrCat("this actor cannot work for the learner's run: ", status.message());
  }
  return absl::StrCat("the learner refused this actor (", absl::StatusCodeToString(status.code()),
                      "): ", status.message());
}

Rollout::Rollout(RolloutOptions options, LearnerClient* learner)
    : options_(std::move(options)),
      learner_(learner),
      metrics_(options_.metrics ? options_.metrics : MetricsRegistry::Default()),
      keeper_(learner),
      weights_(learner, {options_.weight_fetch_attempts, 0, true, metrics_}) {
  MetricsRegistry* m = metrics_;
  tokens_total_ = m->GetCounter("cohort_actor_generated_tokens_total", "Tokens sampled.");
  tokens_per_second_ = m->GetGauge("cohort_actor_tokens_per_second",
                                   "Tokens sampled per second over the last heartbeat period.");
  leases_held_ = m->GetGauge("cohort_actor_leases_held", "Leases this actor holds.");
  version_gauge_ = m->GetGauge("cohort_actor_policy_version", "Policy version the generator uses.");
  staleness_ = m->GetHistogram(
      "cohort_actor_token_staleness",
      "Per submitted token: latest policy version known at submission minus the version that "
      "produced the token.",
      Histogram::LinearBuckets(0, 1, 9));
  submitted_total_ =
      m->GetCounter("cohort_actor_groups_submitted_total", "Scored groups the learner accepted.");
  released_total_ = m->GetCounter("cohort_actor_leases_released_total",
                                  "Leases handed back unfinished (drain, shutdown, errors).");
  joins_total_ = m->GetCounter("cohort_actor_joins_total", "Successful Join calls.");
  for (int i = 0; i < static_cast<int>(EngineState::kCount); ++i) {
    engine_seconds_total_[i] =
        m->GetCounter("cohort_actor_engine_seconds_total",
                      "Wall time of the engine by state: busy (a group queued or decoding) or "
                      "idle waiting for prompts, weights or rewards.",
                      {{"state", kStateNames[i]}});
    idle_fraction_[i] = m->GetGauge("cohort_actor_engine_time_fraction",
                                    "Fraction of wall time since the first Join by engine state.",
                                    {{"state", kStateNames[i]}});
  }
  absl::MutexLock lock(&mu_);
  engine_state_since_ = absl::Now();
}

Rollout::~Rollout() {
  Stop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

RolloutStats Rollout::stats() const {
  absl::MutexLock lock(&mu_);
  RolloutStats s = stats_;
  double secs[static_cast<int>(EngineState::kCount)];
  for (int i = 0; i < static_cast<int>(EngineState::kCount); ++i) secs[i] = engine_seconds_[i];
  secs[static_cast<int>(engine_state_)] += absl::ToDoubleSeconds(absl::Now() - engine_state_since_);
  s.busy_seconds = secs[0];
  s.idle_prompts_seconds = secs[1];
  s.idle_weights_seconds = secs[2];
  s.idle_rewards_seconds = secs[3];
  return s;
}

std::string Rollout::actor_id() const {
  absl::MutexLock lock(&mu_);
  return actor_id_;
}

int64_t Rollout::policy_version() const {
  absl::MutexLock lock(&mu_);
  return have_weights_ ? swapped_version_ : -1;
}

bool Rollout::joined() const {
  absl::MutexLock lock(&mu_);
  return joined_;
}

// ---------------------------------------------------------------------------
// Joining

absl::Status Rollout::DoJoin() {
  v1::JoinRequest request;
  request.set_actor_name(options_.actor_name);
  request.set_slots(options_.slots);
  request.set_model_fingerprint(options_.model_fingerprint);
  request.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  request.set_pid(options_.pid);
  absl::StatusOr<v1::JoinResponse> response = learner_->Join(request);
  if (!response.ok()) return response.status();
  if (response->group_size() < 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("Join: group_size ", response->group_size(), " (expected > 0)"));
  }
  if (!options_.model_fingerprint.empty() && !response->model().model_fingerprint().empty() &&
      response->model().model_fingerprint() != options_.model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("the learner's model has fingerprint ", response->model().model_fingerprint(),
                     ", this actor was started with ", options_.model_fingerprint));
  }
  bool new_model, new_reward, new_run;
  {
    absl::MutexLock lock(&mu_);
    new_run = joined_ && join_.run_id() != response->run_id();
    new_model = generator_ == nullptr ||
                join_.model().model_fingerprint() != response->model().model_fingerprint() ||
                join_.model().config_json() != response->model().config_json();
    new_reward = reward_ == nullptr || new_run ||
                 std::vector<std::string>(join_.reward_addresses().begin(),
                                          join_.reward_addresses().end()) !=
                     std::vector<std::string>(response->reward_addresses().begin(),
                                              response->reward_addresses().end()) ||
                 join_.reward_address() != response->reward_address();
  }
  std::unique_ptr<Generator> generator;
  if (new_model) {
    absl::StatusOr<std::unique_ptr<Generator>> g = options_.make_generator(*response);
    if (!g.ok()) {
      return absl::InternalError(
          absl::StrCat("cannot build the generator for the learner's model (",
                       response->model().source(), "): ", g.status().message()));
    }
    generator = *std::move(g);
  }
  std::unique_ptr<RewardClient> reward;
  if (new_reward) {
    absl::StatusOr<std::unique_ptr<RewardClient>> r = options_.make_reward_client(*response);
    if (!r.ok()) {
      return absl::InternalError(
          absl::StrCat("cannot reach the reward servers: ", r.status().message()));
    }
    reward = *std::move(r);
  }
  std::vector<Generator*> to_stop;
  {
    absl::MutexLock lock(&mu_);
    const bool joined_before = joined_ && have_weights_;
    if (new_run) {
      COHORT_LOG(WARNING) << "the learner serves a new run (" << response->run_id()
                          << "); dropping " << work_.size() << " group(s) of run "
                          << join_.run_id();
      work_.clear();
      lease_order_.clear();
      keeper_.Clear();
    }
    if (generator != nullptr) {
      if (generator_ != nullptr) {
        COHORT_LOG(INFO) << "the learner switched models to " << response->model().source()
                         << "; rebuilding the generator";
        to_stop.push_back(generator_.get());
        retired_generators_.push_back(std::move(generator_));
      }
      generator_ = std::move(generator);
      have_weights_ = false;
      swapped_version_ = -1;
    }
    if (reward != nullptr) {
      if (reward_ != nullptr) {
        reward_->Shutdown();
        retired_rewards_.push_back(std::move(reward_));
      }
      reward_ = std::move(reward);
    }
    actor_id_ = response->actor_id();
    join_ = *response;
    joined_ = true;
    need_rejoin_ = false;
    if (new_run || (joined_before && response->policy_version() < swapped_version_)) {
      // A learner behind this actor's version: in deterministic mode a
      // learner that resumed from a checkpoint numbers its versions from the
      // checkpoint's again (otherwise it numbers past every version it ever
      // published, docs/learner.md), or another run's learner answers (a new
      // run). Take its version as the latest and fetch it (tokens of the
      // newer versions would be refused as unpublished, and training would
      // stall with every actor waiting for a version the learner never
      // reaches).
      if (!new_run) {
        COHORT_LOG(WARNING) << "the learner is at policy version " << response->policy_version()
                            << ", behind this actor's " << swapped_version_
                            << " (it resumed from a checkpoint); fetching its version";
      }
      latest_version_ = response->policy_version();
      weight_retry_at_ = absl::InfinitePast();
    } else {
      latest_version_ = std::max(latest_version_, response->policy_version());
    }
    if (stats_.joins == 0) {
      // Engine time counts from the first Join (before it there is no run
      // to work for).
      for (double& s : engine_seconds_) s = 0;
      engine_state_since_ = absl::Now();
    }
    ++stats_.joins;
    joins_total_->Increment();
    COHORT_LOG(INFO) << "joined as " << actor_id_ << " (run " << join_.run_id() << ", stage "
                     << join_.stage() << ", model " << join_.model().source() << ", G "
                     << join_.group_size() << ", policy version " << join_.policy_version()
                     << (join_.deterministic() ? ", deterministic" : "") << ")";
    cv_.SignalAll();
  }
  for (Generator* g : to_stop) g->Stop();  // its callbacks release their leases
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Run

absl::Status Rollout::Run() {
  // First Join: wait for the learner as long as it takes.
  for (int attempt = 1;; ++attempt) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_ || draining_) return absl::OkStatus();
    }
    absl::Status s = DoJoin();
    if (s.ok()) break;
    // UNIMPLEMENTED: a learner that serves no cohort.v1.Learner (yet).
    if (!Transient(s) && s.code() != absl::StatusCode::kUnimplemented) {
      return absl::FailedPreconditionError(DescribeJoinRefusal(s));
    }
    absl::Duration delay = BackoffDelay(options_.reconnect, std::min(attempt, 30));
    if (attempt == 1 || attempt % 10 == 0) {
      COHORT_LOG(WARNING) << "cannot join the learner (" << s.message() << "); retrying";
    }
    absl::MutexLock lock(&mu_);
    cv_.WaitWithTimeout(&mu_, delay);
  }
  threads_.emplace_back([this] {
    rollout_internal::NameThisThread("actor-heartbeat");
    HeartbeatLoop();
  });
  threads_.emplace_back([this] {
    rollout_internal::NameThisThread("actor-weights");
    WeightLoop();
  });
  for (int i = 0; i < std::max(1, options_.reward_threads); ++i) {
    threads_.emplace_back([this] {
      rollout_internal::NameThisThread("actor-score");
      ScoreLoop();
    });
  }

  absl::Status result;
  for (;;) {
    bool rejoin = false;
    {
      absl::MutexLock lock(&mu_);
      UpdateEngineStateLocked();
      if (stop_) break;
      if (draining_ && (work_.empty() || absl::Now() >= drain_deadline_)) break;
      rejoin = need_rejoin_ && absl::Now() >= learner_down_until_;
    }
    if (rejoin) {
      absl::Status s = DoJoin();
      if (!s.ok()) {
        if (!Transient(s) && !UnknownActor(s)) {
          result = absl::FailedPreconditionError(DescribeJoinRefusal(s));
          break;
        }
        absl::MutexLock lock(&mu_);
        LearnerFailedLocked(s, "Join");
      }
      continue;
    }
    SubmitReady();
    LeaseMore();
    std::vector<Planned> plan;
    Generator* generator = nullptr;
    {
      absl::MutexLock lock(&mu_);
      plan = PlanDispatchLocked();
      generator = generator_.get();
    }
    for (Planned& p : plan) {
      const std::string id = p.lease_id;
      const uint64_t serial = p.serial;
      generator->Submit(std::move(p.spec),
                        [this, id, serial](absl::StatusOr<std::vector<GeneratedSample>> r) {
                          OnGenerated(id, serial, std::move(r));
                        });
    }
    absl::MutexLock lock(&mu_);
    UpdateEngineStateLocked();
    if (!plan.empty()) continue;
    absl::Duration wait = absl::Milliseconds(200);
    const absl::Time now = absl::Now();
    if (lease_not_before_ > now) wait = std::min(wait, lease_not_before_ - now);
    if (learner_down_until_ > now) wait = std::min(wait, learner_down_until_ - now);
    if (draining_) wait = std::min(wait, std::max(drain_deadline_ - now, absl::ZeroDuration()));
    mu_.AwaitWithTimeout(absl::Condition(this, &Rollout::HasActionLocked),
                         std::max(wait, absl::Milliseconds(1)));
  }
  FinishDrain();
  return result;
}

bool Rollout::HasActionLocked() const {
  const absl::Time now = absl::Now();
  const bool learner_up = now >= learner_down_until_;
  if (stop_ || (need_rejoin_ && learner_up)) return true;
  if (draining_ && (work_.empty() || now >= drain_deadline_)) return true;
  if (learner_up && CountLocked(Stage::kScored) > 0) return true;
  if (learner_up && joined_ && have_weights_ && !draining_ && now >= lease_not_before_ &&
      LeaseWantLocked() > 0) {
    return true;
  }
  if (!lease_order_.empty() && generator_ != nullptr && have_weights_ && !draining_ &&
      !(join_.deterministic() && fetching_weights_)) {
    // Something may be dispatchable; PlanDispatchLocked decides.
    if (join_.deterministic() ? CountLocked(Stage::kGenerating) == 0
                              : CountLocked(Stage::kGenerating) < GroupsPerEngineLocked()) {
      return true;
    }
  }
  return false;
}

}  // namespace cohort::actor
