// The pipeline sequencer. See pipeline.h.
#include "learner/pipeline.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/report.h"
#include "core/status.h"
#include "core/tasks/addition.h"
#include "core/tensorboard.h"

namespace cohort::learner {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

double Now() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

Json MetricsJson(const std::map<std::string, double>& m) {
  Json j = Json::object();
  for (const auto& [k, v] : m) {
    if (std::isfinite(v)) j[k] = v;
  }
  return j;
}

// Copies a model directory's files (not recursive: HF dirs are flat).
absl::Status CopyDir(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::string tmp = to + ".tmp";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  fs::copy(from, tmp, fs::copy_options::overwrite_existing | fs::copy_options::recursive, ec);
  if (ec)
    return absl::FailedPreconditionError(absl::StrCat("cannot copy ", from, ": ", ec.message()));
  fs::remove_all(to, ec);
  return RenameDurably(tmp, to);
}

constexpr char kPermanentPayload[] = "cohort.dev/permanent";
constexpr char kFinalPayload[] = "cohort.dev/run-failed";

}  // namespace

absl::Status PermanentRunError(absl::Status error) {
  if (!error.ok()) error.SetPayload(kPermanentPayload, absl::Cord("1"));
  return error;
}

bool IsPermanentRunError(const absl::Status& error) {
  if (error.ok()) return false;
  if (error.GetPayload(kPermanentPayload).has_value()) return true;
  switch (error.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

bool IsFinalRunFailure(const absl::Status& error) {
  return !error.ok() && error.GetPayload(kFinalPayload).has_value();
}

absl::StatusOr<RunFailure> RecordRunFailure(const std::string& run_dir, const std::string& config,
                                            const std::string& stage, const absl::Status& error,
                                            absl::Status* marked) {
  const std::string path = run_dir + "/run_failure.json";
  RunFailure f;
  f.stage = stage;
  f.reason = std::string(error.message());
  f.attempts = 1;
  if (PathExists(path)) {
    absl::StatusOr<std::string> text = ReadFile(path);
    Json old = text.ok() ? Json::parse(*text, nullptr, false) : Json();
    if (old.is_object() && old.value("config", std::string()) == config &&
        old.value("stage", std::string()) == stage &&
        old.value("reason", std::string()) == f.reason) {
      f.attempts = old.value("attempts", 0) + 1;
    }
  }
  f.final = IsPermanentRunError(error) || f.attempts >= kRunFailureRepeats;
  Json j = {{"config", config},
            {"stage", f.stage},
            {"reason", f.reason},
            {"code", absl::StatusCodeToString(error.code())},
            {"attempts", f.attempts},
            {"final", f.final},
            {"unix_ms", absl::ToUnixMillis(absl::Now())}};
  RETURN_IF_ERROR(WriteFileAtomically(path, j.dump(1) + "\n"));
  *marked = error;
  if (f.final) marked->SetPayload(kFinalPayload, absl::Cord("1"));
  return f;
}

std::optional<RunFailure> FinalRunFailure(const std::string& run_dir, const std::string& config) {
  const std::string path = run_dir + "/run_failure.json";
  if (!PathExists(path)) return std::nullopt;
  absl::StatusOr<std::string> text = ReadFile(path);
  Json j = text.ok() ? Json::parse(*text, nullptr, false) : Json();
  if (!j.is_object() || !j.value("final", false) || j.value("config", std::string()) != config) {
    return std::nullopt;
  }
  RunFailure f;
  f.stage = j.value("stage", std::string());
  f.reason = j.value("reason", std::string());
  f.attempts = j.value("attempts", 0);
  f.final = true;
  return f;
}

void ClearRunFailure(const std::string& run_dir) {
  const std::string path = run_dir + "/run_failure.json";
  if (!PathExists(path)) return;
  absl::StatusOr<std::string> text = ReadFile(path);
  Json j = text.ok() ? Json::parse(*text, nullptr, false) : Json();
  if (j.is_object() && j.value("final", false)) return;
  absl::Status s = RemoveAll(path);
  if (!s.ok()) COHORT_LOG(WARNING) << s;
}

Json EvalResult::ToJson() const {
  Json j = {{"accuracy", accuracy},
            {"format_rate", format_rate},
            {"mean_length", mean_length},
            {"problems", problems}};
  if (std::isfinite(sampled_accuracy)) j["sampled_accuracy"] = sampled_accuracy;
  return j;
}

// Progress: a bar per stage on a TTY, else a line every few seconds.
class Pipeline::Progress {
 public:
  Progress(bool tty, double every) : tty_(tty), every_(every) {}
  void Start(const std::string& stage) {
    stage_ = stage;
    start_ = Now();
    last_ = 0;
  }
  void Step(int64_t step, int64_t total, const std::map<std::string, double>& m) {
    for (const char* k : {"reward_mean", "accuracy", "loss"}) {
      if (auto it = m.find(k); it != m.end()) latest_[k] = it->second;
    }
    double now = Now();
    if (!tty_ && now - last_ < every_ && step != total) return;
    last_ = now;
    double elapsed = now - start_;
    std::string eta = "?";
    if (total > 0 && step > 0) eta = absl::StrFormat("%.0fs", elapsed / step * (total - step));
    std::string figures;
    for (const auto& [k, v] : latest_) absl::StrAppendFormat(&figures, " %s %.3f", k, v);
    if (!held_out_.empty()) absl::StrAppend(&figures, " held-out ", held_out_);
    if (tty_) {
      int width = 24, filled = total > 0 ? static_cast<int>(width * step / total) : 0;
      std::string bar(filled, '#');
      bar.resize(width, '.');
      std::fprintf(stderr, "\r[%s] %s %lld/%lld ETA %s%s\033[K", stage_.c_str(), bar.c_str(),
                   static_cast<long long>(step), static_cast<long long>(total), eta.c_str(),
                   figures.c_str());
      std::fflush(stderr);
    } else {
      COHORT_LOG(INFO) << "[" << stage_ << "] step " << step << "/" << total << " ETA " << eta
                       << figures;
    }
  }
  void HeldOut(const std::string& text) { held_out_ = text; }
  void End() {
    if (tty_) std::fprintf(stderr, "\n");
    latest_.clear();
    held_out_.clear();
  }

 private:
  const bool tty_;
  const double every_;
  std::string stage_;
  double start_ = 0, last_ = 0;
  std::map<std::string, double> latest_;
  std::string held_out_;
};

Pipeline::Pipeline(RunConfig config, std::string run_dir, StageExecutor* executor, Options options)
    : config_(std::move(config)),
      dir_(std::move(run_dir)),
      executor_(executor),
      options_(options),
      progress_(
          std::make_unique<Progress>(options.force_tty || isatty(2), options.log_every_seconds)) {}

Pipeline::~Pipeline() = default;

std::string Pipeline::ModelDir(const std::string& name) const {
  if (name == "base" && !config_.model.path.empty()) return config_.model.path;
  if (auto it = plan_.models.find(name); it != plan_.models.end()) return it->second.path;
  return dir_ + "/models/" + name;
}

absl::Status Pipeline::SaveState(bool finished) {
  Json state = {{"config", state_yaml_}, {"stages", stages_done_}, {"finished", finished}};
  return WriteFileAtomically(dir_ + "/pipeline_state.json", state.dump(1));
}

absl::Status Pipeline::Prepare() {
  config_yaml_ = ConfigToYaml(config_);
  state_yaml_ = PipelineStateConfig(config_);
  RETURN_IF_ERROR(MakeDirs(dir_ + "/data"));
  ASSIGN_OR_RETURN(plan_, PlanPipeline(config_, dir_ + "/data"));
  const std::string state_path = dir_ + "/pipeline_state.json";
  if (PathExists(state_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(state_path));
    Json state = Json::parse(text, nullptr, false);
    if (!state.is_object() || !state.contains("config") || !state["stages"].is_array()) {
      return absl::FailedPreconditionError(
          absl::StrCat(state_path, ": not a pipeline state; cannot resume from it"));
    }
    if (state["config"] != state_yaml_ && !options_.start_new) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir_, " holds a run with a different config; use another directory or --new"));
    }
    if (state["config"] == state_yaml_) {
      stages_done_ = state["stages"];
      finished_ = state.value("finished", false);
      if (stages_done_.size() > plan_.stages.size()) {
        return absl::FailedPreconditionError(
            absl::StrCat(state_path, ": more finished stages than the pipeline has"));
      }
    }
  }
  // The task's splits and tokenizer (deterministic: rewriting is harmless).
  if (config_.task.name == "addition" && !PathExists(dir_ + "/data/tokenizer.json")) {
    tasks::AdditionOptions o;
    o.digits = config_.task.digits;
    o.train_size = config_.task.train_size;
    o.eval_size = config_.task.eval_size;
    o.fresh_size = config_.task.fresh_size;
    o.sft_size = config_.task.sft_size;
    o.seed = static_cast<uint64_t>(config_.task.seed);
    RETURN_IF_ERROR(tasks::WriteAdditionTask(o, dir_ + "/data"));
  }
  RETURN_IF_ERROR(CheckPipelineInputs(plan_));
  if (config_.model.path.empty() && !PathExists(ModelDir("base") + "/config.json")) {
    std::string tokenizer_dir = config_.model.tokenizer.empty()
                                    ? dir_ + "/data"
                                    : fs::path(config_.model.tokenizer).parent_path().string();
    RETURN_IF_ERROR(executor_->InitModel(config_, tokenizer_dir, ModelDir("base")));
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalResult> Pipeline::HeldOutEval(const PlannedStage& stage,
                                                 const std::string& model_dir, const char* when,
                                                 int64_t step) {
  const std::string& name = stage.stage.kind == "eval" ? stage.dataset : config_.eval.dataset;
  auto it = plan_.datasets.find(name);
  if (name.empty() || it == plan_.datasets.end()) return absl::NotFoundError("no held-out set");
  // A model evaluated on the same set already (the previous stage's
  // "after" is this stage's "before") is not evaluated again.
  const std::string key = model_dir + "\n" + name;
  EvalResult r;
  if (auto cached = eval_cache_.find(key); cached != eval_cache_.end()) {
    r = cached->second;
  } else {
    ASSIGN_OR_RETURN(r, executor_->Evaluate(stage.config, model_dir, it->second));
    eval_cache_[key] = r;
  }
  Json line = r.ToJson();
  line["stage"] = stage.stage.name;
  line["when"] = when;
  line["step"] = step;
  line["time_s"] = Now() - run_start_;
  line["dataset"] = name;
  line["completions"] = r.completions;
  RETURN_IF_ERROR(AppendToFile(dir_ + "/evals.jsonl", line.dump() + "\n"));
  progress_->HeldOut(absl::StrFormat("%.3f", r.accuracy));
  COHORT_LOG(INFO) << "[" << stage.stage.name << "] held-out " << when << " (step " << step
                   << "): greedy accuracy " << r.accuracy << ", sampled " << r.sampled_accuracy
                   << ", format " << r.format_rate << ", mean length " << r.mean_length;
  return r;
}

absl::Status Pipeline::RunStage(const PlannedStage& p, Json* record) {
  const PipelineStage& s = p.stage;
  const std::string model_in = ModelDir(p.model);
  (*record) = {{"name", s.name}, {"kind", s.kind}, {"model", p.model}, {"dataset", p.dataset}};
  const double t0 = Now();
  // Steps are counted over the whole run in metrics.jsonl, evals.jsonl and
  // TensorBoard.
  int64_t base_step = 0;
  for (const Json& done : stages_done_) base_step += done.value("steps", int64_t{0});
  const bool has_eval = !config_.eval.dataset.empty() || s.kind == "eval";
  if (has_eval) {
    ASSIGN_OR_RETURN(EvalResult before, HeldOutEval(p, model_in, "before", base_step));
    (*record)["eval_before"] = before.ToJson();
  }
  if (s.kind == "eval") {
    (*record)["eval_after"] = (*record)["eval_before"];
    (*record)["steps"] = 0;
    (*record)["duration_s"] = Now() - t0;
    return absl::OkStatus();
  }
  auto tb = TensorBoardWriter::Create(dir_ + "/tensorboard");
  if (!tb.ok()) COHORT_LOG(WARNING) << "tensorboard: " << tb.status();
  StageCallbacks cb;
  cb.on_step = [&](int64_t step, int64_t total, const std::map<std::string, double>& m) {
    Json line = MetricsJson(m);
    line["stage"] = s.name;
    line["stage_step"] = step;
    line["step"] = base_step + step;
    line["time_s"] = Now() - run_start_;
    absl::Status st = AppendToFile(dir_ + "/metrics.jsonl", line.dump() + "\n");
    if (!st.ok()) COHORT_LOG(WARNING) << st;
    if (tb.ok()) {
      std::map<std::string, double> scalars;
      for (const auto& [k, v] : m) scalars[s.name + "/" + k] = v;
      (void)(*tb)->AddScalars(base_step + step, scalars);
    }
    progress_->Step(step, total, m);
  };
  cb.on_eval = [&](int64_t step, const EvalResult& r) {
    Json line = r.ToJson();
    line["stage"] = s.name;
    line["when"] = "during";
    line["step"] = base_step + step;
    line["time_s"] = Now() - run_start_;
    line["completions"] = r.completions;
    (void)AppendToFile(dir_ + "/evals.jsonl", line.dump() + "\n");
    if (tb.ok()) {
      (void)(*tb)->AddScalars(base_step + step,
                              {{"eval/accuracy", r.accuracy}, {"eval/format_rate", r.format_rate}});
    }
    progress_->HeldOut(absl::StrFormat("%.3f", r.accuracy));
  };
  progress_->Start(s.name);
  const PipelineDataset& dataset = plan_.datasets.at(p.dataset);
  absl::StatusOr<StageOutcome> outcome;
  std::string model_out = model_in;
  if (s.kind == "generate") {
    std::string out = plan_.datasets.at(p.output).spec.path;
    outcome = executor_->Generate(p, model_in, dataset, out, cb);
  } else {
    model_out = ModelDir(p.output);
    outcome = executor_->Train(p, model_in, dataset, model_out, cb);
  }
  progress_->End();
  if (!outcome.ok()) {
    absl::Status named(outcome.status().code(),
                       absl::StrCat("stage ", s.name, ": ", outcome.status().message()));
    outcome.status().ForEachPayload([&named](absl::string_view url, const absl::Cord& payload) {
      named.SetPayload(url, payload);
    });
    return named;
  }
  (*record)["steps"] = outcome->steps;
  (*record)["final_metrics"] = MetricsJson(outcome->final_metrics);
  for (auto it = outcome->extra.begin(); it != outcome->extra.end(); ++it) {
    (*record)[it.key()] = *it;
  }
  if (has_eval && s.kind == "generate") {
    (*record)["eval_after"] = (*record)["eval_before"];  // the model did not change
  } else if (has_eval) {
    ASSIGN_OR_RETURN(EvalResult after,
                     HeldOutEval(p, model_out, "after", base_step + outcome->steps));
    (*record)["eval_after"] = after.ToJson();
  }
  (*record)["duration_s"] = Now() - t0;
  if (tb.ok()) {
    double before =
        (*record).contains("eval_before") ? (*record)["eval_before"]["accuracy"].get<double>() : 0;
    (void)(*tb)->AddScalars(base_step + outcome->steps,
                            {{"eval/accuracy_gain_" + s.name,
                              (*record).contains("eval_after")
                                  ? (*record)["eval_after"]["accuracy"].get<double>() - before
                                  : 0}});
  }
  return absl::OkStatus();
}

absl::Status Pipeline::WriteFinalModel() {
  std::string from = ModelDir(plan_.final_model);
  RETURN_IF_ERROR(CopyDir(from, dir_ + "/model"));
  // Tokenizer, chat template and generation settings travel with the model.
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::string target = dir_ + "/model/" + f;
    if (PathExists(target)) continue;
    std::string src = config_.model.tokenizer.empty()
                          ? dir_ + "/data/" + f
                          : (fs::path(config_.model.tokenizer).parent_path() / f).string();
    if (PathExists(src)) {
      ASSIGN_OR_RETURN(std::string text, ReadFile(src));
      RETURN_IF_ERROR(WriteFileAtomically(target, text));
    }
  }
  Json tok = Json::object();
  if (PathExists(dir_ + "/model/tokenizer_config.json")) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(dir_ + "/model/tokenizer_config.json"));
    tok = Json::parse(text, nullptr, false);
    if (!tok.is_object()) tok = Json::object();
  }
  tok["cohort_chat_template"] = config_.model.chat_template;
  RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/model/tokenizer_config.json", tok.dump(1)));
  Json gen = Json::object();
  if (PathExists(dir_ + "/model/generation_config.json")) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(dir_ + "/model/generation_config.json"));
    gen = Json::parse(text, nullptr, false);
    if (!gen.is_object()) gen = Json::object();
  }
  gen["max_new_tokens"] = config_.sampling.max_new_tokens;
  gen["temperature"] = config_.sampling.temperature;
  gen["top_p"] = config_.sampling.top_p;
  gen["top_k"] = config_.sampling.top_k;
  gen["do_sample"] = true;
  return WriteFileAtomically(dir_ + "/model/generation_config.json", gen.dump(1));
}

