// A short quickstart pipeline through the real local cluster: `cohort run
// CONFIG --out DIR` starts a learner, a reward server and two actors as
// processes; the learner runs the SFT stage and the held-out evals itself
// and the GRPO stage through leases to the actors, writes summary.json,
// report.html, trained.jsonl and DIR/model, drains the actors, and
// everything exits 0 by itself. Then the run directory's rules: the same
// config again says the run is finished, another config is refused unless
// --new. A learner SIGKILLed in the middle of the GRPO stage is restarted
// by `cohort run` and resumes it from its checkpoint, and a run stopped
// with Ctrl-C resumes when the same command runs again: every prompt still
// ends trained, filtered or failed exactly once.
#include <signal.h>

#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/supervisor.h"
#include "nlohmann/json.hpp"
#include "tests/cluster_util.h"

namespace cohort {
namespace {

using ::cohort::cli::ChildProcess;
using ::cohort::cli::DescribeWaitStatus;
using ::cohort::testing::Binary;
using ::cohort::testing::ReadFile;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitUntil;
using ::cohort::testing::WriteFile;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr int kSftSteps = 20;
constexpr int kGrpoSteps = 8;
constexpr int kPromptsPerStep = 8;

// The quickstart's recipe, shortened: 20 SFT steps, 8 GRPO batches of 8
// prompts x G 4 (sampled at temperature 0.5, so that such a short cold start
// already earns some format reward), 50 held-out problems.
std::string ShortQuickstart(int grpo_steps) {
  return absl::StrCat(R"(
run: {name: pipeline-run-test, seed: 1}
model: {preset: tiny-quickstart, chat_template: plain}
task: {name: addition, digits: 2, train_size: 200, eval_size: 50, fresh_size: 50, sft_size: 100}
reward:
  tasks:
    addition: {verifier: math, format: r1-zero, weights: {accuracy: 1.0, format: 0.2}}
sampling: {group_size: 4, temperature: 1.0, max_new_tokens: 32}
grpo: {prompts_per_step: )",
                      kPromptsPerStep, R"(, beta: 0.02, epsilon: 0.2}
optim: {lr: 1.0e-4, max_grad_norm: 1.0}
eval: {dataset: eval, eval_every: 4, problems: 50}
checkpoint: {every_steps: 2}
pipeline:
  - name: cold_start
    kind: sft
    model: base
    dataset: sft
    steps: )",
                      kSftSteps, R"(
    set: {grpo.prompts_per_step: 32, optim.lr: 2.0e-3, optim.warmup_steps: 5}
  - {name: rl, kind: grpo, dataset: train, steps: )",
                      grpo_steps, R"(, set: {sampling.temperature: 0.5}}
actor: {count: 2, slots: 32, drain_grace_seconds: 1}
supervisor:
  max_restarts: 3
  restart_window_seconds: 120
  backoff_initial_ms: 100
  backoff_max_ms: 1000
  stop_timeout_seconds: 5
  ready_timeout_seconds: 60
)");
}

std::vector<Json> ReadJsonLines(const std::string& path) {
  std::vector<Json> out;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(Json::parse(line));
  }
  return out;
}

class PipelineRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = dir_ / "quickstart.yaml";
    WriteFile(config_, ShortQuickstart(kGrpoSteps));
    out_ = dir_ / "run";
  }
  void TearDown() override {
    if (run_ != nullptr) run_->Stop(absl::Seconds(10));
  }

  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run", config_, "--out", out_};
    args.insert(args.end(), extra.begin(), extra.end());
    auto run = ChildProcess::Spawn(Binary("cli", "cohort"), args, log());
    ASSERT_TRUE(run.ok()) << run.status();
    run_ = *std::move(run);
  }

  // Runs `cohort run` to its end; returns how it ended.
  std::string RunToEnd(std::vector<std::string> extra, absl::Duration timeout) {
    Start(std::move(extra));
    if (run_ == nullptr) return "not started";
    if (!run_->WaitFor(timeout)) return "still running";
    return DescribeWaitStatus(run_->wait_status());
  }

  std::string Logs() const {
    std::string all = "--- cohort run:\n" + ReadFile(log());
    for (const char* role : {"learner", "actor-0", "actor-1", "reward"}) {
      std::string text = ReadFile(out_ + "/" + role + ".log");
      if (text.size() > 6000) text = text.substr(text.size() - 6000);
      absl::StrAppend(&all, "--- ", role, ".log (tail):\n", text);
    }
    return all;
  }

  // Every ledger item 0 .. total-1 of stage `stage` is in exactly one of
  // trained.jsonl, filtered.jsonl, failed.jsonl, exactly once.
  void AuditLedger(const std::string& stage, int64_t total) {
    std::map<int64_t, int> seen;
    int64_t lines = 0;
    for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
      for (const Json& j : ReadJsonLines(out_ + "/" + f)) {
        if (j["stage"] != stage) continue;
        ++seen[j["prompt_id"].get<int64_t>()];
        ++lines;
      }
    }
    EXPECT_EQ(lines, total) << "journal lines of stage " << stage;
    EXPECT_EQ(static_cast<int64_t>(seen.size()), total);
    for (const auto& [id, n] : seen) {
      EXPECT_EQ(n, 1) << "prompt " << id << " settled " << n << " times";
      EXPECT_GE(id, 0);
      EXPECT_LT(id, total);
    }
  }

  // summary.json's account of the run.
  void CheckSummary(const Json& s) {
    ASSERT_EQ(s["stages"].size(), 2u) << s.dump(1);
    EXPECT_EQ(s["stages"][0]["name"], "cold_start");
    EXPECT_EQ(s["stages"][0]["kind"], "sft");
    EXPECT_EQ(s["stages"][0]["steps"], kSftSteps);
    EXPECT_EQ(s["stages"][1]["name"], "rl");
    EXPECT_EQ(s["stages"][1]["kind"], "grpo");
    for (const Json& st : s["stages"]) {
      for (const char* when : {"eval_before", "eval_after"}) {
        ASSERT_TRUE(st.contains(when)) << st["name"] << " " << when;
        double acc = st[when]["accuracy"].get<double>();
        EXPECT_GE(acc, 0.0);
        EXPECT_LE(acc, 1.0);
        EXPECT_TRUE(st[when].contains("format_rate"));
        EXPECT_TRUE(st[when].contains("sampled_accuracy"));
        EXPECT_EQ(st[when]["problems"], 50);
      }
    }
    const int64_t total = kGrpoSteps * kPromptsPerStep;
    const Json& l = s["ledger"];
    EXPECT_EQ(l["prompts_total"], total);
    EXPECT_EQ(l["prompts_total"].get<int64_t>(), l["prompts_trained"].get<int64_t>() +
                                                     l["prompts_filtered"].get<int64_t>() +
                                                     l["prompts_failed"].get<int64_t>());
    EXPECT_EQ(l["duplicates"], 0);
    EXPECT_EQ(l["lost"], 0);
    EXPECT_GT(l["prompts_trained"].get<int64_t>(), 0);
    // Both actors joined and did work.
    ASSERT_EQ(s["actors"].size(), 2u) << s["actors"].dump();
    std::set<std::string> names;
    for (const Json& a : s["actors"]) {
      names.insert(a["actor_name"].get<std::string>());
      EXPECT_GT(a["pid"].get<int64_t>(), 0);
      EXPECT_GE(a["joins"].get<int64_t>(), 1);
      EXPECT_TRUE(a.contains("groups_submitted"));
      EXPECT_TRUE(a.contains("tokens_generated"));
      EXPECT_TRUE(a.contains("policy_versions_seen"));
      // cohort run adds the supervised role and its restarts.
      EXPECT_THAT(a.value("role", std::string()), ::testing::StartsWith("actor-"));
      EXPECT_EQ(a.value("restarts", -1), 0);
    }
    EXPECT_EQ(names.size(), 2u);
    // Engine idle fractions over the GRPO stage, from the actors' heartbeats
    // and groups: every actor that submitted a group reported its engine
    // time.
    for (const Json& a : s["actors"]) {
      if (a.value("groups_submitted", 0) == 0) continue;
      ASSERT_TRUE(a.contains("idle_fraction")) << a.dump();
      const double idle = a["idle_fraction"].get<double>();
      EXPECT_GE(idle, 0.0) << a.dump();
      EXPECT_LE(idle, 1.0) << a.dump();
      double reasons = 0;
      for (const char* why : {"prompts", "weights", "rewards"}) {
        const double f = a["idle_fraction_by_reason"].value(why, -1.0);
        EXPECT_GE(f, 0.0) << why << " " << a.dump();
        EXPECT_LE(f, 1.0) << why << " " << a.dump();
        reasons += f;
      }
      EXPECT_NEAR(reasons, idle, 1e-6) << a.dump();
      EXPECT_GT(a.value("engine_seconds", 0.0), 0.0) << a.dump();
    }
    ASSERT_TRUE(s.contains("actor_idle_fraction")) << s.dump(1);
    EXPECT_GE(s["actor_idle_fraction"].get<double>(), 0.0);
    EXPECT_LE(s["actor_idle_fraction"].get<double>(), 1.0);
    EXPECT_TRUE(s.contains("tokens_per_s_trained"));
    EXPECT_TRUE(s.contains("learner_idle_fraction"));
    EXPECT_TRUE(s["config"].is_string());
  }

  TempDir dir_;
  std::string config_;
  std::string out_;
  std::unique_ptr<ChildProcess> run_;
  std::string log() const { return dir_ / "cohort-run.log"; }
};

