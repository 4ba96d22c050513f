// Helpers for tests that run a real cohort-learner on a run directory with
// real roles (tests/cluster_fault_test.cc, tests/actor_submit_kill_test.cc):
// the addition task's tokenizer files, a role spawned with its port file,
// GetStatus with the run's token, the learner's journals read back, the
// tails of the role logs. Links cohort_supervisor, cohort_tasks,
// cohort_proto, cohort_rpc and nlohmann_json (the lighter helpers are in
// tests/cluster_util.h).
#ifndef COHORT_TESTS_CLUSTER_RUN_H_
#define COHORT_TESTS_CLUSTER_RUN_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli/supervisor.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/rpc.h"
#include "core/tasks/addition.h"
#include "tests/cluster_util.h"

namespace cohort::testing {

// The addition task's tokenizer.json and tokenizer_config.json in `dir`.
inline void WriteAdditionTokenizer(const std::string& dir) {
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/tokenizer.json", tasks::AdditionTokenizerJson());
  WriteFile(dir + "/tokenizer_config.json", tasks::AdditionTokenizerConfigJson());
}

// Starts `binary` as a role of the run in `config`: on 127.0.0.1:`port` (0:
// any), no metrics port, its ports in `port_file` (removed first), its
// output in `log`; `extra` flags last.
inline absl::StatusOr<std::unique_ptr<cli::ChildProcess>> SpawnRole(
    const std::string& binary, const std::string& config, int port, const std::string& port_file,
    const std::string& log, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {
      "--config",         config,           "--host", "127.0.0.1",   "--port",
      absl::StrCat(port), "--metrics_port", "0",      "--port_file", port_file};
  args.insert(args.end(), extra.begin(), extra.end());
  std::error_code ec;
  std::filesystem::remove(port_file, ec);
  return cli::ChildProcess::Spawn(binary, args, log);
}

// cohort.v1.Admin/GetStatus of the learner on 127.0.0.1:`port` with the
// bearer token `token` (3 s deadline).
inline absl::StatusOr<v1::RunStatus> GetRunStatus(int port, const std::string& token) {
  ChannelOptions options;
  options.bearer_token = token;
  auto channel = MakeChannel(absl::StrCat("127.0.0.1:", port), options);
  if (!channel.ok()) return channel.status();
  auto stub = v1::Admin::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  v1::RunStatus status;
  grpc::Status s = stub->GetStatus(&ctx, v1::GetStatusRequest(), &status);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return status;
}

// The learner's journals (trained.jsonl, filtered.jsonl, failed.jsonl in
// run.out_dir), read back.
struct Journals {
  // (prompt_id, epoch) -> the journals it appears in, one entry per line.
  std::map<std::pair<int64_t, int64_t>, std::vector<std::string>> items;
  int64_t trained = 0, filtered = 0, failed = 0;
  std::vector<std::string> malformed;  // lines without prompt_id and epoch
  std::set<int64_t> steps;             // trained.jsonl's step values
  // (prompt_id, epoch, step) of every trained line.
  std::set<std::tuple<int64_t, int64_t, int64_t>> trained_steps;
};

inline Journals ReadJournals(const std::string& run_dir) {
  Journals j;
  for (const std::string name : {"trained", "filtered", "failed"}) {
    std::istringstream in(ReadFile(absl::StrCat(run_dir, "/", name, ".jsonl")));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      nlohmann::json o = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!o.is_object() || !o.contains("prompt_id") || !o.contains("epoch")) {
        j.malformed.push_back(absl::StrCat(name, ": ", line));
        continue;
      }
      const int64_t p = o["prompt_id"].get<int64_t>(), e = o["epoch"].get<int64_t>();
      j.items[{p, e}].push_back(name);
      if (name == "trained") {
        ++j.trained;
        const int64_t step = o.value("step", int64_t{-1});
        j.steps.insert(step);
        j.trained_steps.insert({p, e, step});
      } else if (name == "filtered") {
        ++j.filtered;
      } else {
        ++j.failed;
      }
    }
  }
  return j;
}

// The last 6000 characters of every *.log file in `dir`, each under a
// "===== name" line.
inline std::string LogTails(const std::string& dir) {
  std::string all;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".log") continue;
    std::string text = ReadFile(e.path().string());
    if (text.size() > 6000) text = "..." + text.substr(text.size() - 6000);
    absl::StrAppend(&all, "\n===== ", e.path().filename().string(), "\n", text);
  }
  return all;
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_CLUSTER_RUN_H_
