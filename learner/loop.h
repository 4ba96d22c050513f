// The learner's main loop: runs lease-driven stages (grpo, generate) to
// completion over the LearnerService, trains with a PolicyTrainer, publishes
// one weight version per GRPO batch, checkpoints, and resumes.
//
//   LearnerLoop loop(options, trainer.get(), &store, &service);
//   RETURN_IF_ERROR(loop.Start());                 // resume or publish v0
//   ASSIGN_OR_RETURN(LedgerCounts c, loop.RunLeaseStage(spec));   // blocks
//   loop.Stop(); loop.FinalCheckpoint();           // SIGTERM / drain
//
// A pipeline (learner/pipeline_cluster.h) has one trainer per lease-driven
// stage: the loop is made with a null trainer, and before each stage
// UseTrainer(trainer, stage_index) switches to the stage's trainer (loading
// the checkpoint's trainer state when it resumes that stage) and publishes
// its weights as the next version, so versions keep increasing across
// stages; ReleaseTrainer() after the stage's final checkpoint.
//
// One GRPO step: wait for the ledger's next batch (prompts_per_step groups
// in ledger order), TrainStep, ExportWeights (the one copy), Publish as
// version v + 1, CommitBatch (trained.jsonl lines name the step), append one
// line to <run_dir>/metrics.jsonl and refresh the cohort_learner_* gauges
// (the trainer's metrics as cohort_learner_trainer_<name>);
// every checkpoint_every steps write a checkpoint. A skipped step (NaN loss
// or gradient) still commits its batch (its groups were in exactly one
// batch) and publishes the unchanged weights as the next version.
//
// Checkpoints (learner/checkpoint.h): trainer/ plus the blobs "loop" (step,
// version, stage, stage index, the finished stages' StageStatus and the
// service's per-actor totals, LearnerService::ActorTotalsByName, so a
// resumed run's status and summary count the whole run) and "ledger" (the
// stage's ledger state), and
// in deterministic mode "version-<v>" for every kept version that pinned
// leases may still need. Start() resumes from the newest complete one; a
// RunLeaseStage for the stage it was written in restores its ledger (the
// journals are truncated to the checkpoint and the rest replayed).
//
// Version numbers are never reused for other weights (not deterministic):
// before a version becomes visible its number is written durably to
// <run_dir>/published_version. A learner that resumes from a checkpoint of
// version V while that file says H > V (the dead learner published V+1..H
// after the checkpoint, and actors may hold them) publishes the
// checkpoint's weights as H + 1 and continues from there; the resumed
// ledger's base moves by H + 1 - V, and V+1..H are retired (groups with a
// token of them are refused: retired_version). A start without a
// checkpoint after such a file continues past it too. Deterministic mode
// keeps the checkpoint's numbering: its version v is the same weights in
// every attempt, and its pins are version numbers.
//
// Thread-safety: RunLeaseStage runs on one thread (the training thread);
// Stop(), CheckpointNow(), StartDrain() and FillStatus() may be called from
// any thread (a checkpoint waits for the step in progress).
#ifndef COHORT_LEARNER_LOOP_H_
#define COHORT_LEARNER_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "learner/ledger.h"
#include "learner/service.h"
#include "learner/trainer_interface.h"
#include "learner/weight_store.h"

