#include "learner/service.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/grpc_status.h"
#include "core/logging.h"
#include "core/rpc.h"
#include "core/varint.h"

namespace cohort::learner {
namespace {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

void AddEngineTime(const v1::EngineTime& add, v1::EngineTime* sum) {
  sum->set_busy_seconds(sum->busy_seconds() + add.busy_seconds());
  sum->set_idle_prompts_seconds(sum->idle_prompts_seconds() + add.idle_prompts_seconds());
  sum->set_idle_weights_seconds(sum->idle_weights_seconds() + add.idle_weights_seconds());
  sum->set_idle_rewards_seconds(sum->idle_rewards_seconds() + add.idle_rewards_seconds());
}

// Test hook for kills during SubmitGroup (tests/actor_submit_kill_test.cc),
// off unless COHORT_TEST_SUBMIT_STALL_DIR names a directory DIR: the first
// SubmitGroup to find DIR/arm claims it (renames it to DIR/claimed), writes
// "<actor_id> <lease_id> <prompt_id>" to DIR/inflight and, before it looks
// at the group, waits until DIR/release exists (at most 120 s), so that the
// test can kill the actor while its call is inside the learner. When that
// call has answered, DIR/returned is written (SubmitStallReturned).
std::string StallSubmitForTest(const v1::SubmitGroupRequest& req) {
  static const char* const dir = std::getenv("COHORT_TEST_SUBMIT_STALL_DIR");
  if (dir == nullptr || *dir == '\0') return "";
  const std::string d = dir;
  if (std::rename((d + "/arm").c_str(), (d + "/claimed").c_str()) != 0) return "";
  absl::Status s =
      WriteFileAtomically(d + "/inflight", absl::StrCat(req.actor_id(), " ", req.group().lease_id(),
                                                        " ", req.group().prompt_id(), "\n"));
  if (!s.ok()) COHORT_LOG(WARNING) << "COHORT_TEST_SUBMIT_STALL_DIR: " << s.message();
  COHORT_LOG(WARNING) << "SubmitGroup of lease " << req.group().lease_id() << " from "
                      << req.actor_id() << " stalled for a test (COHORT_TEST_SUBMIT_STALL_DIR)";
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (!PathExists(d + "/release") && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return d + "/returned";
}
struct SubmitStallReturned {
  std::string path;  // "" unless the call was stalled
  ~SubmitStallReturned() {
    if (!path.empty()) (void)WriteFileAtomically(path, "");
  }
};

grpc::Status Error(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

SampleFinish FinishOf(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return SampleFinish::kStop;
    case v1::FINISH_REASON_LENGTH:
      return SampleFinish::kLength;
    case v1::FINISH_REASON_CONTEXT:
      return SampleFinish::kContext;
    case v1::FINISH_REASON_CANCELLED:
      return SampleFinish::kCancelled;
    default:
      return SampleFinish::kEos;
  }
}

v1::DType WireDType(WeightDType d) {
  switch (d) {
    case WeightDType::kBF16:
      return v1::DTYPE_BF16;
    case WeightDType::kF16:
      return v1::DTYPE_F16;
    default:
      return v1::DTYPE_F32;
  }
}

}  // namespace

void LedgerCountsToProto(const LedgerCounts& c, v1::LedgerCounts* out) {
  out->set_queued(c.queued);
  out->set_leased(c.leased);
  out->set_buffered(c.buffered);
  out->set_prompts_total(c.prompts_total);
  out->set_trained(c.trained);
  out->set_filtered(c.filtered);
  out->set_failed(c.failed);
  out->set_duplicates(c.duplicates);
  out->set_lost(c.lost);
  out->set_leases_granted(c.leases_granted);
  out->set_leases_expired(c.leases_expired);
  out->set_leases_released(c.leases_released);
  out->set_leases_retried(c.leases_retried);
}

absl::StatusOr<CheckedGroup> CheckGroup(const v1::ScoredGroup& g, const LeaseGrant& lease,
                                        int32_t group_size, int64_t vocab_size,
                                        int64_t latest_version) {
  if (g.prompt_id() != lease.prompt_id || g.epoch() != lease.epoch) {
    return absl::InvalidArgumentError(absl::StrCat("group.prompt_id/epoch: ", g.prompt_id(), "/",
                                                   g.epoch(), " but lease ", lease.lease_id,
                                                   " is for ", lease.prompt_id, "/", lease.epoch));
  }
  if (g.completions_size() != group_size) {
    return absl::InvalidArgumentError(absl::StrCat("group.completions: expected ", group_size,
                                                   " completions (group_size), got ",
                                                   g.completions_size()));
  }
  CheckedGroup out;
  out.group = std::make_shared<TrainGroup>();
  TrainGroup& tg = *out.group;
  tg.prompt_id = lease.prompt_id;
  tg.epoch = lease.epoch;
  tg.lease_id = lease.lease_id;
  tg.prompt_uid = g.prompt_uid();
  tg.prompt_tokens.assign(g.prompt_token_ids().begin(), g.prompt_token_ids().end());
  int64_t min_version = INT64_MAX;
  std::vector<double> ok_rewards;
  for (int i = 0; i < g.completions_size(); ++i) {
    const v1::Completion& c = g.completions(i);
    std::string field = absl::StrCat("group.completions[", i, "]");
    if (c.logprobs_size() != c.token_ids_size()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".logprobs: ", c.logprobs_size(),
                                                     " values for ", c.token_ids_size(),
                                                     " token_ids"));
    }
    if (c.policy_versions_size() != c.token_ids_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".policy_versions: ", c.policy_versions_size(), " values for ",
                       c.token_ids_size(), " token_ids"));
    }
    TrainSample s;
    s.tokens.reserve(c.token_ids_size());
    for (int t = 0; t < c.token_ids_size(); ++t) {
      int32_t id = c.token_ids(t);
      if (id < 0 || (vocab_size > 0 && id >= vocab_size)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".token_ids[", t, "]: ", id,
                                                       " is outside the vocabulary [0, ",
                                                       vocab_size, ")"));
      }
      float lp = c.logprobs(t);
      if (!std::isfinite(lp) || lp > 1e-4f) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".logprobs[", t, "]: expected a finite log-probability <= 0, got ", lp));
      }
      int64_t v = c.policy_versions(t);
      if (v < 0 || v > latest_version) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".policy_versions[", t, "]: ", v,
                                                       " is not a published version (latest ",
                                                       latest_version, ")"));
      }
      if (lease.pinned_version >= 0 && v != lease.pinned_version) {
        return absl::FailedPreconditionError(
            absl::StrCat(field, ".policy_versions[", t, "]: ", v, ", but lease ", lease.lease_id,
                         " pins version ", lease.pinned_version, " (deterministic mode)"));
      }
      min_version = std::min(min_version, v);
    }
    s.tokens.assign(c.token_ids().begin(), c.token_ids().end());
    s.logprobs.assign(c.logprobs().begin(), c.logprobs().end());
    s.versions.assign(c.policy_versions().begin(), c.policy_versions().end());
    s.finish = FinishOf(c.finish_reason());
    s.ok = c.reward().status() == v1::REWARD_STATUS_OK;
    s.reward = c.reward().reward();
    if (s.ok && !std::isfinite(s.reward)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".reward.reward: ", s.reward,
                                                     " with status OK (a reward that cannot be "
                                                     "computed must carry a non-OK status)"));
    }
    if (!s.ok) s.reward = std::nan("");
    for (const auto& [k, val] : c.reward().components()) s.components[k] = val;
    if (s.ok) ok_rewards.push_back(s.reward);
    tg.samples.push_back(std::move(s));
  }
  out.verdict.ok_samples = static_cast<int>(ok_rewards.size());
  out.verdict.all_rewards_equal = true;
  for (double r : ok_rewards) out.verdict.all_rewards_equal &= r == ok_rewards[0];
  out.verdict.min_version = min_version == INT64_MAX ? latest_version : min_version;
  return out;
}

