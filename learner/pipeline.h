// The pipeline sequencer: runs the run config's `pipeline:` stages in
// order in a run directory, with held-out evals around and inside each
// stage, and leaves the run's outputs. Torch-free: the work of each stage is
// done by a StageExecutor (in-process SFT/eval/GRPO in pipeline_local.h;
// GRPO and generate through leases to the actors in the learner service).
//
//   Pipeline pipeline(config, run_dir, &executor);
//   RETURN_IF_ERROR(pipeline.Run());
//
// Run directory (DIR):
//   data/           the task's splits and every generated dataset (JSONL)
//   models/<name>/  every model a stage made (Hugging Face layout)
//   model/          the final model, with tokenizer, chat template
//                   (tokenizer_config.json `cohort_chat_template`) and
//                   generation settings (generation_config.json)
//   pipeline_state.json  stages finished so far and the config they ran
//                   with (written atomically after each stage)
//   summary.json    stages (name, kind, duration_s, steps, final metrics,
//                   eval_before / eval_after), the effective config, the git
//                   revision, plus what the executor adds (ledger, actors)
//   evals.jsonl     one line per held-out eval; metrics.jsonl one line per
//                   training step; tensorboard/ the same as scalars
//   report.html     core/report.h
//
// Failure: an error that a restart would repeat (IsPermanentRunError, or
// the same error of the same stage kRunFailureRepeats times in a row) ends
// the run: <DIR>/run_failure.json records it as final for this config,
// summary.json gets `failure` {stage, reason, attempts}, and Run() returns
// it marked (IsFinalRunFailure); every later Run() with the same config
// returns it again at once. Other errors (I/O, a killed process) are
// recorded with their attempt count and the run resumes when restarted.
//
// Resume: a DIR whose pipeline_state.json ran the same config
// (PipelineStateConfig) skips the
// finished stages and reruns the interrupted one from its start (the
// executor may resume it from its own checkpoint); a different config is
// FAILED_PRECONDITION unless Options::start_new; a finished run returns OK
// at once (finished() is true).
//
// Progress: on a TTY one bar per stage with the ETA and the latest reward
// and accuracy, redrawn in place; otherwise one log line every
// Options::log_every_seconds.
//
// Thread-safety: Run() is called once, from one thread; the executor's
// callbacks must come from that thread too.
#ifndef COHORT_LEARNER_PIPELINE_H_
#define COHORT_LEARNER_PIPELINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/config.h"
#include "core/pipeline_config.h"
#include "nlohmann/json.hpp"