TEST_F(PipelineRunTest, QuickstartRunsThroughTheClusterAndExitsByItself) {
  std::string end = RunToEnd({}, absl::Seconds(150));
  ASSERT_EQ(end, "exited with code 0") << Logs();
  Json s = Json::parse(ReadFile(out_ + "/summary.json"));
  CheckSummary(s);
  AuditLedger("rl", kGrpoSteps * kPromptsPerStep);
  // Versions: one per GRPO batch, after the stage's initial weights.
  const Json& rl = s["stages"][1];
  EXPECT_EQ(rl["last_version"].get<int64_t>() - rl["first_version"].get<int64_t>(),
            rl["steps"].get<int64_t>());
  // The final model: a Hugging Face directory with its tokenizer that
  // `cohort eval` loads and evaluates.
  EXPECT_TRUE(std::filesystem::exists(out_ + "/model/config.json"));
  EXPECT_TRUE(std::filesystem::exists(out_ + "/model/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(out_ + "/report.html"));
  EXPECT_TRUE(std::filesystem::exists(out_ + "/metrics.jsonl"));
  auto eval =
      ChildProcess::Spawn(Binary("cli", "cohort"),
                          {"eval", "--model", out_ + "/model", "--dataset",
                           out_ + "/data/fresh.jsonl", "--task", "addition", "--greedy", "--json"},
                          dir_ / "eval.log");
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_TRUE((*eval)->WaitFor(absl::Seconds(60)));
  EXPECT_EQ(DescribeWaitStatus((*eval)->wait_status()), "exited with code 0")
      << ReadFile(dir_ / "eval.log");
  EXPECT_THAT(ReadFile(dir_ / "eval.log"), HasSubstr("pass_at_1"));
  // The actors were told about the model (tokenizer included): the reward
  // server scored completion text, so some samples were correct.
  double reward_max = 0;
  for (const Json& m : ReadJsonLines(out_ + "/metrics.jsonl")) {
    if (m["stage"] == "rl" && m.contains("reward_mean")) {
      reward_max = std::max(reward_max, m["reward_mean"].get<double>());
    }
  }
  EXPECT_GT(reward_max, 0.0) << "every GRPO reward was 0: completions reached the reward server "
                                "without text?";
  EXPECT_THAT(ReadFile(out_ + "/actor-0.log"), ::testing::Not(HasSubstr("without text")));

  // The same config again: the run is finished; nothing starts.
  run_.reset();
  EXPECT_EQ(RunToEnd({}, absl::Seconds(30)), "exited with code 0") << Logs();
  EXPECT_THAT(ReadFile(log()), HasSubstr("holds a finished run of this config"));
  // Another config: refused unless --new.
  run_.reset();
  EXPECT_EQ(RunToEnd({"--set", "run.seed=2"}, absl::Seconds(30)), "exited with code 2") << Logs();
  EXPECT_THAT(ReadFile(log()), HasSubstr("holds a run of another config"));
  // --new replaces it: the run starts over with the other config.
  run_.reset();
  ASSERT_EQ(RunToEnd({"--set", "run.seed=2", "--new"}, absl::Seconds(150)), "exited with code 0")
      << Logs();
  Json again = Json::parse(ReadFile(out_ + "/summary.json"));
  EXPECT_THAT(again["config"].get<std::string>(), HasSubstr("seed: 2"));
  AuditLedger("rl", kGrpoSteps * kPromptsPerStep);
}

TEST_F(PipelineRunTest, KilledLearnerResumesTheGrpoStage) {
  // A longer GRPO stage, so the learner is killed in the middle of it.
  WriteFile(config_, ShortQuickstart(16));
  Start();
  ASSERT_NE(run_, nullptr);
  // Wait for the GRPO stage to pass a checkpoint (every 2 steps), then
  // SIGKILL the learner.
  const std::string learner_log = out_ + "/learner.log";
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string text = ReadFile(learner_log);
        return text.find("(step 4, version") != std::string::npos;
      },
      absl::Seconds(120)))
      << Logs();
  absl::StatusOr<PortFile> ports = ReadPortFile(out_ + "/learner.port");
  ASSERT_TRUE(ports.ok()) << ports.status();
  ASSERT_EQ(::kill(ports->pid, SIGKILL), 0);
  ASSERT_TRUE(run_->WaitFor(absl::Seconds(150))) << Logs();
  ASSERT_EQ(DescribeWaitStatus(run_->wait_status()), "exited with code 0") << Logs();
  EXPECT_THAT(ReadFile(learner_log), HasSubstr("stage rl resumed"));
  Json s = Json::parse(ReadFile(out_ + "/summary.json"));
  ASSERT_EQ(s["stages"].size(), 2u);
  const Json& l = s["ledger"];
  EXPECT_EQ(l["prompts_total"], 16 * kPromptsPerStep);
  EXPECT_EQ(l["duplicates"], 0);
  EXPECT_EQ(l["lost"], 0);
  AuditLedger("rl", 16 * kPromptsPerStep);
  // The actors' totals survive the learner's restart (saved with its
  // checkpoints): together they submitted at least every group trained or
  // filtered in the whole stage, not only those after the restart.
  int64_t groups = 0;
  for (const Json& a : s["actors"]) groups += a["groups_submitted"].get<int64_t>();
  EXPECT_GE(groups, l["prompts_trained"].get<int64_t>() + l["prompts_filtered"].get<int64_t>())
      << s["actors"].dump();
}

