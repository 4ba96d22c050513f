#include "core/flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"

namespace cohort {

FlagSet::FlagSet(std::string program, std::string description, std::string positional)
    : program_(std::move(program)),
      description_(std::move(description)),
      positional_(std::move(positional)) {}

void FlagSet::String(std::string name, std::string* value, std::string help) {
  flags_.push_back({name, "string", std::move(help),
                    value->empty() ? "\"\"" : absl::StrCat("\"", *value, "\""),
                    [value](const std::string& v) {
                      *value = v;
                      return absl::OkStatus();
                    }});
}

void FlagSet::Int(std::string name, int64_t* value, std::string help) {
  flags_.push_back(
      {name, "int", std::move(help), absl::StrCat(*value), [value, name](const std::string& v) {
         if (!absl::SimpleAtoi(v, value)) {
           return absl::InvalidArgumentError(
               absl::StrCat("flag --", name, ": expected an integer, got \"", v, "\""));
         }
         return absl::OkStatus();
       }});
}

void FlagSet::Int(std::string name, int* value, std::string help) {
  flags_.push_back(
      {name, "int", std::move(help), absl::StrCat(*value), [value, name](const std::string& v) {
         if (!absl::SimpleAtoi(v, value)) {
           return absl::InvalidArgumentError(
               absl::StrCat("flag --", name, ": expected an integer, got \"", v, "\""));
         }
         return absl::OkStatus();
       }});
}

void FlagSet::Double(std::string name, double* value, std::string help) {
  flags_.push_back(
      {name, "double", std::move(help), absl::StrCat(*value), [value, name](const std::string& v) {
         if (!absl::SimpleAtod(v, value)) {
           return absl::InvalidArgumentError(
               absl::StrCat("flag --", name, ": expected a number, got \"", v, "\""));
         }
         return absl::OkStatus();
       }});
}

void FlagSet::Bool(std::string name, bool* value, std::string help) {
  flags_.push_back({name, "bool", std::move(help), *value ? "true" : "false",
                    [value, name](const std::string& v) {
                      if (!absl::SimpleAtob(v, value)) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "flag --", name, ": expected true or false, got \"", v, "\""));
                      }
                      return absl::OkStatus();
                    }});
}

void FlagSet::StringList(std::string name, std::vector<std::string>* values, std::string help) {
  flags_.push_back(
      {name, "list", std::move(help), "none; repeatable", [values](const std::string& v) {
         values->push_back(v);
         return absl::OkStatus();
       }});
}

const FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(int argc, char** argv) const {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return Parse(args);
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(
    const std::vector<std::string>& args) const {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      std::cout << Help();
      return absl::CancelledError("help requested");
    }
    if (arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body, value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    // Accept both --max_batch and --max-batch.
    for (char& c : name)
      if (c == '-') c = '_';
    const Flag* flag = Find(name);
    if (flag == nullptr && !has_value && name.rfind("no", 0) == 0) {
      const Flag* negated = Find(name.substr(2));
      if (negated != nullptr && negated->type == "bool") {
        absl::Status s = negated->set("false");
        if (!s.ok()) return s;
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see ", program_, " --help)"));
    }
    if (!has_value) {
      if (flag->type == "bool") {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value (", flag->type, ")"));
      }
    }
    absl::Status s = flag->set(value);
    if (!s.ok()) return s;
  }
  return positional;
}

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("Usage: ", program_, " [flags]", positional_.empty() ? "" : " ",
                                 positional_, "\n\n", description_, "\n\nFlags:\n");
  for (const Flag& f : flags_) {
    absl::StrAppend(&out, absl::StrFormat("  --%s (%s; default: %s)\n      %s\n", f.name, f.type,
                                          f.default_text, f.help));
  }
  absl::StrAppend(&out, "  --help\n      Show this help and exit.\n");
  return out;
}

void AddConfigFlags(FlagSet& flags, std::string* config_path, std::vector<std::string>* overrides,
                    std::string config_help, std::string set_help) {
  if (config_path != nullptr) {
    flags.String("config", config_path,
                 config_help.empty() ? "Run config (YAML); empty uses the built-in defaults."
                                     : std::move(config_help));
  }
  std::string help =
      "Config override section.key=value, applied after the file, in order (repeatable; maps "
      "are merged), e.g. --set run.seed=3 or --set reward.tasks.math.weights.format=0.2.";
  if (!set_help.empty()) absl::StrAppend(&help, " ", set_help);
  flags.StringList("set", overrides, std::move(help));
}

std::vector<std::string> ParseFlagsOrExit(const FlagSet& flags, int argc, char** argv) {
  auto parsed = flags.Parse(argc, argv);
  if (parsed.ok()) return *std::move(parsed);
  if (absl::IsCancelled(parsed.status())) std::exit(0);
  std::cerr << "error: " << parsed.status().message() << "\n";
  std::exit(2);
}

}  // namespace cohort