// ---------------------------------------------------------------------------

LearnerService::LearnerService(LearnerServiceOptions options, WeightStore* store)
    : options_(std::move(options)),
      store_(store),
      metrics_(options_.metrics != nullptr ? options_.metrics : MetricsRegistry::Default()),
      incarnation_(absl::StrFormat("%06x", std::random_device()() & 0xFFFFFF)) {
  model_ = options_.model;
  vocab_size_ = options_.vocab_size;
  leases_granted_ = metrics_->GetCounter("cohort_learner_leases_granted_total",
                                         "Prompt leases granted to actors.");
  groups_accepted_ = metrics_->GetCounter("cohort_learner_groups_accepted_total",
                                          "Scored groups accepted from actors.");
  weight_bytes_ = metrics_->GetCounter("cohort_learner_weight_bytes_served_total",
                                       "Bytes of weight payload streamed by FetchPolicy.");
  fetches_ =
      metrics_->GetCounter("cohort_learner_weight_fetches_total", "FetchPolicy streams completed.");
  staleness_ = metrics_->GetHistogram(
      "cohort_learner_submitted_token_staleness",
      "Training steps between the latest policy and each accepted token's version.",
      Histogram::LinearBuckets(0, 1, 8));
}

LearnerService::~LearnerService() = default;

