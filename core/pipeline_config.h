// The run's `pipeline:`: stages run in order, each reading a model and a
// dataset by name and making a model (sft, grpo) or a dataset (generate).
// Torch-free; part of the config library (ValidateConfig runs
// PipelineChecks).
//
// Names. Models: `base` (the `model` section), each `models.<name>`, and
// the output of every earlier sft/grpo stage. Datasets: the built-in task's
// splits `train`, `eval`, `fresh`, `sft` (when `task.name` is set), each
// `datasets.<name>`, and the output of every earlier generate stage. A stage
// naming something no earlier stage makes is refused, naming the stage and
// the key.
//
// Kinds and what their inputs must hold:
//   sft       model + an SFT set (prompt_key and completion_key); makes a model
//   grpo      model + a prompt set (prompt_key, answer_key, a reward task);
//             makes a model
//   generate  model + a prompt set; makes an SFT set (prompt, completion,
//             answer) of the completions whose reward passes `threshold`
//   eval      model (+ a prompt set; default `eval.dataset`); makes nothing
// sft and grpo need `steps` or `epochs` (exactly one); generate runs one
// pass unless `epochs` says otherwise. An sft stage with `until_accuracy`
// ends early once greedy accuracy on `until_dataset` reaches it: a prompt
// set with answers and a reward task, made at start or by an earlier stage,
// and never the held-out `eval.dataset` (the held-out set must not steer
// training).
//
// `set:` holds per-stage overrides of the grpo, optim, data, sampling and
// eval sections, applied to a copy of the run config (the same parsing and checks
// as `--set`).
//
// Thread-safety: pure functions.
#ifndef COHORT_CORE_PIPELINE_CONFIG_H_
#define COHORT_CORE_PIPELINE_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/config.h"

namespace cohort {

// A dataset known to the pipeline, by name.
struct PipelineDataset {
  DatasetSpec spec;      // path may be relative to the run's data directory
  bool sft_set = false;  // has completions (SFT-ready)
  std::string made_by;   // stage name, or "" for inputs that exist at start
};

struct PlannedStage {
  int index = 0;
  PipelineStage stage;  // as written
  std::string model;    // resolved input model name
  std::string dataset;  // resolved input dataset name ("" for eval without one)
  std::string output;   // resolved output name ("" for eval)
  // sft with until_accuracy > 0: the prompt set it is measured on
  // (stage.until_dataset resolved; its path is empty otherwise).
  PipelineDataset until;
  // The run config with the stage's `set:` applied and `data.*` pointing at
  // the input dataset (path, keys, task).
  RunConfig config;
};

struct PipelinePlan {
  std::vector<PlannedStage> stages;
  std::map<std::string, PipelineDataset> datasets;  // every dataset, inputs and outputs
  std::map<std::string, ModelSpec> models;          // inputs only; `base` has no spec
  std::string final_model;                          // last sft/grpo output, else "base"
};

// Structural checks of `config.pipeline` (names, kinds, lengths, `set:`
// keys). No file is read. OK for an empty pipeline.
absl::Status PipelineChecks(const RunConfig& config);

// The resolved plan. `data_dir` is where the task's splits and generated
// datasets live (<out>/data); relative task/generated paths are joined to it.
absl::StatusOr<PipelinePlan> PlanPipeline(const RunConfig& config, const std::string& data_dir);

// Reads the first line of every input dataset that exists at start (task
// splits once written, `datasets` entries) and checks that each stage's
// keys are present: "pipeline[0] (cold_start): dataset \"sft\" (data/sft.jsonl)
// line 1 has no key \"completion\"". Missing files are errors too.
absl::Status CheckPipelineInputs(const PipelinePlan& plan);

}  // namespace cohort

#endif  // COHORT_CORE_PIPELINE_CONFIG_H_