absl::Status Pipeline::WriteSummary(const RunFailure* failure) {
  Json summary = {{"name", config_.run.name},
                  {"stages", stages_done_},
                  {"final_model", plan_.final_model},
                  {"config", config_yaml_},
                  {"git_revision", options_.git_revision}};
  // Executors report figures (ledger, actors, throughput) per stage: the
  // run's ledger is the sum over its lease-driven stages, the other figures
  // are the last stage's that has them.
  Json ledger = Json::object();
  for (const Json& s : stages_done_) {
    for (const char* k : {"actors", "tokens_per_s_generated", "tokens_per_s_trained",
                          "learner_idle_fraction", "actor_idle_fraction"}) {
      if (s.contains(k)) summary[k] = s[k];
    }
    if (s.contains("ledger") && s["ledger"].is_object()) {
      for (auto it = s["ledger"].begin(); it != s["ledger"].end(); ++it) {
        if (!it->is_number_integer()) continue;
        ledger[it.key()] = ledger.value(it.key(), int64_t{0}) + it->get<int64_t>();
      }
    }
  }
  if (!ledger.empty()) summary["ledger"] = ledger;
  if (failure != nullptr) {
    summary["failure"] = {
        {"stage", failure->stage}, {"reason", failure->reason}, {"attempts", failure->attempts}};
  }
  RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/summary.json", summary.dump(1)));
  return WriteReport(dir_);
}