void LearnerService::SetStage(LeaseStage stage) {
  absl::MutexLock lock(&mu_);
  stage_ = std::move(stage);
}

void LearnerService::SetModel(v1::ModelFiles model, int64_t vocab_size) {
  absl::MutexLock lock(&mu_);
  model_ = std::move(model);
  vocab_size_ = vocab_size;
  ++model_generation_;
  COHORT_LOG(INFO) << "serving model " << model_.source() << " (fingerprint "
                   << model_.model_fingerprint() << "); actors that joined before re-join";
}

void LearnerService::ClearStage() {
  absl::MutexLock lock(&mu_);
  stage_ = LeaseStage();
}

void LearnerService::SetPaused(bool paused) {
  absl::MutexLock lock(&mu_);
  paused_ = paused;
}

void LearnerService::SetDraining(bool draining) {
  absl::MutexLock lock(&mu_);
  draining_ = draining;
}

bool LearnerService::paused() const {
  absl::MutexLock lock(&mu_);
  return paused_;
}

bool LearnerService::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

LeaseStage LearnerService::StageSnapshot() const {
  absl::MutexLock lock(&mu_);
  return stage_;
}

grpc::Status LearnerService::Refuse(grpc::StatusCode code, const std::string& reason,
                                    const std::string& message) {
  metrics_
      ->GetCounter("cohort_learner_refusals_total", "Requests and submissions refused, by reason.",
                   {{"reason", reason}})
      ->Increment();
  {
    absl::MutexLock lock(&mu_);
    ++refusals_[reason];
  }
  COHORT_LOG(WARNING) << "refused (" << reason << "): " << message;
  return Error(code, message);
}

absl::StatusOr<LearnerService::Actor*> LearnerService::FindActorLocked(
    const std::string& actor_id) {
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown actor_id \"", actor_id,
                                            "\" (the learner restarted?): call Join again"));
  }
  it->second.last_seen_ms = NowMs();
  return &it->second;
}

grpc::Status LearnerService::Join(grpc::ServerContext*, const v1::JoinRequest* req,
                                  v1::JoinResponse* resp) {
  if (req->protocol_version() != v1::LEARNER_PROTOCOL_CURRENT) {
    return Refuse(grpc::StatusCode::FAILED_PRECONDITION, "protocol",
                  absl::StrCat("protocol_version: the actor speaks learner protocol ",
                               req->protocol_version(), ", this learner speaks ",
                               static_cast<int>(v1::LEARNER_PROTOCOL_CURRENT),
                               " and accepts only that; run matching cohort versions"));
  }
  if (req->actor_name().empty()) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "bad_request",
                  "actor_name: expected a non-empty name");
  }
  if (req->slots() <= 0) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "bad_request",
                  absl::StrCat("slots: expected > 0, got ", req->slots()));
  }
  v1::ModelFiles model;
  {
    absl::MutexLock lock(&mu_);
    model = model_;
  }
  if (model.config_json().empty() && model.model_fingerprint().empty()) {
    return Error(grpc::StatusCode::UNAVAILABLE,
                 "the learner serves no model yet (its pipeline has not reached a lease-driven "
                 "stage); retry");
  }
  if (!req->model_fingerprint().empty() && req->model_fingerprint() != model.model_fingerprint()) {
    return Refuse(grpc::StatusCode::FAILED_PRECONDITION, "fingerprint",
                  absl::StrCat("model_fingerprint: the actor's model is ", req->model_fingerprint(),
                               ", the run's is ", model.model_fingerprint(),
                               " (start the actor without a model, or with the run's)"));
  }
  LeaseStage stage = StageSnapshot();
  std::string replaced;  // the id this name had before
  {
    absl::MutexLock lock(&mu_);
    std::string id = absl::StrCat("A", incarnation_, "-", next_actor_++);
    Actor& a = actors_[id];
    a.id = id;
    a.name = req->actor_name();
    a.pid = req->pid();
    a.last_seen_ms = NowMs();
    auto prev = by_name_.find(a.name);
    if (prev != by_name_.end() && actors_.count(prev->second) != 0) {
      Actor& old = actors_[prev->second];
      a.joins = old.joins;
      a.groups = old.groups;
      a.tokens = old.tokens;
      a.versions_seen = old.versions_seen;
      // A new process under the name reports engine time from 0 again.
      a.engine_time_earlier = old.engine_time_earlier;
      if (old.pid == a.pid) {
        a.engine_time = old.engine_time;
      } else {
        AddEngineTime(old.engine_time, &a.engine_time_earlier);
      }
      replaced = prev->second;
      actors_.erase(prev->second);
    }
    ++a.joins;
    a.model_generation = model_generation_;
    by_name_[a.name] = id;
    resp->set_actor_id(id);
  }
  // The old id asks no more: its fair share goes back to the others.
  if (!replaced.empty() && stage.ledger != nullptr) stage.ledger->ForgetActor(replaced);
  resp->set_policy_version(std::max<int64_t>(0, store_->latest_version()));
  resp->set_group_size(stage.ledger != nullptr ? stage.group_size : options_.group_size);
  *resp->mutable_sampling() = stage.ledger != nullptr ? stage.sampling : options_.sampling;
  resp->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  resp->set_lease_ttl_ms(options_.lease_ttl_ms);
  if (!options_.reward_addresses.empty()) resp->set_reward_address(options_.reward_addresses[0]);
  for (const auto& a : options_.reward_addresses) resp->add_reward_addresses(a);
  resp->set_run_id(options_.run_id);
  resp->set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  *resp->mutable_model() = model;
  resp->set_stage(stage.name);
  resp->set_stage_kind(stage.kind);
  resp->set_deterministic(options_.deterministic);
  resp->set_max_staleness(options_.max_staleness);
  COHORT_LOG(INFO) << "actor " << req->actor_name() << " joined as " << resp->actor_id();
  return grpc::Status::OK;
}

