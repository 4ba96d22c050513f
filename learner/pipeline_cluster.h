// The learner's StageExecutor (LibTorch): what `cohort-learner` runs for a
// run config's `pipeline:`. SFT, held-out evals and model initialisation run
// in the learner's own process (pipeline_local.h); grpo and generate stages
// go through leases to the actors (learner/loop.h over the LearnerService),
// with the exactly-once ledger, a policy version per GRPO batch, checkpoints
// and resume.
//
//   ClusterExecutor executor(run_dir, device, &loop, &service);
//   Pipeline pipeline(config, run_dir, &executor, options);
//   executor.set_pipeline(&pipeline);     // held-out set for evals during a stage
//   RETURN_IF_ERROR(pipeline.Run());      // on the training thread
//
// A lease-driven stage (stage.config is the run config with its `set:`):
//   prompts   the stage's dataset, each prompt formatted with
//             model.chat_template and the input model's tokenizer; a stage
//             of `steps: S` covers S * grpo.prompts_per_step prompts (one
//             seeded shuffle of the dataset after another), one of `epochs:
//             E` covers E passes (generate: one pass unless `epochs` says
//             otherwise). Ledger item k is the k-th prompt of that sequence
//             (trained.jsonl's prompt_id), so prompts_total = trained +
//             filtered + failed per stage.
//   trainer   grpo: a learner/trainer.h Trainer made from the input model
//             directory with the stage's grpo/optim options; generate: a
//             learner/weight_server.h WeightServer (the input weights in
//             the served dtype only: no optimizer state, no reference model).
//   model     the service serves the input model's files (config.json,
//             tokenizer.json, tokenizer_config.json, generation_config.json,
//             chat template, EOS, fingerprint); every actor that joined
//             before is asked to Join again (Heartbeat.rejoin) and fetches
//             the stage's weights, published as the next version (versions
//             keep increasing across stages).
//   grpo      trains until every prompt is settled; held-out eval every
//             eval.eval_every batches (on the current weights, in process);
//             the trained model goes to out_dir (with the tokenizer files).
//   generate  group_size = `samples` (else sampling.group_size) completions
//             per prompt; those with an OK reward >= `threshold` (at most
//             keep_per_prompt per prompt) are appended as {"id", "prompt",
//             "completion", "answer", "reward"} to <out>.partial, renamed to
//             the output dataset at the end.
//   resume    a stage the loop's checkpoint was written in resumes from it
//             (ledger, trainer, step, version); a stage that finished before
//             the pipeline state recorded it returns its saved outcome
//             (<run_dir>/stages/<index>-<name>.json).
//
// StageOutcome::extra: `ledger` (prompts_total, prompts_trained,
// prompts_filtered, prompts_failed, duplicates, lost), `actors` (one entry
// per actor name that joined: actor_name, pid, joins, groups_submitted,
// tokens_generated, policy_versions_seen, and over the stage, from the
// actors' heartbeats (HeartbeatRequest.engine_time): idle_fraction,
// idle_fraction_by_reason {prompts, weights, rewards}, engine_seconds),
// tokens_per_s_generated, tokens_per_s_trained, learner_idle_fraction,
// actor_idle_fraction (all actors' engine time together), first_version,
// last_version. Each step's metrics (StageCallbacks::on_step) add
// actor_idle_fraction and actor/<name>/idle_fraction since the stage began.
//
// Thread-safety: one call at a time, from the training thread.
#ifndef COHORT_LEARNER_PIPELINE_CLUSTER_H_
#define COHORT_LEARNER_PIPELINE_CLUSTER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer.h"
#include "learner/dataset.h"
#include "learner/loop.h"
#include "learner/pipeline.h"
#include "learner/pipeline_local.h"
#include "learner/service.h"
#include "nlohmann/json.hpp"

namespace cohort::learner {

// A prompt record as the policy sees it: its messages (or its prompt as one
// user turn) through `chat_template` with the generation prompt, tokenized.
// Shared by the single-stage learner (data.train) and the lease stages.
absl::StatusOr<std::vector<int32_t>> FormatPromptRecord(const PromptRecord& record,
                                                        const std::string& chat_template,
                                                        const Tokenizer& tokenizer);

class ClusterExecutor final : public StageExecutor {
 public:
  // `device`: learner.device ("cpu" or "cuda"). None owned.
  ClusterExecutor(std::string run_dir, std::string device, LearnerLoop* loop,
                  LearnerService* service);

  // The pipeline whose plan names the held-out set (evals during a stage).
  void set_pipeline(const Pipeline* pipeline) { pipeline_ = pipeline; }

  absl::Status InitModel(const RunConfig& config, const std::string& tokenizer_dir,
                         const std::string& out_dir) override;
  absl::StatusOr<StageOutcome> Train(const PlannedStage& stage, const std::string& model_dir,
                                     const PipelineDataset& dataset, const std::string& out_dir,
                                     const StageCallbacks& callbacks) override;
  absl::StatusOr<StageOutcome> Generate(const PlannedStage& stage, const std::string& model_dir,
                                        const PipelineDataset& dataset,
                                        const std::string& out_jsonl,
                                        const StageCallbacks& callbacks) override;
  absl::StatusOr<EvalResult> Evaluate(const RunConfig& config, const std::string& model_dir,
                                      const PipelineDataset& dataset) override;

  // Every actor the service has seen join (summary.json `actors`); with
  // `since` (the status when a stage began) the engine idle fractions are
  // over the time since then.
  nlohmann::json ActorsJson(const v1::RunStatus* since = nullptr) const;

 private:
  absl::StatusOr<StageOutcome> RunLeaseStage(const PlannedStage& stage,
                                             const std::string& model_dir,
                                             const PipelineDataset& dataset, const std::string& out,
                                             const StageCallbacks& cb);

  const std::string run_dir_;
  const std::string device_;
  LearnerLoop* const loop_;
  LearnerService* const service_;
  const Pipeline* pipeline_ = nullptr;
  LocalExecutor local_;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_PIPELINE_CLUSTER_H_