// A generate stage whose threshold no completion can reach (rewards are at
// most 1.2) fails the same way on every attempt: the learner ends the run
// with the reason (exit 3), `cohort run` does not restart it and prints the
// reason, and running the same command again refuses at once.
TEST_F(PipelineRunTest, GenerateStageThatKeepsNothingEndsTheRunWithItsReason) {
  WriteFile(config_, R"(
run: {name: pipeline-run-failure, seed: 1}
model: {preset: tiny-quickstart, chat_template: plain}
task: {name: addition, digits: 2, train_size: 16, eval_size: 8, fresh_size: 8, sft_size: 8}
reward:
  tasks:
    addition: {verifier: math, format: r1-zero, weights: {accuracy: 1.0, format: 0.2}}
sampling: {group_size: 2, temperature: 1.0, max_new_tokens: 8}
grpo: {prompts_per_step: 8}
eval: {dataset: ""}
pipeline:
  - {name: sample, kind: generate, model: base, dataset: train, samples: 2, threshold: 5.0}
actor: {count: 1, slots: 16, drain_grace_seconds: 1}
supervisor:
  max_restarts: 3
  restart_window_seconds: 120
  backoff_initial_ms: 100
  backoff_max_ms: 1000
  stop_timeout_seconds: 5
  ready_timeout_seconds: 60
)");
  EXPECT_EQ(RunToEnd({}, absl::Seconds(150)), "exited with code 1") << Logs();
  const std::string learner_log = ReadFile(out_ + "/learner.log");
  // Started once, never restarted.
  EXPECT_THAT(learner_log, HasSubstr("starting learner (start 1)"));
  EXPECT_EQ(learner_log.find("starting learner (start 2)"), std::string::npos) << Logs();
  // The generate stage held its input weights only.
  EXPECT_THAT(learner_log, HasSubstr("stage sample: serving its input weights only"));
  EXPECT_THAT(learner_log, HasSubstr("no optimizer state"));
  const std::string run_log = ReadFile(log());
  // The learner's exit: usually "learner (pid N) exited with code 3: the run
  // failed; not restarting it"; when the run fails before the supervisor has
  // seen the actor SERVING, the start-up error or the stop log names it.
  EXPECT_THAT(run_log, HasSubstr("exited with code 3"));
  EXPECT_THAT(run_log,
              HasSubstr("cohort run: the run failed: stage sample: no completion reached the "
                        "threshold 5"))
      << run_log;
  Json record = Json::parse(ReadFile(out_ + "/run_failure.json"));
  EXPECT_EQ(record["final"], true);
  EXPECT_EQ(record["stage"], "sample");
  Json summary = Json::parse(ReadFile(out_ + "/summary.json"));
  EXPECT_EQ(summary["failure"]["stage"], "sample");
  EXPECT_THAT(summary["failure"]["reason"].get<std::string>(),
              HasSubstr("no completion reached the threshold 5 ("));

  // The same command again: the reason, nothing started.
  run_.reset();
  EXPECT_EQ(RunToEnd({}, absl::Seconds(30)), "exited with code 1") << Logs();
  EXPECT_THAT(ReadFile(log()), HasSubstr("holds a run of this config that failed"));
  EXPECT_EQ(ReadFile(out_ + "/learner.log").find("starting learner (start 2)"), std::string::npos);
}