grpc::Status LearnerService::LeasePrompts(grpc::ServerContext*, const v1::LeasePromptsRequest* req,
                                          v1::LeasePromptsResponse* resp) {
  if (req->max_prompts() <= 0) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "bad_request",
                  absl::StrCat("max_prompts: expected > 0, got ", req->max_prompts()));
  }
  LeaseStage stage;
  bool paused, draining;
  std::string fingerprint;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Actor*> actor = FindActorLocked(req->actor_id());
    if (!actor.ok()) return ToGrpcStatus(actor.status());
    (*actor)->version = req->policy_version();
    stage = stage_;
    paused = paused_;
    draining = draining_ || (*actor)->leaving;
    fingerprint = model_.model_fingerprint();
  }
  int64_t latest = store_->latest_version();
  resp->set_policy_version(std::max<int64_t>(0, latest));
  resp->set_drain(draining);
  resp->set_retry_after_ms(options_.retry_after_ms);
  if (paused || draining || stage.ledger == nullptr) return grpc::Status::OK;
  std::vector<LeaseGrant> grants =
      stage.ledger->Lease(req->max_prompts(), req->policy_version(), req->actor_id(), absl::Now());
  for (const LeaseGrant& g : grants) {
    v1::Lease* l = resp->add_leases();
    l->set_lease_id(g.lease_id);
    l->set_prompt_id(g.prompt_id);
    l->set_epoch(g.epoch);
    l->set_deadline_unix_ms(absl::ToUnixMillis(g.deadline));
    const StagePrompt& p = (*stage.prompts)[g.prompt_id];
    *l->mutable_prompt_token_ids() = {p.tokens.begin(), p.tokens.end()};
    l->set_prompt_text(p.text);
    l->set_task(p.task);
    l->set_answer(p.answer);
    l->set_extra_json(p.extra_json);
    l->set_group_size(stage.group_size);
    *l->mutable_sampling() = stage.sampling;
    l->mutable_sampling()->set_seed(g.seed);
    l->set_prompt_uid(p.uid);
    l->set_policy_version(g.pinned_version >= 0 ? g.pinned_version : std::max<int64_t>(0, latest));
    l->set_version_pinned(g.pinned_version >= 0);
    l->set_attempt(g.attempt);
    l->set_model_fingerprint(fingerprint);
  }
  leases_granted_->Increment(static_cast<double>(grants.size()));
  if (!grants.empty()) resp->set_retry_after_ms(0);
  return grpc::Status::OK;
}

