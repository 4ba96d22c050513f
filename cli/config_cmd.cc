// `cohort config`: print, check or document a run config.
//
//   cohort config print run.yaml --set sampling.temperature=0.7
//   cohort config check run.yaml
//   cohort config keys
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/config.h"
#include "core/flags.h"

namespace cohort::cli {
namespace {

constexpr char kUsage[] =
    "Usage: cohort config <print|check|keys> [CONFIG] [--set section.key=value ...]\n\n"
    "  print [CONFIG]  print the effective config (defaults, the file, then --set)\n"
    "                  as YAML with every key; without CONFIG, the defaults\n"
    "  check CONFIG    validate; prints \"ok\" or the first error, exit 0 or 1\n"
    "  keys            list every key with its type, default and allowed values\n\n"
    "Run 'cohort config print --help' for the flags.\n";

}  // namespace

int ConfigMain(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string action = argv[1];
  if (action == "-h" || action == "--help" || action == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (action != "print" && action != "check" && action != "keys") {
    std::fprintf(stderr, "cohort config: unknown action '%s'\n\n%s", action.c_str(), kUsage);
    return 2;
  }

  std::string program = std::string(argv[0]) + " " + action;
  FlagSet flags(program,
                action == "keys" ? "Lists every config key: path, type, default, allowed values."
                : action == "print"
                    ? "Prints the effective run config as YAML, every key included."
                    : "Validates a run config: unknown keys, types, ranges, cross-field rules.",
                action == "keys"    ? ""
                : action == "print" ? "[CONFIG]"
                                    : "CONFIG");
  std::vector<std::string> overrides;
  bool markdown = false;
  if (action == "keys") {
    flags.Bool("markdown", &markdown,
               "Print the table of docs/config.md (key, type, default, allowed, meaning).");
  } else {
    AddConfigFlags(flags, nullptr, &overrides);
  }
  std::vector<std::string> args = ParseFlagsOrExit(flags, argc - 1, argv + 1);

  if (action == "keys") {
    if (!args.empty()) {
      std::fprintf(stderr, "%s: takes no arguments\n", program.c_str());
      return 2;
    }
    if (markdown) {
      std::fputs(ConfigKeysMarkdown().c_str(), stdout);
      return 0;
    }
    std::printf("%-40s %-7s %-18s %s\n", "KEY", "TYPE", "DEFAULT", "ALLOWED");
    for (const ConfigKeyInfo& key : ConfigKeys()) {
      std::printf("%-40s %-7s %-18s %s\n", key.path.c_str(), key.type.c_str(),
                  key.default_value.c_str(), key.expected.c_str());
    }
    return 0;
  }
  if (args.size() > 1 || (action == "check" && args.empty())) {
    std::fprintf(stderr, "%s: expected %s, got %zu arguments\n", program.c_str(),
                 action == "check" ? "one CONFIG" : "at most one CONFIG", args.size());
    return 2;
  }
  absl::StatusOr<RunConfig> config =
      args.empty() ? ParseConfig("", overrides, "<defaults>") : LoadConfig(args[0], overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  if (action == "print") {
    std::cout << ConfigToYaml(*config);
  } else {
    std::printf("%s: ok\n", args[0].c_str());
  }
  return 0;
}

}  // namespace cohort::cli
