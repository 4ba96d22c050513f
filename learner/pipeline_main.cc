// cohort-pipeline: runs a run config's pipeline in this one process (SFT,
// GRPO, rejection sampling and evals in-process; no actors, no reward
// server), into --out. For calibrating recipes and for tests; `cohort run`
// runs the same pipeline through the local cluster.
//
//   cohort-pipeline --config configs/quickstart.yaml --out out/qs [--set k=v ...] [--new]
#include <cstdio>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/flags.h"
#include "core/logging.h"
#include "learner/pipeline.h"
#include "learner/pipeline_local.h"

int main(int argc, char** argv) {
  cohort::InitLogging("pipeline");
  std::string config_path, out;
  std::vector<std::string> overrides;
  bool start_new = false;
  cohort::FlagSet flags(argv[0],
                        "Runs the config's pipeline in one process (no actors) into --out.");
  cohort::AddConfigFlags(flags, &config_path, &overrides, "Run config (YAML); required.");
  flags.String("out", &out, "Run directory.");
  flags.Bool("new", &start_new, "Replace an unfinished run with another config in --out.");
  std::vector<std::string> positional = cohort::ParseFlagsOrExit(flags, argc, argv);
  if (config_path.empty() || out.empty() || !positional.empty()) {
    std::fprintf(stderr, "usage: %s --config FILE --out DIR [--set k=v] [--new]\n", argv[0]);
    return 2;
  }
  auto config = cohort::LoadConfig(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(config.status().message()).c_str());
    return 1;
  }
  cohort::learner::LocalExecutor executor;
  cohort::learner::Pipeline::Options options;
  options.start_new = start_new;
  cohort::learner::Pipeline pipeline(*config, out, &executor, options);
  absl::Status s = pipeline.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