grpc::Status LearnerService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                                       v1::HeartbeatResponse* resp) {
  LeaseStage stage;
  bool leaving;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Actor*> actor = FindActorLocked(req->actor_id());
    if (!actor.ok()) return ToGrpcStatus(actor.status());
    (*actor)->version = req->policy_version();
    if (req->leaving()) (*actor)->leaving = true;
    leaving = (*actor)->leaving;
    if (req->has_engine_time()) (*actor)->engine_time = req->engine_time();
    stage = stage_;
    resp->set_drain(draining_);
    // The served model changed since this actor joined: it joins again.
    if ((*actor)->model_generation != model_generation_) resp->set_rejoin(true);
  }
  metrics_
      ->GetCounter("cohort_learner_actor_generated_tokens_total",
                   "Tokens actors reported generating (Heartbeat).")
      ->Increment(static_cast<double>(std::max<int64_t>(0, req->generated_tokens())));
  // The newest version Publish() accepted, complete or not: an actor asks
  // for it (version > 0, so WeightStore::GetPublished) and streams it while
  // the store builds it; the stream's last chunk (version_crc32c, which the
  // actor needs to install it) goes out only once the version is complete,
  // so an actor never runs a version latest_version() does not count.
  // Leases and staleness stay on the complete latest_version().
  resp->set_latest_policy_version(std::max<int64_t>(0, store_->latest_published_version()));
  absl::Time now = absl::Now();
  if (stage.ledger == nullptr) {
    for (const auto& id : req->lease_ids()) resp->add_expired_lease_ids(id);
    return grpc::Status::OK;
  }
  // A leaving actor asks for no more leases: its fair share goes back.
  if (leaving) stage.ledger->ForgetActor(req->actor_id());
  std::vector<std::string> released(req->released_lease_ids().begin(),
                                    req->released_lease_ids().end());
  if (!released.empty()) stage.ledger->Release(released, now);
  std::vector<std::string> ids(req->lease_ids().begin(), req->lease_ids().end());
  for (const std::string& id : stage.ledger->Renew(ids, now)) resp->add_expired_lease_ids(id);
  resp->set_deadline_unix_ms(absl::ToUnixMillis(now + stage.ledger->options().lease_ttl));
  return grpc::Status::OK;
}

grpc::Status LearnerService::SubmitGroup(grpc::ServerContext*, const v1::SubmitGroupRequest* req,
                                         v1::SubmitGroupResponse* resp) {
  const SubmitStallReturned stalled{StallSubmitForTest(*req)};
  LeaseStage stage;
  int64_t vocab_size;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Actor*> actor = FindActorLocked(req->actor_id());
    if (!actor.ok()) return ToGrpcStatus(actor.status());
    if (req->has_engine_time()) (*actor)->engine_time = req->engine_time();
    stage = stage_;
    vocab_size = vocab_size_;
  }
  const v1::ScoredGroup& g = req->group();
  if (g.lease_id().empty()) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "bad_request",
                  "group.lease_id: expected the lease's id");
  }
  if (stage.ledger == nullptr) {
    resp->set_reason_code("stage_over");
    resp->set_reason("no lease-driven stage is running");
    return grpc::Status::OK;
  }
  absl::StatusOr<LeaseGrant> lease = stage.ledger->FindLease(g.lease_id());
  if (!lease.ok()) {
    return Refuse(grpc::StatusCode::FAILED_PRECONDITION, "unknown_lease",
                  absl::StrCat("group.lease_id: ", lease.status().message(),
                               " (not granted by this stage of the run)"));
  }
  int64_t latest = std::max<int64_t>(0, store_->latest_version());
  absl::StatusOr<CheckedGroup> checked =
      CheckGroup(g, *lease, stage.group_size, vocab_size, latest);
  if (!checked.ok()) {
    std::string msg(checked.status().message());
    std::string reason = msg.find(".logprobs") != std::string::npos          ? "bad_logprobs"
                         : msg.find(".token_ids") != std::string::npos       ? "bad_token_ids"
                         : msg.find(".policy_versions") != std::string::npos ? "bad_versions"
                         : msg.find("completions:") != std::string::npos     ? "bad_group_size"
                                                                             : "bad_group";
    return Refuse(checked.status().code() == absl::StatusCode::kFailedPrecondition
                      ? grpc::StatusCode::FAILED_PRECONDITION
                      : grpc::StatusCode::INVALID_ARGUMENT,
                  reason, msg);
  }
  if (checked->group->prompt_tokens.empty() && stage.prompts != nullptr && lease->prompt_id >= 0 &&
      lease->prompt_id < static_cast<int64_t>(stage.prompts->size())) {
    // ScoredGroup.prompt_token_ids may be left empty: the learner has them.
    const StagePrompt& p = (*stage.prompts)[lease->prompt_id];
    checked->group->prompt_tokens.assign(p.tokens.begin(), p.tokens.end());
  }
  absl::StatusOr<SubmitOutcome> out =
      stage.ledger->Submit(g.lease_id(), checked->verdict, checked->group, absl::Now());
  if (!out.ok()) {
    return Refuse(grpc::StatusCode::FAILED_PRECONDITION, "unknown_lease",
                  std::string(out.status().message()));
  }
  resp->set_accepted(out->accepted);
  resp->set_duplicate(out->duplicate);
  resp->set_reason(out->reason);
  resp->set_reason_code(out->reason_code);
  resp->set_retry(out->retry);
  if (!out->accepted) {
    Refuse(grpc::StatusCode::OK, out->reason_code, out->reason);
    return grpc::Status::OK;
  }
  if (out->duplicate) return grpc::Status::OK;
  groups_accepted_->Increment();
  int64_t tokens = 0;
  absl::MutexLock lock(&mu_);
  auto actor = actors_.find(req->actor_id());
  for (const TrainSample& s : checked->group->samples) {
    tokens += static_cast<int64_t>(s.tokens.size());
    for (int64_t v : s.versions) {
      staleness_->Observe(
          static_cast<double>(StepsBetween(v, latest, stage.ledger->options().retired_versions)));
      if (actor != actors_.end()) actor->second.versions_seen.insert(v);
    }
  }
  if (actor != actors_.end()) {
    ++actor->second.groups;
    actor->second.tokens += tokens;
  }
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// FetchPolicy: one reactor per stream; one chunk in flight at a time. A
// version still being built is streamed as it is built: before each chunk
// the reactor asks the version whether the chunk's tensor is final, and if
// not, the store's worker that finishes it resumes the stream (StartWrite
// from that thread). The stream's last chunk, which carries version_crc32c,
// is final only once the version is complete and visible to Get().