TEST_F(PipelineRunTest, StoppedRunResumesWhenStartedAgain) {
  WriteFile(config_, ShortQuickstart(16));
  Start();
  ASSERT_NE(run_, nullptr);
  // Ctrl-C (SIGTERM to cohort run) in the middle of the GRPO stage.
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(out_ + "/learner.log").find("(step 4, version") != std::string::npos; },
      absl::Seconds(120)))
      << Logs();
  run_->Signal(SIGTERM);
  ASSERT_TRUE(run_->WaitFor(absl::Seconds(60))) << Logs();
  EXPECT_EQ(DescribeWaitStatus(run_->wait_status()), "exited with code 0") << Logs();
  EXPECT_FALSE(std::filesystem::exists(out_ + "/summary.json"));
  // The same command again resumes the run and finishes it.
  run_.reset();
  EXPECT_EQ(RunToEnd({}, absl::Seconds(150)), "exited with code 0") << Logs();
  EXPECT_THAT(ReadFile(log()), HasSubstr("resuming the unfinished run"));
  EXPECT_THAT(ReadFile(out_ + "/learner.log"), HasSubstr("stage rl resumed"));
  Json s = Json::parse(ReadFile(out_ + "/summary.json"));
  ASSERT_EQ(s["stages"].size(), 2u);
  EXPECT_EQ(s["ledger"]["duplicates"], 0);
  EXPECT_EQ(s["ledger"]["lost"], 0);
  AuditLedger("rl", 16 * kPromptsPerStep);
}

}  // namespace
}  // namespace cohort
