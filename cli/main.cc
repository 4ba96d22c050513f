// `cohort`: the command-line front end. Dispatches to one subcommand.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

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
    {"health", cohort::cli::HealthMain,
     "ask a server's grpc.health.v1 status with the run's token and TLS (exit 0 = SERVING)"},
    {"status", cohort::cli::StatusMain,
     "a learner's status: stage, step, version, ledger, actors (--json: the proto's fields)"},
    {"task", cohort::cli::TaskMain, "write a built-in task's datasets and tokenizer (addition)"},
    {"init-model", nullptr, "write a randomly initialised Hugging Face model directory"},
    {"eval", nullptr, "pass@1, cons@K, pass@K and format rate of a model on a JSONL dataset"},
    {"export", nullptr,
     "write a Hugging Face model directory from a checkpoint or a run's newest one"},
};

// Subcommands that need LibTorch live in sibling binaries so that `cohort`
// itself does not link it: `cohort init-model ...` execs
// `<dir of cohort>/cohort-init-model ...`.
int ExecSibling(const char* command, int argc, char** argv) {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::string binary = (self.parent_path() / (std::string("cohort-") + command)).string();
  if (ec || ::access(binary.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "cohort %s: %s not found; this subcommand needs a build with "
                 "LibTorch (cmake -DCOHORT_WITH_TORCH=ON)\n",
                 command, binary.c_str());
    return 2;
  }
  std::string prog = std::string("cohort ") + command;
  std::vector<char*> args;
  args.push_back(prog.data());
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(binary.c_str(), args.data());
  std::fprintf(stderr, "cohort %s: cannot run %s: %s\n", command, binary.c_str(),
               std::strerror(errno));
  return 1;
}

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
      if (c.main == nullptr) return ExecSibling(c.name, argc, argv);
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
