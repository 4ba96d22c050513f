// Placeholder until the issue that owns this subcommand lands.
#include <cstdio>

#include "cli/commands.h"

namespace cohort::cli {

int RewardMain(int argc, char** argv) {
  std::fprintf(stderr, "%s: not implemented yet\n", argv[0]);
  return 2;
}

}  // namespace cohort::cli
