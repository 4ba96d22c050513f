#include "learner/pipeline.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/file.h"
#include "core/status.h"
#include "core/tensorboard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::learner {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// Records calls; a model's "accuracy" is 0.1 per training stage behind it,
// read from the marker file Train writes.
class FakeExecutor : public StageExecutor {
 public:
  std::vector<std::string> calls;
  std::string fail_stage;       // Train of this stage fails once
  absl::Status generate_error;  // every Generate returns it when not OK

  absl::Status InitModel(const RunConfig&, const std::string& tokenizer_dir,
                         const std::string& out_dir) override {
    calls.push_back("init");
    EXPECT_TRUE(PathExists(tokenizer_dir + "/tokenizer.json"));
    RETURN_IF_ERROR(MakeDirs(out_dir));
    return WriteFileAtomically(out_dir + "/config.json", "0");
  }
  absl::StatusOr<StageOutcome> Train(const PlannedStage& stage, const std::string& model_dir,
                                     const PipelineDataset& dataset, const std::string& out_dir,
                                     const StageCallbacks& cb) override {
    calls.push_back("train:" + stage.stage.name);
    if (stage.stage.name == fail_stage) {
      fail_stage.clear();
      return absl::InternalError("killed");
    }
    EXPECT_TRUE(PathExists(dataset.spec.path)) << dataset.spec.path;
    ASSIGN_OR_RETURN(std::string level, ReadFile(model_dir + "/config.json"));
    for (int64_t i = 1; i <= stage.stage.steps; ++i) {
      cb.on_step(i, stage.stage.steps, {{"reward_mean", 0.1 * i}, {"accuracy", 0.05 * i}});
      if (i == 2) cb.on_eval(i, EvalResult{0.5, 0.4, 1.0, 20, 10, {}});
    }
    RETURN_IF_ERROR(MakeDirs(out_dir));
    RETURN_IF_ERROR(
        WriteFileAtomically(out_dir + "/config.json", std::to_string(std::stoi(level) + 1)));
    StageOutcome o;
    o.steps = stage.stage.steps;
    o.final_metrics = {{"loss", 0.5}};
    if (stage.stage.kind == "grpo") {
      o.extra["ledger"] = {{"prompts_total", 8}, {"duplicates", 0}, {"lost", 0}};
    }
    return o;
  }
  absl::StatusOr<StageOutcome> Generate(const PlannedStage& stage, const std::string&,
                                        const PipelineDataset&, const std::string& out_jsonl,
                                        const StageCallbacks& cb) override {
    calls.push_back("generate:" + stage.stage.name);
    if (!generate_error.ok()) return generate_error;
    cb.on_step(1, 1, {{"kept_fraction", 0.5}});
    RETURN_IF_ERROR(WriteFileAtomically(
        out_jsonl, "{\"id\":\"a\",\"prompt\":\"1+1=\",\"completion\":\"2\",\"answer\":\"2\"}\n"));
    StageOutcome o;
    o.steps = 1;
    return o;
  }
  absl::StatusOr<EvalResult> Evaluate(const RunConfig&, const std::string& model_dir,
                                      const PipelineDataset& dataset) override {
    calls.push_back("eval:" + fs::path(model_dir).filename().string());
    EXPECT_TRUE(PathExists(dataset.spec.path));
    ASSIGN_OR_RETURN(std::string level, ReadFile(model_dir + "/config.json"));
    EvalResult r;
    r.accuracy = 0.1 * std::stoi(level);
    r.sampled_accuracy = r.accuracy / 2;
    r.format_rate = 1;
    r.mean_length = 20;
    r.problems = 10;
    r.completions = {{{"prompt", "1+1="}, {"completion", "<answer>2</answer>"}, {"correct", true}}};
    return r;
  }
};

constexpr char kConfig[] = R"(
run: {name: pipetest}
task: {name: addition, train_size: 100, eval_size: 50, fresh_size: 50, sft_size: 10}
reward: {tasks: {addition: {verifier: math, format: r1-zero, weights: {accuracy: 1.0, format: 0.2}}}}
eval: {dataset: eval, eval_every: 2}
pipeline:
  - {name: cold_start, kind: sft, dataset: sft, steps: 3}
  - {name: rl, kind: grpo, dataset: train, steps: 4}
  - {name: sample, kind: generate, dataset: train}
  - {name: sft2, kind: sft, dataset: sample, steps: 2}
)";

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name;
  fs::remove_all(dir);
  return dir;
}

