// `cohort reward score`: scores JSON lines offline with the reward server's
// verifiers.
//
//   cohort reward score [--config run.yaml] [--set k=v] [--workers N] < in > out
//
// Each input line is {"id", "task", "prompt", "completion", "answer"} plus
// task fields ("tests" for code, "numbers"/"target" for countdown, ...;
// "completion_tokens" for length shaping). Each output line, in input order:
//   {"id":..., "reward": R|null, "status": "OK|INVALID|TIMEOUT|ERROR",
//    "reason": "...", "components": {...}}
// reward is null when status is not OK. A line that is not a JSON object,
// or has a field of the wrong type, gives an ERROR line (id: its id, or
// "line N") and the rest go on. Input is streamed: lines are scored in
// parallel on the worker pool as they arrive and written as soon as every
// line before them is written, with at most a bounded number in flight.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cli/commands.h"
#include "core/config.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/rpc.h"
#include "reward_server/scorer.h"

namespace cohort::cli {
namespace {

using reward::Result;
using reward::Sample;
using reward::Status;

constexpr char kUsage[] =
    "Usage: cohort reward score [--config CONFIG] [--workers N]\n\n"
    "  score   read JSON lines on stdin, write one scored line per input line\n"
    "          on stdout, in order\n\n"
    "Run 'cohort reward score --help' for the flags.\n";

std::string OutputLine(const nlohmann::json& id, const Result& r) {
  nlohmann::json out = nlohmann::json::object();
  out["id"] = id;
  if (r.status == Status::kOk && std::isfinite(r.reward)) {
    out["reward"] = r.reward;
  } else {
    out["reward"] = nullptr;
  }
  out["status"] = reward::StatusName(r.status);
  out["reason"] = r.reason;
  nlohmann::json comps = nlohmann::json::object();
  for (const auto& [k, v] : r.components) comps[k] = v;
  out["components"] = std::move(comps);
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Parses one input line into a sample; on error returns the reason and
// sets `*id` to what can be echoed.
absl::StatusOr<Sample> ParseLine(const std::string& line, size_t line_no, nlohmann::json* id) {
  *id = absl::StrCat("line ", line_no);
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": expected a JSON object"));
  }
  Sample s;
  if (j.contains("id")) {
    const auto& v = j["id"];
    if (v.is_string()) {
      *id = v;
      s.id = v.get<std::string>();
    } else if (v.is_number_integer()) {
      *id = v;
      s.id = v.dump();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": id: expected a string or integer"));
    }
  } else {
    s.id = absl::StrCat("line ", line_no);
  }
  for (const auto& [key, field] : {std::pair<const char*, std::string*>{"task", &s.task},
                                   {"prompt", &s.prompt},
                                   {"completion", &s.completion},
                                   {"answer", &s.answer}}) {
    if (!j.contains(key)) continue;
    const auto& v = j[key];
    if (v.is_string()) {
      *field = v.get<std::string>();
    } else if (std::string(key) == "answer" && v.is_number()) {
      *field = v.dump();  // "answer": 42 is common in datasets
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": ", key, ": expected a string"));
    }
  }
  if (s.task.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": task: missing or empty"));
  }
  if (j.contains("completion_tokens")) {
    const auto& v = j["completion_tokens"];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": completion_tokens: expected an integer >= 0"));
    }
    s.completion_tokens = v.get<int>();
  }
  s.extra = nlohmann::json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "id" || k == "task" || k == "prompt" || k == "completion" || k == "answer" ||
        k == "completion_tokens") {
      continue;
    }
    s.extra[k] = it.value();
  }
  return s;
}