namespace cohort::learner {

struct LoopOptions {
  std::string run_dir;          // run.out_dir: journals, metrics.jsonl
  std::string checkpoint_root;  // "" = <run_dir>/checkpoints
  int checkpoint_every = 50;    // steps; 0 = only on stop / request
  int keep_last = 3;
  bool deterministic = false;
  std::string run_id;
  // How long RunLeaseStage waits for a batch before re-checking stop.
  absl::Duration poll = absl::Milliseconds(200);
  // Append one line per step to <run_dir>/metrics.jsonl (off when a
  // pipeline writes that file itself from on_step).
  bool write_metrics_jsonl = true;
  MetricsRegistry* metrics = nullptr;  // nullptr = Default()
};

// One lease-driven stage, as the pipeline describes it.
struct LeaseStageSpec {
  std::string name = "grpo";
  std::string kind = "grpo";  // grpo (trains) | generate (sink gets batches)
  int index = 0;              // position in the pipeline (for resume)
  LedgerOptions ledger;       // stage, journal_dir, start_version are set by the loop
  std::shared_ptr<const std::vector<StagePrompt>> prompts;
  int32_t group_size = 8;
  v1::SamplingParams sampling;
  // generate: receives each batch of accepted groups (e.g. writes the kept
  // samples as JSONL), once per batch; after a restart, batches past the
  // checkpoint are generated and passed again (dedupe by batch.index or by
  // (prompt_id, epoch) if the output must not repeat them).
  std::function<absl::Status(const LedgerBatch&)> sink;
  // After each batch, on the training thread: the loop's step (1-based,
  // counting every GRPO batch of the run) and the batch's metrics (the
  // trainer's plus tokens, step_seconds, groups, stage_step (1-based batch
  // number within the stage), policy_version, staleness_mean, tokens_per_s
  // and the ledger counts as ledger_<state>).
  std::function<void(int64_t step, const std::map<std::string, double>& metrics)> on_step;
};

class LearnerLoop final : public LearnerControl {
 public:
  // None owned; all must outlive the loop.
  LearnerLoop(LoopOptions options, PolicyTrainer* trainer, WeightStore* store,
              LearnerService* service);

  // Resumes from the newest complete checkpoint (trainer state, step,
  // version, moved past <run_dir>/published_version: see the file comment)
  // or, without one, removes stale journals and metrics.jsonl of an earlier
  // run in run_dir; then publishes the current weights.
  absl::Status Start();
  // The stage index and name the resumed checkpoint was written in; -1 /
  // "" when starting fresh. Stages before it are done.
  int resumed_stage_index() const;

  // Pipelines: the trainer of the lease-driven stage `stage_index` (not
  // owned; it must stay alive until ReleaseTrainer()). When the resumed
  // checkpoint was written inside that stage, its trainer state is loaded
  // into `trainer` and its version is published again; otherwise the
  // trainer's weights are published as the next version.
  absl::Status UseTrainer(PolicyTrainer* trainer, int stage_index);
  // Forgets the trainer (after the stage's final checkpoint): checkpoints
  // are refused until the next UseTrainer().
  void ReleaseTrainer();
  bool has_trainer() const;

  // Runs the stage until every item is settled (returns its counts) or
  // Stop() (returns CANCELLED after the step in progress).
  absl::StatusOr<LedgerCounts> RunLeaseStage(const LeaseStageSpec& spec);

  // Asks RunLeaseStage to return after the current step. Idempotent.
  void Stop();
  bool stopping() const { return stop_.load(); }
  // Writes a checkpoint of the current state (after Stop(), the final one).
  absl::StatusOr<v1::CheckpointResponse> WriteCheckpointNow();

  int64_t step() const;
  int64_t version() const;

  // LearnerControl.
  absl::StatusOr<v1::CheckpointResponse> CheckpointNow() override;
  void StartDrain() override;
  void FillStatus(v1::RunStatus* status) override;
  // Set by StartDrain(); the binary ends the run when it sees it.
  bool drain_requested() const { return drain_.load(); }

  // Marks the pipeline finished (RunStatus.done). From then on RunStatus
  // keeps the run's ledger (the sum over its lease-driven stages' final
  // counts, leases_* included) and the last stage's epoch.
  void SetDone();
  // Marks the run failed for good (RunStatus.failure = reason; the stage
  // running, if any, is recorded as "failed").
  void SetFailed(const std::string& reason);
  // Records a stage's final counts for RunStatus.stages (state "done":
  // also for the run's ledger once done; `epoch` is the stage's last).
  void RecordStage(const std::string& name, const std::string& kind, const std::string& state,
                   const LedgerCounts* counts, int32_t epoch = 0);