namespace cohort::learner {

// cohort-learner's exit code when the run failed for good (see above);
// `cohort run` does not restart a learner that exits with it
// (cli/supervisor.h kLearnerFailedExitCode).
inline constexpr int kRunFailedExitCode = 3;
// The same stage failing with the same reason this many times in a row is
// final even when the error's code looks transient.
inline constexpr int kRunFailureRepeats = 3;

// Marks `error` as one a retry would repeat (e.g. a generate stage that kept
// no completion: its FAILED_PRECONDITION is otherwise treated as an I/O
// error, which core/file.h also reports as FAILED_PRECONDITION).
absl::Status PermanentRunError(absl::Status error);
// Marked by PermanentRunError, or INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE
// or UNIMPLEMENTED (bad or missing input, a config the code cannot run).
bool IsPermanentRunError(const absl::Status& error);
// The run ended: the error Pipeline::Run / RecordRunFailure found final.
bool IsFinalRunFailure(const absl::Status& error);

// <run_dir>/run_failure.json: {"config", "stage", "reason", "code",
// "attempts", "final", "unix_ms"}.
struct RunFailure {
  std::string stage;   // "" = before any stage (setup)
  std::string reason;  // the error message
  int attempts = 0;    // consecutive failures of this stage with this reason
  bool final = false;
};
// Records `error` of `stage` for `config` (a PipelineStateConfig): attempts
// counts on from an earlier record of the same config, stage and reason;
// final when IsPermanentRunError or attempts >= kRunFailureRepeats. Returns
// the record and, when final, `error` marked so IsFinalRunFailure is true.
absl::StatusOr<RunFailure> RecordRunFailure(const std::string& run_dir, const std::string& config,
                                            const std::string& stage, const absl::Status& error,
                                            absl::Status* marked);
// The final failure recorded in run_dir for `config`, if any.
std::optional<RunFailure> FinalRunFailure(const std::string& run_dir, const std::string& config);
// Removes a non-final record (a stage finished: earlier failures were
// transient).
void ClearRunFailure(const std::string& run_dir);

// A held-out eval of one model on one prompt set.
struct EvalResult {
  double accuracy = 0;          // greedy, a fraction in [0, 1]
  double sampled_accuracy = 0;  // one sample at sampling.temperature (NaN when off)
  double format_rate = 0;       // greedy completions in the task's format
  double mean_length = 0;       // greedy completion tokens
  int64_t problems = 0;
  // A few sampled completions: {"prompt", "completion", "correct"}.
  std::vector<nlohmann::json> completions;
  nlohmann::json ToJson() const;
};

// What a stage reports back while and after it runs.
struct StageCallbacks {
  // After each optimizer step (sft, grpo) or batch (generate): its index
  // (1-based), the planned total (0 = unknown) and its metrics by name.
  std::function<void(int64_t step, int64_t total, const std::map<std::string, double>& metrics)>
      on_step;
  // A held-out eval the executor ran at `step` (every eval.eval_every steps).
  std::function<void(int64_t step, const EvalResult& result)> on_eval;
};

struct StageOutcome {
  int64_t steps = 0;
  std::map<std::string, double> final_metrics;
  nlohmann::json extra = nlohmann::json::object();  // e.g. ledger, actors
};

// The work of the stages. Paths are directories in the Hugging Face layout
// (model) or JSONL files (datasets).
class StageExecutor {
 public:
  virtual ~StageExecutor() = default;
  // A randomly initialised model of `config.model.preset` with the
  // tokenizer files in `tokenizer_dir`, seeded by model.init_seed (-1 =
  // run.seed), into `out_dir`.
  virtual absl::Status InitModel(const RunConfig& config, const std::string& tokenizer_dir,
                                 const std::string& out_dir) = 0;
  // sft / grpo: trains `model_dir` on `dataset` for the stage's length and
  // writes the result to `out_dir`.
  virtual absl::StatusOr<StageOutcome> Train(const PlannedStage& stage,
                                             const std::string& model_dir,
                                             const PipelineDataset& dataset,
                                             const std::string& out_dir,
                                             const StageCallbacks& callbacks) = 0;
  // generate: writes the kept completions as {"id", "prompt", "completion",
  // "answer"} lines to `out_jsonl`.
  virtual absl::StatusOr<StageOutcome> Generate(const PlannedStage& stage,
                                                const std::string& model_dir,
                                                const PipelineDataset& dataset,
                                                const std::string& out_jsonl,
                                                const StageCallbacks& callbacks) = 0;
  // Held-out eval of `model_dir` on the first eval.problems of `dataset`.
  virtual absl::StatusOr<EvalResult> Evaluate(const RunConfig& config, const std::string& model_dir,
                                              const PipelineDataset& dataset) = 0;
};

// The config a run directory's pipeline_state.json records and a resume
// compares: the effective config without where this run's reward server
// listens (reward.address, which `cohort run` passes per run).
inline std::string PipelineStateConfig(RunConfig config) {
  config.reward.address.clear();
  return ConfigToYaml(config);
}

class Pipeline {
 public:
  struct Options {
    bool start_new = false;        // replace an unfinished run with another config
    double log_every_seconds = 5;  // progress lines when not on a TTY
    bool force_tty = false;        // draw the bar even when stderr is not a TTY
    std::string git_revision;      // recorded in summary.json
  };

  Pipeline(RunConfig config, std::string run_dir, StageExecutor* executor, Options options);
  Pipeline(RunConfig config, std::string run_dir, StageExecutor* executor)
      : Pipeline(std::move(config), std::move(run_dir), executor, Options()) {}
  ~Pipeline();

  absl::Status Run();
  bool finished() const { return finished_; }
  const PipelinePlan& plan() const { return plan_; }

 private:
  absl::Status Prepare();
  absl::Status RunStage(const PlannedStage& stage, nlohmann::json* record);
  absl::StatusOr<EvalResult> HeldOutEval(const PlannedStage& stage, const std::string& model_dir,
                                         const char* when, int64_t step);
  absl::Status WriteFinalModel();
  absl::Status RunStages();
  absl::Status WriteSummary(const RunFailure* failure = nullptr);
  std::string ModelDir(const std::string& name) const;
  absl::Status SaveState(bool finished);

  const RunConfig config_;
  const std::string dir_;
  StageExecutor* const executor_;
  const Options options_;
  PipelinePlan plan_;
  std::string config_yaml_;  // the effective config (summary.json)
  std::string state_yaml_;   // PipelineStateConfig (pipeline_state.json)
  nlohmann::json stages_done_ = nlohmann::json::array();
  bool finished_ = false;
  std::string current_stage_;  // "" while preparing
  double run_start_ = 0;
  std::map<std::string, EvalResult> eval_cache_;  // model dir + dataset -> result
  class Progress;
  std::unique_ptr<Progress> progress_;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_PIPELINE_H_
