// The quickstart recipe learns: configs/quickstart.yaml as shipped (the
// addition task, the tiny model from scratch, the cold-start SFT stage and
// the 250 GRPO steps), run with seed kSeed and the held-out evals limited to
// before and after each stage (greedy only). The cold start must land in
// the 25-60% band, GRPO must lift held-out greedy accuracy on the 500
// held-out problems by at least 20 points (the issue's figure) and the final
// model must stay well formatted. The run goes through `cohort run` (a
// learner, a reward server and two actors as processes on 127.0.0.1) when
// kThroughCluster, else through cohort-pipeline (one process).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Seed 1 is the shipped config's run.seed, so this is the quickstart as
// `./scripts/quickstart.sh` runs it. Every seed starts from the same initial
// model (model.init_seed); through the cluster seeds 1-3 ended the cold start
// at 42.6 / 40.0 / 41.0% held-out greedy and gained +49.4 / +45.2 / +41.6
// points in the 250 GRPO steps three at once, +48.6 / +39.6 / +38.4 one at a
// time: seed 1 the most, so +20 has more than 25 points of margin and the
// cold start is 17 points inside either edge of the band.
constexpr int kSeed = 1;
constexpr bool kThroughCluster = true;

std::string Slurp(const fs::path& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

TEST(QuickstartGainTest, ShippedConfigLiftsHeldOutAccuracyByTwentyPoints) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("quickstart_gain_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path config = COHORT_SOURCE_DIR "/configs/quickstart.yaml";
  const fs::path out = dir / "run";
  const fs::path log = dir / "pipeline.log";
  const std::string overrides =
      " --set eval.eval_every=0 --set eval.sampled=false --set eval.problems=500 --set run.seed=" +
      std::to_string(kSeed);
  const std::string cmd =
      (kThroughCluster ? std::string(COHORT_BINARY_DIR) + "/cli/cohort run " + config.string()
                       : std::string(COHORT_BINARY_DIR) + "/learner/cohort-pipeline --config " +
                             config.string()) +
      " --out " + out.string() + overrides + " > '" + log.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  auto tail = [](const std::string& text) {
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  };
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << tail(Slurp(log)) << "\n--- learner.log (tail):\n"
      << tail(Slurp(out / "learner.log"));

  const Json s = Json::parse(Slurp(out / "summary.json"), nullptr, false);
  ASSERT_TRUE(s.is_object()) << Slurp(out / "summary.json");
  ASSERT_EQ(s["stages"].size(), 2u) << s.dump(1);
  const Json& sft = s["stages"][0];
  const Json& rl = s["stages"][1];
  ASSERT_EQ(sft["kind"], "sft");
  ASSERT_EQ(rl["kind"], "grpo");
  const double cold = sft["eval_after"]["accuracy"].get<double>();
  EXPECT_GE(cold, 0.25) << "cold start below the 25-60% band";
  EXPECT_LE(cold, 0.60) << "cold start above the 25-60% band";
  const double before = rl["eval_before"]["accuracy"].get<double>();
  const double after = rl["eval_after"]["accuracy"].get<double>();
  EXPECT_EQ(rl["eval_after"]["problems"], 500);
  std::cout << "quickstart (" << (kThroughCluster ? "cohort run" : "cohort-pipeline") << ", seed "
            << kSeed << "): cold start " << cold << " after " << sft["steps"] << " SFT steps, GRPO "
            << rl["steps"] << " steps " << before << " -> " << after << " (" << rl["duration_s"]
            << " s)" << std::endl;
  EXPECT_GE(after - before, 0.20) << "GRPO: held-out greedy accuracy " << before << " -> " << after;
  EXPECT_GE(rl["eval_after"]["format_rate"].get<double>(), 0.95);
  if (!HasFailure()) fs::remove_all(dir);
}

// An sft stage with until_accuracy ends at the first check whose greedy
// accuracy on training prompts that are not demonstrations reaches the
// target (cohort-pipeline, the quickstart's task and model, a low target).
TEST(QuickstartGainTest, SftStageEndsAtItsAccuracyTarget) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("quickstart_until_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path config = dir / "until.yaml";
  std::ofstream(config) << R"(
run: {name: until, seed: 1}
model: {preset: tiny-quickstart, chat_template: plain, init_seed: 5}
task: {name: addition, digits: 2, train_size: 2000, eval_size: 500, fresh_size: 500, sft_size: 140}
reward: {tasks: {addition: {verifier: math, format: r1-zero, weights: {accuracy: 1.0, format: 0.2}}}}
sampling: {max_new_tokens: 32}
eval: {dataset: eval, problems: 100, sampled: false}
pipeline:
  - name: cold_start
    kind: sft
    dataset: sft
    steps: 600
    until_accuracy: 0.05
    until_dataset: train
    until_problems: 100
    until_every: 20
    set: {grpo.prompts_per_step: 64, optim.lr: 2.0e-3, optim.warmup_steps: 50,
          optim.schedule: cosine}
)";
  const fs::path out = dir / "run";
  const fs::path log = dir / "pipeline.log";
  const std::string cmd = std::string(COHORT_BINARY_DIR) + "/learner/cohort-pipeline --config " +
                          config.string() + " --out " + out.string() + " > '" + log.string() +
                          "' 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Slurp(log);
  const Json s = Json::parse(Slurp(out / "summary.json"), nullptr, false);
  ASSERT_TRUE(s.is_object()) << Slurp(out / "summary.json");
  const Json& sft = s["stages"][0];
  const int64_t steps = sft["steps"].get<int64_t>();
  EXPECT_LT(steps, 600) << "the target was not reached";
  EXPECT_EQ(steps % 20, 0) << "it stopped between checks";
  EXPECT_GE(sft["final_metrics"]["until_accuracy"].get<double>(), 0.05) << sft.dump(1);
  EXPECT_EQ(sft["final_metrics"]["until_reached"], 1.0);
  // Every earlier check was below the target, and they ran every 20 steps.
  std::ifstream metrics(out / "metrics.jsonl");
  std::string line;
  int64_t checks = 0;
  while (std::getline(metrics, line)) {
    const Json m = Json::parse(line);
    if (!m.contains("until_accuracy")) continue;
    ++checks;
    EXPECT_EQ(m["stage_step"].get<int64_t>(), 20 * checks);
    if (m["stage_step"].get<int64_t>() < steps) EXPECT_LT(m["until_accuracy"].get<double>(), 0.05);
  }
  EXPECT_EQ(checks, steps / 20);
  std::cout << "until_accuracy 0.05: stopped at step " << steps << " of 600 ("
            << sft["final_metrics"]["until_accuracy"] << "), held-out greedy "
            << sft["eval_after"]["accuracy"] << std::endl;
  if (!HasFailure()) fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort
