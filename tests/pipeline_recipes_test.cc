// The shipped multi-stage recipes end to end through the local cluster
// (`cohort run`: a learner, a reward server and one actor as processes; the
// learner runs SFT and evals itself, GRPO and rejection sampling through
// leases to the actor), with tiny random models: configs/r1-gsm8k.yaml
// (cold-start SFT -> GRPO -> rejection sampling -> SFT -> GRPO -> eval) and
// configs/distill.yaml (a teacher generates, the learner switches the served
// model back to the student, which is fine-tuned) on GSM8K from
// ../shared/data. The configs are used as shipped except for the stage
// lengths (2 steps / 1 epoch), the rejection threshold (a random model is
// never right) and the data, model, size and cluster overrides below: this
// proves the plumbing, not the recipe.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "core/testing/require.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const std::string kData = COHORT_SOURCE_DIR "/../shared/data";

std::string Slurp(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

int RunCommand(const std::string& cmd, const std::string& log) {
  int status = std::system((cmd + " > '" + log + "' 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class PipelineRecipesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData + "/gsm8k/train.jsonl") ||
        !fs::exists(kData + "/tokenizers/qwen3/tokenizer.json")) {
      COHORT_SKIP_OR_FAIL("GSM8K or the Qwen3 tokenizer not found under " << kData);
    }
    dir_ = fs::path(::testing::TempDir()) / ("recipes_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* split : {"train", "test"}) {
      std::ifstream in(kData + "/gsm8k/" + split + ".jsonl");
      std::ofstream out(dir_ / (std::string(split) + ".jsonl"));
      std::string line;
      for (int i = 0; i < 6 && std::getline(in, line); ++i) out << line << "\n";
    }
    for (const char* name : {"student", "teacher"}) {
      std::string cmd = std::string(COHORT_BINARY_DIR) +
                        "/cli/cohort-init-model --preset tiny --tokenizer " + kData +
                        "/tokenizers/qwen3 --out " + (dir_ / name).string() +
                        (std::string(name) == "teacher" ? " --seed 1" : "");
      ASSERT_EQ(RunCommand(cmd, (dir_ / "init.log").string()), 0) << Slurp(dir_ / "init.log");
    }
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  // The shipped config with short stages and a threshold every sample passes.
  std::string Shorten(const std::string& name) {
    std::string yaml = Slurp(COHORT_SOURCE_DIR "/configs/" + name);
    yaml = std::regex_replace(yaml, std::regex("steps: [0-9]+"), "steps: 2");
    yaml = std::regex_replace(yaml, std::regex("epochs: [0-9.]+"), "epochs: 1");
    yaml = std::regex_replace(yaml, std::regex("threshold: [0-9.]+"), "threshold: -100");
    std::string path = (dir_ / name).string();
    std::ofstream(path) << yaml;
    return path;
  }

  Json RunPipeline(const std::string& config, const std::string& extra) {
    std::string out = (dir_ / "run").string();
    fs::remove_all(out);
    std::string d = dir_.string();
    std::string cmd =
        std::string(COHORT_BINARY_DIR) + "/cli/cohort run " + config + " --out " + out +
        " --set model.path=" + d + "/student" + " --set actor.count=1 --set actor.slots=8" +
        " --set actor.drain_grace_seconds=1 --set supervisor.stop_timeout_seconds=5" +
        " --set supervisor.max_restarts=0" +
        " --set model.dtype=float32 --set sampling.max_new_tokens=8" +
        " --set sampling.group_size=2 --set grpo.prompts_per_step=2" +
        " --set eval.problems=3 --set eval.eval_every=0" + " --set datasets.gsm8k_train.path=" + d +
        "/train.jsonl" + " --set datasets.gsm8k_test.path=" + d + "/test.jsonl " + extra;
    int rc = RunCommand("timeout 150 " + cmd, d + "/pipeline.log");
    EXPECT_EQ(rc, 0) << Slurp(d + "/pipeline.log") << "\n--- learner.log:\n"
                     << Slurp(out + "/learner.log") << "\n--- actor-0.log:\n"
                     << Slurp(out + "/actor-0.log");
    if (rc != 0) return Json();
    return Json::parse(Slurp(out + "/summary.json"));
  }

  fs::path dir_;
};

TEST_F(PipelineRecipesTest, R1Gsm8kRunsEveryStage) {
  Json s = RunPipeline(Shorten("r1-gsm8k.yaml"),
                       "--set datasets.gsm8k_demos.path=" + (dir_ / "train.jsonl").string() +
                           " --set grpo.dynamic_sampling=false");
  ASSERT_TRUE(s.is_object());
  ASSERT_EQ(s["stages"].size(), 6u);
  const char* kinds[] = {"sft", "grpo", "generate", "sft", "grpo", "eval"};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(s["stages"][i]["kind"], kinds[i]) << i;
    EXPECT_TRUE(s["stages"][i].contains("eval_after")) << i;
  }
  EXPECT_EQ(s["final_model"], "final_rl");
  fs::path run = dir_ / "run";
  EXPECT_TRUE(fs::exists(run / "data/rejection_sampling.jsonl"));
  EXPECT_TRUE(fs::exists(run / "model/config.json"));
  EXPECT_TRUE(fs::exists(run / "model/tokenizer.json"));
  EXPECT_TRUE(fs::exists(run / "report.html"));
  auto kept = Json::parse(Slurp(run / "data/rejection_sampling.jsonl")
                              .substr(0, Slurp(run / "data/rejection_sampling.jsonl").find('\n')));
  EXPECT_TRUE(kept.contains("prompt") && kept.contains("completion") && kept.contains("answer"));
  // Both GRPO stages and the rejection sampling went through the ledger.
  for (size_t i : {1u, 2u, 4u}) {
    const Json& l = s["stages"][i]["ledger"];
    EXPECT_EQ(l["prompts_total"].get<int64_t>(), l["prompts_trained"].get<int64_t>() +
                                                     l["prompts_filtered"].get<int64_t>() +
                                                     l["prompts_failed"].get<int64_t>())
        << i;
    EXPECT_EQ(l["duplicates"], 0) << i;
    EXPECT_EQ(l["lost"], 0) << i;
  }
  EXPECT_EQ(s["actors"].size(), 1u);
}

TEST_F(PipelineRecipesTest, DistillTeacherGeneratesStudentLearns) {
  Json s = RunPipeline(Shorten("distill.yaml"),
                       "--set models.teacher.path=" + (dir_ / "teacher").string());
  ASSERT_TRUE(s.is_object());
  ASSERT_EQ(s["stages"].size(), 3u);
  EXPECT_EQ(s["stages"][0]["model"], "teacher");
  EXPECT_EQ(s["stages"][1]["dataset"], "teacher_samples");
  EXPECT_EQ(s["stages"][2]["model"], "student");
  EXPECT_EQ(s["final_model"], "student");
  // The teacher's samples went through the actor and the reward server.
  EXPECT_GT(s["stages"][0]["ledger"]["prompts_trained"].get<int64_t>(), 0);
  EXPECT_EQ(s["stages"][0]["ledger"]["duplicates"], 0);
  EXPECT_EQ(s["stages"][0]["ledger"]["lost"], 0);
}

}  // namespace
}  // namespace cohort