absl::Status Pipeline::Run() {
  state_yaml_ = PipelineStateConfig(config_);
  if (std::optional<RunFailure> f = FinalRunFailure(dir_, state_yaml_)) {
    COHORT_LOG(ERROR) << dir_ << ": this run failed: " << f->reason
                      << " (run_failure.json; a new run directory or --new runs it again)";
    absl::Status error = absl::FailedPreconditionError(f->reason);
    error.SetPayload(kFinalPayload, absl::Cord("1"));  // the record stays as it is
    return error;
  }
  absl::Status run = RunStages();
  if (run.ok() || absl::IsCancelled(run)) return run;
  absl::Status marked;
  absl::StatusOr<RunFailure> f = RecordRunFailure(dir_, state_yaml_, current_stage_, run, &marked);
  if (!f.ok()) {
    COHORT_LOG(WARNING) << "cannot record the failure: " << f.status();
    return run;
  }
  if (!f->final) {
    COHORT_LOG(WARNING) << "stage " << (current_stage_.empty() ? "(setup)" : current_stage_)
                        << " failed (attempt " << f->attempts << " of at most "
                        << kRunFailureRepeats << " with this error): " << run.message();
    return run;
  }
  COHORT_LOG(ERROR) << "the run failed: " << run.message()
                    << " (a restart would fail the same way; recorded in " << dir_
                    << "/run_failure.json)";
  absl::Status summary = WriteSummary(&*f);
  if (!summary.ok()) COHORT_LOG(WARNING) << "summary.json: " << summary;
  return marked;
}

absl::Status Pipeline::RunStages() {
  run_start_ = Now();
  current_stage_.clear();
  RETURN_IF_ERROR(Prepare());
  if (finished_) {
    COHORT_LOG(INFO) << dir_ << ": this run is finished (summary.json, report.html)";
    return absl::OkStatus();
  }
  if (!stages_done_.empty()) {
    COHORT_LOG(INFO) << dir_ << ": resuming after " << stages_done_.size() << " finished stage(s)";
  }
  for (size_t i = stages_done_.size(); i < plan_.stages.size(); ++i) {
    Json record;
    current_stage_ = plan_.stages[i].stage.name;
    RETURN_IF_ERROR(RunStage(plan_.stages[i], &record));
    stages_done_.push_back(record);
    RETURN_IF_ERROR(SaveState(false));
    ClearRunFailure(dir_);
  }
  current_stage_.clear();
  RETURN_IF_ERROR(WriteFinalModel());
  RETURN_IF_ERROR(WriteSummary());
  RETURN_IF_ERROR(SaveState(true));
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace cohort::learner