TEST(PipelineTest, RunsStagesAndWritesOutputs) {
  auto config = ParseConfig(kConfig);
  ASSERT_TRUE(config.ok()) << config.status();
  std::string dir = FreshDir("pipeline_run");
  FakeExecutor ex;
  Pipeline p(*config, dir, &ex);
  ASSERT_TRUE(p.Run().ok());
  EXPECT_TRUE(p.finished());
  // Each model is evaluated once: a stage's "before" is the previous one's
  // "after"; generate does not change the model.
  EXPECT_THAT(ex.calls,
              ElementsAre("init", "eval:base", "train:cold_start", "eval:cold_start", "train:rl",
                          "eval:rl", "generate:sample", "train:sft2", "eval:sft2"));
  auto summary = Json::parse(*ReadFile(dir + "/summary.json"));
  ASSERT_EQ(summary["stages"].size(), 4u);
  EXPECT_EQ(summary["stages"][1]["name"], "rl");
  EXPECT_EQ(summary["stages"][1]["kind"], "grpo");
  EXPECT_EQ(summary["stages"][1]["steps"], 4);
  EXPECT_DOUBLE_EQ(summary["stages"][1]["eval_before"]["accuracy"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(summary["stages"][1]["eval_after"]["accuracy"].get<double>(), 0.2);
  EXPECT_TRUE(summary["stages"][1]["eval_after"].contains("sampled_accuracy"));
  EXPECT_TRUE(summary["stages"][0].contains("duration_s"));
  EXPECT_EQ(summary["ledger"]["duplicates"], 0);
  EXPECT_EQ(summary["final_model"], "sft2");
  for (const char* f : {"data/train.jsonl", "data/eval.jsonl", "data/fresh.jsonl", "data/sft.jsonl",
                        "data/sample.jsonl", "model/config.json", "model/tokenizer.json",
                        "report.html", "metrics.jsonl", "evals.jsonl"}) {
    EXPECT_TRUE(PathExists(dir + "/" + f)) << f;
  }
  auto tok = Json::parse(*ReadFile(dir + "/model/tokenizer_config.json"));
  EXPECT_EQ(tok["cohort_chat_template"], "chatml");
  auto gen = Json::parse(*ReadFile(dir + "/model/generation_config.json"));
  EXPECT_EQ(gen["max_new_tokens"], 256);
  // metrics.jsonl: one line per step with a run-wide step index.
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line, last;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines, last = line;
  EXPECT_EQ(lines, 3 + 4 + 1 + 2);
  EXPECT_EQ(Json::parse(last)["step"], 10);
  EXPECT_THAT(*ReadFile(dir + "/report.html"), HasSubstr("cold_start"));
  // TensorBoard files read back.
  int events = 0;
  for (const auto& e : fs::directory_iterator(dir + "/tensorboard")) {
    auto records = ReadRecords(e.path().string());
    ASSERT_TRUE(records.ok());
    events += static_cast<int>(records->size());
  }
  EXPECT_GT(events, 10);

  // Finished: a second Run does nothing.
  FakeExecutor again;
  Pipeline p2(*config, dir, &again);
  ASSERT_TRUE(p2.Run().ok());
  EXPECT_TRUE(again.calls.empty());
  fs::remove_all(dir);
}

TEST(PipelineTest, ResumesAfterTheLastFinishedStage) {
  auto config = ParseConfig(kConfig);
  ASSERT_TRUE(config.ok());
  std::string dir = FreshDir("pipeline_resume");
  FakeExecutor ex;
  ex.fail_stage = "rl";
  Pipeline p(*config, dir, &ex);
  absl::Status st = p.Run();
  EXPECT_THAT(std::string(st.message()), HasSubstr("stage rl: killed"));
  FakeExecutor ex2;
  Pipeline p2(*config, dir, &ex2);
  ASSERT_TRUE(p2.Run().ok());
  EXPECT_EQ(ex2.calls.front(), "eval:cold_start");  // cold_start is not run again
  EXPECT_EQ(ex2.calls[1], "train:rl");
  EXPECT_EQ(std::count(ex2.calls.begin(), ex2.calls.end(), "train:cold_start"), 0);
  EXPECT_EQ(std::count(ex2.calls.begin(), ex2.calls.end(), "init"), 0);
  auto summary = Json::parse(*ReadFile(dir + "/summary.json"));
  EXPECT_EQ(summary["stages"].size(), 4u);

  // Another config on the same directory is refused unless start_new.
  auto other = ParseConfig(std::string(kConfig) + "\nsampling: {temperature: 0.7}\n");
  ASSERT_TRUE(other.ok());
  FakeExecutor ex3;
  Pipeline p3(*other, dir, &ex3);
  st = p3.Run();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("different config"));
  fs::remove_all(dir);
}

TEST(PipelineTest, MissingKeysInAnInputFileAreRefusedBeforeAnyWork) {
  std::string dir = FreshDir("pipeline_badkeys");
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/q.jsonl", "{\"question\":\"1+1=\",\"answer\":\"2\"}\n").ok());
  auto config =
      ParseConfig(absl::StrCat("reward: {tasks: {math: {verifier: math}}}\neval: {dataset: \"\"}\n"
                               "datasets: {q: {path: ",
                               dir,
                               "/q.jsonl, task: math, completion_key: \"\"}}\n"
                               "pipeline:\n  - {name: rl, kind: grpo, dataset: q, steps: 2}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  FakeExecutor ex;
  Pipeline p(*config, dir + "/run", &ex);
  absl::Status st = p.Run();
  EXPECT_THAT(std::string(st.message()), HasSubstr("pipeline[0] (rl): dataset \"q\""));
  EXPECT_THAT(std::string(st.message()), HasSubstr("no key \"prompt\""));
  EXPECT_TRUE(ex.calls.empty());
  fs::remove_all(dir);
}

Json ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? Json::parse(*text, nullptr, false) : Json();
}

// A generate stage that keeps nothing fails the same way however often it
// runs: the run ends with the reason (run_failure.json final, summary.json
// `failure`), and a later Run with the same config returns it at once
// without running anything.
TEST(PipelineTest, AnErrorARestartWouldRepeatEndsTheRun) {
  auto config = ParseConfig(kConfig);
  ASSERT_TRUE(config.ok());
  std::string dir = FreshDir("pipeline_failed");
  FakeExecutor ex;
  ex.generate_error = PermanentRunError(
      absl::FailedPreconditionError("no completion reached the threshold 5 (40 sampled)"));
  Pipeline p(*config, dir, &ex);
  absl::Status st = p.Run();
  EXPECT_TRUE(IsFinalRunFailure(st)) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("stage sample: no completion reached"));
  Json record = ReadJson(dir + "/run_failure.json");
  EXPECT_EQ(record.value("final", false), true) << record;
  EXPECT_EQ(record.value("stage", std::string()), "sample");
  EXPECT_EQ(record.value("attempts", 0), 1);
  Json summary = ReadJson(dir + "/summary.json");
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["failure"]["stage"], "sample");
  EXPECT_THAT(summary["failure"]["reason"].get<std::string>(), HasSubstr("threshold 5"));
  EXPECT_EQ(summary["stages"].size(), 2u);  // cold_start and rl finished
  EXPECT_FALSE(p.finished());

  FakeExecutor again;
  Pipeline p2(*config, dir, &again);
  st = p2.Run();
  EXPECT_TRUE(IsFinalRunFailure(st));
  EXPECT_THAT(std::string(st.message()), HasSubstr("no completion reached"));
  EXPECT_TRUE(again.calls.empty());
  // Input that cannot be read or is malformed is final too; an I/O error
  // (core/file.h reports FAILED_PRECONDITION) is not.
  EXPECT_TRUE(IsPermanentRunError(absl::NotFoundError("cannot read x.jsonl")));
  EXPECT_TRUE(IsPermanentRunError(absl::InvalidArgumentError("x.jsonl:3: not JSON")));
  EXPECT_FALSE(IsPermanentRunError(absl::FailedPreconditionError("cannot write x: EIO")));
  EXPECT_FALSE(IsPermanentRunError(absl::UnavailableError("reward server down")));
  fs::remove_all(dir);
}