// Output lines by input index; the writer prints them in order.
class OrderedWriter {
 public:
  void Put(size_t index, std::string line) {
    absl::MutexLock lock(&mu_);
    ready_[index] = std::move(line);
  }
  void SetTotal(size_t total) {
    absl::MutexLock lock(&mu_);
    total_ = total;
  }
  // Lines accepted and not yet written.
  size_t InFlight(size_t submitted) {
    absl::MutexLock lock(&mu_);
    return submitted - next_;
  }
  void WaitBelow(size_t submitted, size_t limit) {
    absl::MutexLock lock(&mu_);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return submitted - next_ < limit; };
    mu_.Await(absl::Condition(&cond));
  }
  // Writes lines in order until all `total` are written.
  void Run() {
    while (true) {
      std::string line;
      {
        absl::MutexLock lock(&mu_);
        auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return ready_.count(next_) > 0 || next_ == total_;
        };
        mu_.Await(absl::Condition(&cond));
        if (next_ == total_) return;
        line = std::move(ready_[next_]);
        ready_.erase(next_);
      }
      line.push_back('\n');
      std::fwrite(line.data(), 1, line.size(), stdout);
      {
        absl::MutexLock lock(&mu_);
        ++next_;
        if (ready_.count(next_) == 0) std::fflush(stdout);
      }
    }
  }

 private:
  absl::Mutex mu_;
  std::map<size_t, std::string> ready_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  size_t total_ ABSL_GUARDED_BY(mu_) = SIZE_MAX;
};

int ScoreMain(int argc, char** argv) {
  FlagSet flags(std::string(argv[0]),
                "Scores JSON lines from stdin with the reward verifiers of "
                "the run config's reward section (the same as cohort-reward "
                "serves) and writes one JSON line per input line, in order, "
                "to stdout: {\"id\", \"reward\", \"status\", \"reason\", "
                "\"components\"}. reward is null when status is not OK.");
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t workers = -1;
  AddConfigFlags(flags, &config_path, &overrides,
                 "Run config (YAML); empty uses the built-in defaults (math, "
                 "gsm8k, countdown, code; accuracy only).");
  flags.Int("workers", &workers, "Verifier threads; -1 uses reward.workers (0 = one per core).");
  std::vector<std::string> args = ParseFlagsOrExit(flags, argc, argv);
  if (!args.empty()) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], args[0].c_str());
    return 2;
  }
  absl::StatusOr<RunConfig> config = LoadConfigOrDefaults(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(config.status().message()).c_str());
    return 2;
  }
  reward::ScorerOptions options = reward::ScorerOptionsFromConfig(config->reward);
  if (workers >= 0) options.workers = static_cast<int>(workers);
  auto channel_options = ChannelOptionsFromConfig(config->security);
  if (!channel_options.ok()) {
    std::fprintf(stderr, "%s: security: %s\n", argv[0],
                 std::string(channel_options.status().message()).c_str());
    return 2;
  }
  options.make_channel = [co = *channel_options](const std::string& target) {
    return MakeChannel(target, co);
  };
  auto scorer = reward::Scorer::Create(std::move(options));
  if (!scorer.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(scorer.status().message()).c_str());
    return 2;
  }

  OrderedWriter writer;
  std::thread writer_thread([&writer] { writer.Run(); });
  const size_t max_in_flight = static_cast<size_t>(std::max(1, (*scorer)->workers())) * 8 + 64;
  size_t index = 0;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const size_t i = index++;
    nlohmann::json id;
    auto sample = ParseLine(line, i + 1, &id);
    if (!sample.ok()) {
      Result r;
      r.status = Status::kError;
      r.reason = std::string(sample.status().message());
      r.reward = std::nan("");
      writer.Put(i, OutputLine(id, r));
    } else {
      (*scorer)->Submit(std::move(*sample),
                        [&writer, i, id](Result r) { writer.Put(i, OutputLine(id, r)); });
    }
    writer.WaitBelow(index, max_in_flight);
  }
  writer.SetTotal(index);
  writer_thread.join();
  (*scorer)->Stop();
  std::fflush(stdout);
  return 0;
}

}  // namespace

int RewardMain(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string action = argv[1];
  if (action == "-h" || action == "--help" || action == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (action != "score") {
    std::fprintf(stderr, "cohort reward: unknown action '%s'\n\n%s", action.c_str(), kUsage);
    return 2;
  }
  std::string program = std::string(argv[0]) + " score";
  std::vector<char*> sub(argv + 1, argv + argc);
  sub[0] = program.data();
  return ScoreMain(static_cast<int>(sub.size()), sub.data());
}

}  // namespace cohort::cli
