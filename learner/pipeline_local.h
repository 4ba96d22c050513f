// In-process StageExecutor (LibTorch): SFT, GRPO, rejection sampling and
// held-out eval in the calling process, with learner/trainer.h for the
// updates, model::Engine for generation and the reward scorer for rewards.
//
// It is what the learner runs for SFT and eval stages, and a single-process
// stand-in for the lease-driven GRPO/generate stages (no actors, no ledger:
// prompts are taken in seeded epoch order), used by `cohort-pipeline` to
// calibrate recipes and by tests.
//
// Per stage (stage.config is the run config with the stage's `set:`):
//   sft       each step: grpo.prompts_per_step demonstrations drawn with a
//             seeded generator (epochs: steps = epochs * N / batch),
//             Trainer::SftStep (NLL on completion tokens + EOS)
//   grpo      each step: grpo.prompts_per_step prompts (epoch order),
//             sampling.group_size samples each at sampling.temperature,
//             scored by the task's reward, Trainer::TrainStep, weights
//             swapped into the engine; held-out eval every eval.eval_every
//   generate  sampling.group_size (or `samples`) samples per prompt; those
//             with reward >= threshold kept (at most keep_per_prompt)
//   eval      greedy accuracy, sampled accuracy (one sample at
//             sampling.temperature), format rate (r1-zero tags), mean length
//
// Thread-safety: one call at a time.
#ifndef COHORT_LEARNER_PIPELINE_LOCAL_H_
#define COHORT_LEARNER_PIPELINE_LOCAL_H_

#include <functional>
#include <string>

#include "learner/pipeline.h"

namespace cohort::learner {

class LocalExecutor : public StageExecutor {
 public:
  // Checked before every step of sft/grpo/generate: when it returns true
  // the stage ends with CANCELLED (the learner stopping). Null = never.
  void set_cancelled(std::function<bool()> cancelled) { cancelled_ = std::move(cancelled); }

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

 private:
  absl::Status CheckCancelled(const PlannedStage& stage) const;
  std::function<bool()> cancelled_;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_PIPELINE_LOCAL_H_
