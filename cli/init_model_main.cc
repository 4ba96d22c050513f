// cohort-init-model: the LibTorch half of `cohort init-model`. The `cohort`
// command execs this binary (found next to itself) so that `cohort` itself
// does not link LibTorch and starts fast.
#include "cli/commands.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  cohort::InitLogging("cohort");
  return cohort::cli::InitModelMain(argc, argv);
}
