// Command-line flags for cohort's binaries and subcommands.
//
// Each binary or subcommand declares its flags on its own FlagSet (no global
// registry), so `cohort run --help` lists exactly the flags of `run`.
//
//   FlagSet flags("cohort-reward", "Serves cohort.v1.Reward.");
//   std::string config; int64_t port = 0;
//   flags.String("config", &config, "Run config (YAML).");
//   flags.Int("port", &port, "gRPC port; 0 picks a free one.");
//   ASSIGN_OR_RETURN(auto positional, flags.Parse(argc, argv));
//
// Accepted forms: --name=value, --name value, --bool, --nobool,
// --bool=true|false. "--" ends flag parsing. -h and --help make Parse
// return a status with code kCancelled after printing help to stdout;
// callers exit 0 on it (see ParseFlagsOrExit).
#ifndef COHORT_CORE_FLAGS_H_
#define COHORT_CORE_FLAGS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

class FlagSet {
 public:
  // `program` is shown in usage; `description` is the paragraph under it;
  // `positional` describes positional arguments (e.g. "CONFIG"), if any.
  FlagSet(std::string program, std::string description, std::string positional = "");

  void String(std::string name, std::string* value, std::string help);
  void Int(std::string name, int64_t* value, std::string help);
  void Int(std::string name, int* value, std::string help);
  void Double(std::string name, double* value, std::string help);
  void Bool(std::string name, bool* value, std::string help);
  // Repeatable: each occurrence appends.
  void StringList(std::string name, std::vector<std::string>* values, std::string help);

  // Parses argv[1..argc). Returns the positional arguments. Errors name the
  // flag and what was expected.
  absl::StatusOr<std::vector<std::string>> Parse(int argc, char** argv) const;
  absl::StatusOr<std::vector<std::string>> Parse(const std::vector<std::string>& args) const;

  // Usage text: program, description, every flag with its type, default
  // and help.
  std::string Help() const;

 private:
  struct Flag {
    std::string name;
    std::string type;  // "string", "int", "double", "bool", "list"
    std::string help;
    std::string default_text;
    std::function<absl::Status(const std::string&)> set;
  };
  const Flag* Find(const std::string& name) const;

  std::string program_;
  std::string description_;
  std::string positional_;
  std::vector<Flag> flags_;
};

// The run-config flags of every binary and subcommand that reads a run
// config: --config PATH (when `config_path` is non-null; `config_help`
// replaces the default help) and the repeatable --set section.key=value
// (`set_help` is appended to the standard help, e.g. "Also passed to every
// role."). Pass the results to LoadConfig (core/config.h).
void AddConfigFlags(FlagSet& flags, std::string* config_path, std::vector<std::string>* overrides,
                    std::string config_help = "", std::string set_help = "");

// Parses; on --help prints help and exits 0; on error prints the error and
// a hint to stderr and exits 2.
std::vector<std::string> ParseFlagsOrExit(const FlagSet& flags, int argc, char** argv);

}  // namespace cohort

#endif  // COHORT_CORE_FLAGS_H_
