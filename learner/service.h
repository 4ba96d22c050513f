// cohort.v1.Learner (actor-facing) and cohort.v1.Admin (operator-facing):
// the RPC edge of the learner. The services own no training state: they
// serve the current lease-driven stage's Ledger, the WeightStore, and the
// loop's controls (LearnerControl), and validate everything an actor sends.
//
//   LearnerService learner(options, &store);
//   learner.SetStage(stage);                 // the loop, when a stage starts
//   AdminService admin(&learner, &control);
//   service_main.Serve({&learner, &admin});
//
// Validation (refused with INVALID_ARGUMENT or FAILED_PRECONDITION naming
// the field, counted in cohort_learner_refusals_total{reason}; the run goes
// on): wrong protocol revision or model fingerprint at Join; an unknown
// actor (NOT_FOUND "unknown actor_id": rejoin); an unknown lease; a group
// whose prompt_id/epoch differ from its lease, with the wrong number of
// completions, token ids outside the vocabulary, log-prob or version
// arrays of the wrong length, NaN/Inf/positive log-probs, versions newer
// than published (or, deterministic, not the pinned one), a non-finite
// reward with status OK.
//
// FetchPolicy is a raw callback method: each WeightChunk is written as a
// pre-serialized header plus the tensor bytes as a slice that references
// the PublishedVersion (no copy of the weights per fetch).
//
// Thread-safety: thread-safe; gRPC calls any method from any thread.
#ifndef COHORT_LEARNER_SERVICE_H_
#define COHORT_LEARNER_SERVICE_H_

#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "cohort/v1/learner.grpc.pb.h"
#include "core/metrics.h"
#include "learner/ledger.h"
#include "learner/trainer_interface.h"
#include "learner/weight_store.h"