namespace {

class FetchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `recut`: a full stream re-cut to another chunk size (entries own their
  // CRCs; tensor and version CRCs still wait for the version); empty: the
  // version's own `delta` (when `delta`) or `full` entries, read by index
  // once their tensor is ready.
  FetchReactor(std::shared_ptr<const PublishedVersion> version, bool delta,
               std::vector<ChunkRef> recut, Counter* bytes, Counter* fetches)
      : version_(std::move(version)),
        delta_(delta),
        recut_(std::move(recut)),
        count_(recut_.empty() ? version_->full.size() : recut_.size()),
        bytes_(bytes),
        fetches_(fetches) {
    if (!recut_.empty()) {
      for (const ChunkRef& c : recut_) stream_bytes_ += c.size;
    } else if (!delta_) {
      stream_bytes_ = version_->full_bytes;
    } else if (version_->complete()) {
      stream_bytes_ = version_->delta_bytes;
    }  // else a delta still being built: its size is not known (0)
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    Next();
  }
  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      // A write in flight ends with OnWriteDone(false); Next() checks
      // cancelled_. Only a stream waiting for the build is ended here.
      if (!waiting_) return;
    }
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
  }
  void OnDone() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (waiting_) return;  // the store's callback deletes it
    }
    delete this;
  }

 private:
  static void Unref(void* p) { delete static_cast<std::shared_ptr<const PublishedVersion>*>(p); }

  const ChunkRef& Entry(size_t i) const {
    if (!recut_.empty()) return recut_[i];
    return delta_ ? version_->delta[i] : version_->full[i];
  }

  void FinishOnce(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(std::move(status));
  }

  // With no write in flight: sends the next chunk, or waits for its tensor.
  void Next() {
    if (next_ == count_) {
      fetches_->Increment();
      FinishOnce(grpc::Status::OK);
      return;
    }
    // Fixed at layout (never written by the build): safe to read now.
    const int32_t tensor =
        recut_.empty() ? version_->full[next_].tensor_index : recut_[next_].tensor_index;
    bool cancelled = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled = cancelled_;
      if (!cancelled && !version_->WhenReady(tensor, [this] { OnReady(); })) {
        waiting_ = true;  // OnReady takes mu_ first, so it sees this
        return;
      }
    }
    if (cancelled) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    Send();
  }

  // Called by the store (on its worker thread) once the next chunk's tensor
  // is final.
  void OnReady() {
    bool remove = false, cancelled = false;
    {
      absl::MutexLock lock(&mu_);
      waiting_ = false;
      remove = done_;
      cancelled = cancelled_;
    }
    if (remove) {
      delete this;  // OnCancel finished the stream while it waited
    } else if (cancelled) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    } else {
      Send();  // a cancel from now on ends the write with OnWriteDone(false)
    }
  }

  void Send() {
    const ChunkRef& c = Entry(next_);
    const WeightTensor& t = version_->weights.tensors[c.tensor_index];
    v1::WeightChunk h;
    h.set_version(version_->version);
    h.set_tensor_name(t.name);
    h.set_dtype(WireDType(t.dtype));
    for (int64_t d : t.shape) h.add_shape(d);
    h.set_offset(c.offset);
    h.set_tensor_bytes(t.size);
    h.set_crc32c(c.crc32c);
    h.set_tensor_index(c.tensor_index);
    h.set_tensor_count(static_cast<int32_t>(version_->weights.tensors.size()));
    h.set_encoding(c.delta ? v1::WEIGHT_ENCODING_XOR_RLE : v1::WEIGHT_ENCODING_RAW);
    h.set_decoded_bytes(c.decoded_bytes);
    if (delta_) h.set_base_version(version_->delta_base);
    if (c.tensor_last) {
      h.set_tensor_last(true);
      h.set_tensor_crc32c(version_->tensor_crc32c[c.tensor_index]);
    }
    if (next_ == 0 && stream_bytes_ > 0) h.set_stream_bytes(stream_bytes_);
    if (next_ + 1 == count_) {
      h.set_last(true);
      h.set_version_crc32c(version_->version_crc32c);  // final: the last tensor is ready
    }
    std::string header = h.SerializeAsString();
    if (c.size > 0) {
      // The data field's tag (wire type 2) and its length; the bytes follow as
      // their own slice.
      AppendVarint((v1::WeightChunk::kDataFieldNumber << 3) | 2, &header);
      AppendVarint(static_cast<uint64_t>(c.size), &header);
      grpc::Slice slices[2] = {
          grpc::Slice(header),
          grpc::Slice(const_cast<uint8_t*>(c.data), static_cast<size_t>(c.size), &Unref,
                      new std::shared_ptr<const PublishedVersion>(version_))};
      buffer_ = grpc::ByteBuffer(slices, 2);
    } else {
      grpc::Slice slice(header);
      buffer_ = grpc::ByteBuffer(&slice, 1);
    }
    bytes_->Increment(static_cast<double>(c.size));
    ++next_;
    StartWrite(&buffer_);
  }

  // Constant after construction.
  const std::shared_ptr<const PublishedVersion> version_;
  const bool delta_;
  const std::vector<ChunkRef> recut_;
  const size_t count_;
  Counter* const bytes_;
  Counter* const fetches_;
  int64_t stream_bytes_ = 0;
  // Used by one thread at a time (the write and the wait alternate).
  size_t next_ = 0;
  grpc::ByteBuffer buffer_;  // the write in flight

  absl::Mutex mu_;
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;  // a store callback is registered
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // OnDone called
};

class ErrorReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit ErrorReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* LearnerService::FetchPolicy(
    grpc::CallbackServerContext*, const grpc::ByteBuffer* request) {
  std::vector<grpc::Slice> slices;
  v1::FetchPolicyRequest req;
  std::string bytes;
  if (request->Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (!req.ParseFromString(bytes)) {
    return new ErrorReactor(Refuse(grpc::StatusCode::INVALID_ARGUMENT, "bad_request",
                                   "FetchPolicyRequest: not a valid message"));
  }
  // exact_version names that version, 0 (the initial weights) included: a
  // deterministic actor's lease may pin version 0 after a restart, when the
  // latest is newer.
  // An exact version may still be being built (streamed as it is built);
  // "the latest" is the latest complete one.
  std::shared_ptr<const PublishedVersion> v = req.version() > 0 || req.exact_version()
                                                  ? store_->GetPublished(req.version())
                                                  : store_->Latest();
  if (v == nullptr) {
    return new ErrorReactor(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     absl::StrCat("version ", req.version(), " is not kept (kept: ",
                                  store_->kept_versions().empty()
                                      ? std::string("none yet")
                                      : absl::StrCat(store_->kept_versions().front(), "..",
                                                     store_->kept_versions().back()),
                                  ")")));
  }
  int64_t chunk = req.chunk_bytes() <= 0 ? 0 : std::min(req.chunk_bytes(), options_.chunk_bytes);
  bool delta = req.delta() && req.version() > 0 && v->HasDeltaFrom(req.base_version());
  std::vector<ChunkRef> recut;
  if (!delta && chunk > 0 && chunk != v->chunk_bytes) recut = v->Plan(false, 0, chunk);
  return new FetchReactor(std::move(v), delta, std::move(recut), weight_bytes_, fetches_);
}

// ---------------------------------------------------------------------------

int64_t LearnerService::OutstandingLeases() const {
  LeaseStage stage = StageSnapshot();
  return stage.ledger == nullptr ? 0 : stage.ledger->Counts().leased;
}

std::map<std::string, ActorTotals> LearnerService::ActorTotalsByName() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, ActorTotals> out;
  for (const auto& [id, a] : actors_) {
    ActorTotals& t = out[a.name];
    t.pid = a.pid;
    t.joins = a.joins;
    t.groups = a.groups;
    t.tokens = a.tokens;
    t.versions_seen = a.versions_seen;
  }
  return out;
}

