// cohort-export: the LibTorch half of `cohort export` (see export_cmd.cc).
#include "cli/commands.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  cohort::InitLogging("cohort");
  return cohort::cli::ExportMain(argc, argv);
}
