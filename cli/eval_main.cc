// cohort-eval: the LibTorch half of `cohort eval` (see eval_cmd.cc).
#include "cli/commands.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  cohort::InitLogging("cohort");
  return cohort::cli::EvalMain(argc, argv);
}