namespace cohort::learner {

// The prompt of one record as leases carry it.
struct StagePrompt {
  std::vector<int32_t> tokens;  // chat template applied
  std::string text;
  std::string task;
  std::string answer;
  std::string extra_json;
  std::string uid;  // dataset id
};

// The lease-driven stage being served (null ledger = none running: leases
// answer "retry later").
struct LeaseStage {
  std::string name;           // config name
  std::string kind = "grpo";  // grpo | generate
  std::shared_ptr<Ledger> ledger;
  std::shared_ptr<const std::vector<StagePrompt>> prompts;  // by prompt_id
  int32_t group_size = 8;
  v1::SamplingParams sampling;
};

struct LearnerServiceOptions {
  std::string run_id;
  v1::ModelFiles model;  // Join returns it
  int64_t vocab_size = 0;
  std::vector<std::string> reward_addresses;
  // Join's group size and sampling defaults while no stage is served (a
  // stage's own override them).
  int32_t group_size = 8;
  v1::SamplingParams sampling;
  int64_t heartbeat_interval_ms = 2000;
  int64_t lease_ttl_ms = 30000;
  bool deterministic = false;
  int32_t max_staleness = 1;
  int64_t chunk_bytes = 4 << 20;       // FetchPolicy default and cap
  int64_t retry_after_ms = 200;        // when no lease can be granted
  MetricsRegistry* metrics = nullptr;  // nullptr = MetricsRegistry::Default()
};

// Validates `group` against its lease and converts it (see the file
// comment). Exposed for tests.
struct CheckedGroup {
  std::shared_ptr<TrainGroup> group;
  GroupVerdict verdict;
};
absl::StatusOr<CheckedGroup> CheckGroup(const v1::ScoredGroup& group, const LeaseGrant& lease,
                                        int32_t group_size, int64_t vocab_size,
                                        int64_t latest_version);

// What an actor (by actor_name) contributed to the run: ActorInfo's pid, joins,
// groups_submitted, tokens_generated and the versions behind
// policy_versions_seen. The loop saves them with each checkpoint and gives
// them back after a restart, so the counts cover the whole run.
struct ActorTotals {
  int64_t pid = 0;  // of its latest join
  int32_t joins = 0;
  int64_t groups = 0;
  int64_t tokens = 0;
  std::set<int64_t> versions_seen;
};

// The ledger's counts as the proto's (RunStatus.ledger, StageStatus.ledger).
void LedgerCountsToProto(const LedgerCounts& c, v1::LedgerCounts* out);

class LearnerService final
    : public v1::Learner::WithRawCallbackMethod_FetchPolicy<v1::Learner::Service> {
 public:
  // `store` must outlive the service.
  LearnerService(LearnerServiceOptions options, WeightStore* store);
  ~LearnerService() override;

  // Serves `stage` from now on (replacing the previous one).
  void SetStage(LeaseStage stage);
  // Serves another model from now on (a pipeline stage that reads another
  // model): Join returns `model`, submissions are checked against
  // `vocab_size`, and every actor that joined before is asked to Join again
  // (HeartbeatResponse.rejoin) so it rebuilds its generator if the model's
  // shape changed and fetches the latest weights. While the model is empty
  // (no config_json, no fingerprint: a pipeline before its first
  // lease-driven stage), Join answers UNAVAILABLE and actors retry.
  void SetModel(v1::ModelFiles model, int64_t vocab_size);
  void ClearStage();
  // Pause: no new leases (outstanding ones may still be submitted).
  void SetPaused(bool paused);
  // Drain: no new leases; Heartbeat/LeasePrompts answer drain = true.
  void SetDraining(bool draining);
  bool paused() const;
  bool draining() const;

  // Fills RunStatus.actors, paused, draining, refusals, kept_versions and
  // the current stage's ledger counts.
  void FillStatus(v1::RunStatus* status) const;
  // Leases of the current stage not yet submitted.
  int64_t OutstandingLeases() const;
  // Per actor_name totals (see ActorTotals).
  std::map<std::string, ActorTotals> ActorTotalsByName() const;
  // After a restart: the totals of a checkpoint. Each name is listed (gone,
  // no actor_id) until an actor of that name joins and continues from them.
  void RestoreActorTotals(const std::map<std::string, ActorTotals>& totals);

  grpc::Status Join(grpc::ServerContext* context, const v1::JoinRequest* request,
                    v1::JoinResponse* response) override;
  grpc::Status LeasePrompts(grpc::ServerContext* context, const v1::LeasePromptsRequest* request,
                            v1::LeasePromptsResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status SubmitGroup(grpc::ServerContext* context, const v1::SubmitGroupRequest* request,
                           v1::SubmitGroupResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchPolicy(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request) override;

 private:
  struct Actor {
    std::string id;
    std::string name;
    int64_t pid = 0;
    int32_t joins = 0;
    int64_t version = 0;
    int64_t last_seen_ms = 0;
    int64_t groups = 0;
    int64_t tokens = 0;
    std::set<int64_t> versions_seen;
    bool leaving = false;
    int64_t model_generation = 0;  // of the model it joined with
    // Engine time: its current process's (last Heartbeat) and the sum of
    // its earlier processes' under this name.
    v1::EngineTime engine_time;
    v1::EngineTime engine_time_earlier;
  };
  grpc::Status Refuse(grpc::StatusCode code, const std::string& reason, const std::string& message);
  // The actor, or NOT_FOUND; refreshes last_seen.
  absl::StatusOr<Actor*> FindActorLocked(const std::string& actor_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LeaseStage StageSnapshot() const;

  // Constant after construction.
  const LearnerServiceOptions options_;
  WeightStore* const store_;
  MetricsRegistry* const metrics_;
  const std::string incarnation_;
  Counter* leases_granted_;
  Counter* groups_accepted_;
  Counter* weight_bytes_;
  Counter* fetches_;
  Histogram* staleness_;

  mutable absl::Mutex mu_;
  LeaseStage stage_ ABSL_GUARDED_BY(mu_);
  v1::ModelFiles model_ ABSL_GUARDED_BY(mu_);  // options_.model until SetModel
  int64_t vocab_size_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t model_generation_ ABSL_GUARDED_BY(mu_) = 0;  // SetModel calls
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Actor> actors_ ABSL_GUARDED_BY(mu_);         // by actor_id
  std::map<std::string, std::string> by_name_ ABSL_GUARDED_BY(mu_);  // name -> latest id
  std::map<std::string, int64_t> refusals_ ABSL_GUARDED_BY(mu_);
  int64_t next_actor_ ABSL_GUARDED_BY(mu_) = 0;
};

// What the Admin service needs from the learner's loop.
class LearnerControl {
 public:
  virtual ~LearnerControl() = default;
  // Writes a checkpoint now (blocking until it is complete).
  virtual absl::StatusOr<v1::CheckpointResponse> CheckpointNow() = 0;
  // Starts a drain (see admin.proto); returns at once.
  virtual void StartDrain() = 0;
  // Fills run_id, stage, stage_kind, step, policy_version, epoch, done,
  // stages, last_checkpoint, skipped_steps.
  virtual void FillStatus(v1::RunStatus* status) = 0;
};

// Admin calls require the admin token when the server has one (see
// core/rpc.h CallHasAdminToken).
class AdminService final : public v1::Admin::Service {
 public:
  // Neither is owned; both must outlive the service.
  AdminService(LearnerService* learner, LearnerControl* control, bool require_admin_token);

  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest* request,
                         v1::RunStatus* response) override;
  grpc::Status Checkpoint(grpc::ServerContext* context, const v1::CheckpointRequest* request,
                          v1::CheckpointResponse* response) override;
  grpc::Status Pause(grpc::ServerContext* context, const v1::PauseRequest* request,
                     v1::PauseResponse* response) override;
  grpc::Status Resume(grpc::ServerContext* context, const v1::ResumeRequest* request,
                      v1::ResumeResponse* response) override;
  grpc::Status Drain(grpc::ServerContext* context, const v1::DrainRequest* request,
                     v1::DrainResponse* response) override;

 private:
  grpc::Status CheckAdmin(grpc::ServerContext* context) const;
  LearnerService* const learner_;
  LearnerControl* const control_;
  const bool require_admin_token_;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_SERVICE_H_