// A transient error is recorded and the run resumes when started again (a
// stage that then finishes clears the record); the same error of the same
// stage kRunFailureRepeats times in a row is final.
TEST(PipelineTest, TransientErrorsResumeUntilTheSameOneRepeats) {
  auto config = ParseConfig(kConfig);
  ASSERT_TRUE(config.ok());
  const absl::Status blip = absl::FailedPreconditionError("cannot write out.jsonl: EIO");
  std::string dir = FreshDir("pipeline_transient");
  {
    FakeExecutor ex;
    ex.generate_error = blip;
    Pipeline p(*config, dir, &ex);
    absl::Status st = p.Run();
    EXPECT_FALSE(st.ok());
    EXPECT_FALSE(IsFinalRunFailure(st)) << st;
    EXPECT_EQ(ReadJson(dir + "/run_failure.json").value("attempts", 0), 1);
    EXPECT_FALSE(ReadJson(dir + "/summary.json").is_object());
  }
  {
    FakeExecutor ex;
    Pipeline p(*config, dir, &ex);
    ASSERT_TRUE(p.Run().ok());
    EXPECT_TRUE(p.finished());
    EXPECT_FALSE(PathExists(dir + "/run_failure.json"));
    EXPECT_FALSE(ReadJson(dir + "/summary.json").contains("failure"));
  }
  fs::remove_all(dir);

  dir = FreshDir("pipeline_repeats");
  for (int attempt = 1; attempt <= kRunFailureRepeats; ++attempt) {
    FakeExecutor ex;
    ex.generate_error = blip;
    Pipeline p(*config, dir, &ex);
    absl::Status st = p.Run();
    EXPECT_EQ(IsFinalRunFailure(st), attempt == kRunFailureRepeats) << attempt << ": " << st;
    EXPECT_EQ(ReadJson(dir + "/run_failure.json").value("attempts", 0), attempt);
  }
  EXPECT_EQ(ReadJson(dir + "/summary.json")["failure"]["attempts"], kRunFailureRepeats);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort::learner
