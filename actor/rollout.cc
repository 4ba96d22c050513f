#include "actor/rollout.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

namespace {

constexpr const char* kStateNames[] = {"busy", "idle_prompts", "idle_weights", "idle_rewards"};

bool Transient(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kCancelled || s.code() == absl::StatusCode::kAborted ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

bool UnknownActor(const absl::Status& s) { return s.code() == absl::StatusCode::kNotFound; }

}  // namespace

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
      // A learner that resumed from a checkpoint is behind the versions it
      // published before it died, and numbers its next ones from there:
      // take its version as the latest and fetch it (tokens of the newer
      // versions would be refused as unpublished, and training would stall
      // with every actor waiting for a version the learner never reaches).
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
  threads_.emplace_back([this] { HeartbeatLoop(); });
  threads_.emplace_back([this] { WeightLoop(); });
  for (int i = 0; i < std::max(1, options_.reward_threads); ++i) {
    threads_.emplace_back([this] { ScoreLoop(); });
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

void Rollout::FinishDrain() {
  std::string actor;
  int64_t version, tokens;
  std::vector<Generator*> generators;
  std::vector<RewardClient*> rewards;
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
          keeper_.Beat(actor, version, tokens, /*leaving=*/true);
      if (beat.ok() || !Transient(beat.status())) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
  absl::MutexLock lock(&mu_);
  UpdateEngineStateLocked();
}

// ---------------------------------------------------------------------------
// Leasing, dispatch, submission (control thread)

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

// ---------------------------------------------------------------------------
// Generator callbacks, scoring, heartbeats, weights

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

void Rollout::HeartbeatLoop() {
  absl::Time last = absl::Now();
  int64_t last_tokens = 0;
  for (;;) {
    std::string actor;
    int64_t version, tokens;
    bool leaving;
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
      // Fractions of engine time, for /metrics.
      UpdateEngineStateLocked();
      double total = 0;
      for (double s : engine_seconds_) total += s;
      const double current = absl::ToDoubleSeconds(absl::Now() - engine_state_since_);
      total += current;
      for (int i = 0; i < static_cast<int>(EngineState::kCount); ++i) {
        double s = engine_seconds_[i] + (i == static_cast<int>(engine_state_) ? current : 0);
        idle_fraction_[i]->Set(total > 0 ? s / total : 0);
      }
    }
    const absl::Time now = absl::Now();
    tokens_per_second_->Set(static_cast<double>(tokens - last_tokens) /
                            std::max(1e-3, absl::ToDoubleSeconds(now - last)));
    last = now;
    last_tokens = tokens;
    absl::StatusOr<LeaseKeeper::BeatResult> beat = keeper_.Beat(actor, version, tokens, leaving);
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

int64_t Rollout::WantedVersionLocked() const {
  if (join_.deterministic()) {
    for (const std::string& id : lease_order_) {
      auto it = work_.find(id);
      if (it == work_.end() || it->second.stage != Stage::kLeased) continue;
      if (it->second.lease.version_pinned()) return it->second.lease.policy_version();
      break;
    }
    return have_weights_ ? swapped_version_ : latest_version_;
  }
  return latest_version_;
}

void Rollout::WeightLoop() {
  int failures = 0;
  for (;;) {
    int64_t want;
    Generator* generator;
    bool deterministic;
    bool pinned;
    {
      absl::MutexLock lock(&mu_);
      // Deterministic mode: a group is generated with its pinned version
      // alone, so weights change only while no group is generating (and
      // none starts until the swap is done: fetching_weights_).
      auto needed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (generator_ != nullptr && !need_rejoin_ &&
                         (!have_weights_ || WantedVersionLocked() != swapped_version_) &&
                         absl::Now() >= weight_retry_at_ &&
                         (!join_.deterministic() || CountLocked(Stage::kGenerating) == 0));
      };
      while (!needed()) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
      if (stop_) return;
      want = WantedVersionLocked();
      generator = generator_.get();
      deterministic = join_.deterministic();
      pinned = deterministic && have_weights_;
      fetching_weights_ = deterministic;
    }
    // A pinned version must be exactly that one (0, the initial weights,
    // included); otherwise any version at least as new will do.
    absl::StatusOr<std::shared_ptr<const HostWeights>> w = weights_.Fetch(want, /*exact=*/pinned);
    if (!w.ok() && w.status().code() == absl::StatusCode::kNotFound && !deterministic) {
      w = weights_.Fetch(0);  // that version is gone: take the latest
    }
    absl::Status swapped = w.ok() ? generator->SwapWeights(*w) : w.status();
    absl::MutexLock lock(&mu_);
    fetching_weights_ = false;
    cv_.SignalAll();
    if (!swapped.ok()) {
      ++failures;
      weight_retry_at_ = absl::Now() + BackoffDelay(options_.reconnect, std::min(failures, 30));
      if (failures == 1 || failures % 10 == 0) {
        COHORT_LOG(WARNING) << "cannot install policy version " << want << ": " << swapped.message()
                            << "; keeping version " << swapped_version_;
      }
      continue;
    }
    failures = 0;
    if (generator != generator_.get()) continue;  // the model changed meanwhile
    swapped_version_ = (*w)->version;
    have_weights_ = true;
    latest_version_ = std::max(latest_version_, swapped_version_);
    ++stats_.weight_swaps;
    version_gauge_->Set(static_cast<double>(swapped_version_));
    COHORT_LOG(INFO) << "policy version " << swapped_version_ << " installed (" << (*w)->bytes()
                     << " bytes)";
    UpdateEngineStateLocked();
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

}  // namespace cohort::actor