 private:
  absl::Status TrainBatch(const LeaseStageSpec& spec, Ledger* ledger, const LedgerBatch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(train_mu_);
  absl::Status PublishCurrent() ABSL_EXCLUSIVE_LOCKS_REQUIRED(train_mu_);
  absl::StatusOr<v1::CheckpointResponse> CheckpointLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(train_mu_);
  // Returns the line's staleness_mean and tokens_per_s (the line is
  // written to metrics.jsonl when options_.write_metrics_jsonl).
  std::pair<double, double> WriteMetrics(const LeaseStageSpec& spec, const StepResult& r,
                                         const LedgerBatch& batch, double seconds,
                                         const LedgerCounts& counts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(train_mu_);

  const LoopOptions options_;
  PolicyTrainer* trainer_ ABSL_GUARDED_BY(train_mu_);
  WeightStore* const store_;
  LearnerService* const service_;
  MetricsRegistry* const metrics_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> drain_{false};

  // Held by the training thread for a step, and by checkpoints.
  mutable absl::Mutex train_mu_;
  int64_t step_ ABSL_GUARDED_BY(train_mu_) = 0;  // GRPO batches trained, all stages
  int64_t optimizer_steps_ ABSL_GUARDED_BY(train_mu_) = 0;
  int64_t version_ ABSL_GUARDED_BY(train_mu_) = 0;  // latest published
  int64_t skipped_ ABSL_GUARDED_BY(train_mu_) = 0;
  std::shared_ptr<Ledger> ledger_ ABSL_GUARDED_BY(train_mu_);  // of the running stage
  std::string stage_ ABSL_GUARDED_BY(train_mu_);
  std::string stage_kind_ ABSL_GUARDED_BY(train_mu_);
  int stage_index_ ABSL_GUARDED_BY(train_mu_) = -1;
  int resumed_stage_index_ ABSL_GUARDED_BY(train_mu_) = -1;
  std::string resumed_ledger_ ABSL_GUARDED_BY(train_mu_);  // ledger blob of the checkpoint
  // trainer/ of the resumed checkpoint, while no trainer has loaded it.
  std::string resumed_trainer_dir_ ABSL_GUARDED_BY(train_mu_);
  std::string last_checkpoint_ ABSL_GUARDED_BY(train_mu_);
  int64_t last_checkpoint_step_ ABSL_GUARDED_BY(train_mu_) = -1;

  int64_t stage_start_version_ ABSL_GUARDED_BY(train_mu_) = 0;
  // Not deterministic: the highest version ever published in run_dir (its
  // published_version file), the version ranges a dead learner published
  // after the checkpoint this run resumed from (and earlier resumes'), and
  // how far the resumed stage's ledger base moved (for its Restore).
  int64_t published_high_ ABSL_GUARDED_BY(train_mu_) = -1;
  std::vector<std::pair<int64_t, int64_t>> retired_ ABSL_GUARDED_BY(train_mu_);
  int64_t resume_version_shift_ ABSL_GUARDED_BY(train_mu_) = 0;

  // What FillStatus reports, refreshed after each step (so status never
  // waits for a step).
  mutable absl::Mutex status_mu_;
  v1::RunStatus snapshot_ ABSL_GUARDED_BY(status_mu_);
  std::vector<v1::StageStatus> stages_ ABSL_GUARDED_BY(status_mu_);
  bool done_ ABSL_GUARDED_BY(status_mu_) = false;
  std::string failure_ ABSL_GUARDED_BY(status_mu_);
  std::map<std::string, int32_t> stage_epochs_ ABSL_GUARDED_BY(status_mu_);  // last epoch, by stage
  void UpdateSnapshot() ABSL_EXCLUSIVE_LOCKS_REQUIRED(train_mu_);
};

// Serialises a weight snapshot (a JSON header line, then the tensors' raw
// bytes) and parses it back; used for deterministic checkpoints.
std::string SerializeSnapshot(const WeightSnapshot& snapshot);
absl::StatusOr<WeightSnapshot> ParseSnapshot(const std::string& bytes);

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_LOOP_H_
