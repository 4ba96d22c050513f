// `cohort`: the command-line front end. Dispatches to one subcommand.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/commands.h"
#include "core/logging.h"

namespace {

struct Command {
  const char* name;
  int (*main)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"run", cohort::cli::RunMain,
     "start a local cluster (learner, reward server, actors) and supervise it"},
    {"config", cohort::cli::ConfigMain, "print or check a run config"},
    {"tokenize", cohort::cli::TokenizeMain,
     "encode JSON-string lines to ids, or decode with --decode"},
    {"reward", cohort::cli::RewardMain,
     "score JSON lines offline with the reward verifiers (reward score)"},
#ifdef COHORT_WITH_TORCH
    {"init-model", cohort::cli::InitModelMain,
     "write a randomly initialised Hugging Face model directory"},
#endif
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "Usage: cohort <command> [flags] [args]\n\n"
               "cohort trains language models to reason with GRPO.\n\nCommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-11s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'cohort <command> --help' for a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) {
      std::string prog = std::string("cohort ") + c.name;
      cohort::InitLogging("cohort");
      // Shift argv so the subcommand sees its own name as argv[0].
      argv[1] = prog.data();
      return c.main(argc - 1, argv + 1);
    }
  }
  std::fprintf(stderr, "cohort: unknown command '%s'\n\n", name.c_str());
  PrintUsage(stderr);
  return 2;
}