void LearnerService::RestoreActorTotals(const std::map<std::string, ActorTotals>& totals) {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, t] : totals) {
    if (by_name_.count(name) != 0) continue;  // joined already: keep its live counts
    // A placeholder keyed apart from real actor ids (those start with "A").
    const std::string key = "restored:" + name;
    Actor& a = actors_[key];
    a.name = name;
    a.pid = t.pid;
    a.joins = t.joins;
    a.groups = t.groups;
    a.tokens = t.tokens;
    a.versions_seen = t.versions_seen;
    a.leaving = true;  // gone until it joins again
    by_name_[name] = key;
  }
}

void LearnerService::FillStatus(v1::RunStatus* status) const {
  LeaseStage stage = StageSnapshot();
  int64_t ttl_ms = options_.lease_ttl_ms, now = NowMs();
  std::map<std::string, int64_t> leases;
  if (stage.ledger != nullptr) leases = stage.ledger->LeasesByActor();
  {
    absl::MutexLock lock(&mu_);
    status->set_paused(paused_);
    status->set_draining(draining_);
    for (const auto& [id, a] : actors_) {
      v1::ActorInfo* info = status->add_actors();
      info->set_actor_id(a.id);
      info->set_actor_name(a.name);
      info->set_policy_version(a.version);
      auto held = leases.find(a.id);
      info->set_leases(held == leases.end() ? 0 : static_cast<int32_t>(held->second));
      info->set_last_seen_unix_ms(a.last_seen_ms);
      info->set_pid(a.pid);
      info->set_joins(a.joins);
      info->set_groups_submitted(a.groups);
      info->set_tokens_generated(a.tokens);
      info->set_policy_versions_seen(static_cast<int64_t>(a.versions_seen.size()));
      info->set_gone(a.leaving || now - a.last_seen_ms > ttl_ms);
      *info->mutable_engine_time() = a.engine_time_earlier;
      AddEngineTime(a.engine_time, info->mutable_engine_time());
    }
    for (const auto& [reason, n] : refusals_) (*status->mutable_refusals())[reason] = n;
  }
  for (int64_t v : store_->kept_versions()) status->add_kept_versions(v);
  if (stage.ledger != nullptr) {
    LedgerCounts c = stage.ledger->Counts();
    LedgerCountsToProto(c, status->mutable_ledger());
    status->set_epoch(stage.ledger->CurrentEpoch());
  }
}

// ---------------------------------------------------------------------------

AdminService::AdminService(LearnerService* learner, LearnerControl* control,
                           bool require_admin_token)
    : learner_(learner), control_(control), require_admin_token_(require_admin_token) {}

grpc::Status AdminService::CheckAdmin(grpc::ServerContext* context) const {
  if (!require_admin_token_ || CallHasAdminToken(*context)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      "cohort.v1.Admin needs the admin token (security.admin_token_file); the "
                      "token of security.token_file is not enough");
}

grpc::Status AdminService::GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest*,
                                     v1::RunStatus* response) {
  grpc::Status s = CheckAdmin(context);
  if (!s.ok()) return s;
  control_->FillStatus(response);
  learner_->FillStatus(response);
  return grpc::Status::OK;
}

grpc::Status AdminService::Checkpoint(grpc::ServerContext* context, const v1::CheckpointRequest*,
                                      v1::CheckpointResponse* response) {
  grpc::Status s = CheckAdmin(context);
  if (!s.ok()) return s;
  absl::StatusOr<v1::CheckpointResponse> r = control_->CheckpointNow();
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *r;
  return grpc::Status::OK;
}

grpc::Status AdminService::Pause(grpc::ServerContext* context, const v1::PauseRequest*,
                                 v1::PauseResponse*) {
  grpc::Status s = CheckAdmin(context);
  if (!s.ok()) return s;
  learner_->SetPaused(true);
  COHORT_LOG(INFO) << "paused by Admin/Pause";
  return grpc::Status::OK;
}

grpc::Status AdminService::Resume(grpc::ServerContext* context, const v1::ResumeRequest*,
                                  v1::ResumeResponse*) {
  grpc::Status s = CheckAdmin(context);
  if (!s.ok()) return s;
  learner_->SetPaused(false);
  COHORT_LOG(INFO) << "resumed by Admin/Resume";
  return grpc::Status::OK;
}

grpc::Status AdminService::Drain(grpc::ServerContext* context, const v1::DrainRequest*,
                                 v1::DrainResponse* response) {
  grpc::Status s = CheckAdmin(context);
  if (!s.ok()) return s;
  response->set_leases_outstanding(learner_->OutstandingLeases());
  learner_->SetDraining(true);
  control_->StartDrain();
  COHORT_LOG(INFO) << "draining by Admin/Drain";
  return grpc::Status::OK;
}

}  // namespace cohort::learner
