// Actor benchmark: two real cohort-actor processes on the tiny model in a
// steady run (a fake learner gRPC server with an endless supply of prompts
// that publishes a new policy version every few seconds, and a real
// cohort-reward), against the same engine driven standalone in this
// process. Prints one JSON object per line:
//   {"actor": i, "busy": f, "idle_prompts": f, "idle_weights": f,
//    "idle_rewards": f, "tokens_per_cpu_second": x, "cpu_seconds": c, ...}
//   {"standalone_tokens_per_cpu_second": y, "batch": slots, ...}
//   {"ratio": mean actor tokens per CPU-second / standalone, "ratio_beside": ...}
// The standalone engine runs before and after the cluster (the better of
// the two is the baseline), and once more in a child process beside the
// actors during the window ("ratio_beside": the same load on both sides),
// with the same batch, G, lengths, one torch thread and one BLAS thread.
// Each actor's line also has its CPU by thread (/proc; the busiest is the
// engine's: engine_thread_cpu_share).
// Figures are differences of the actors' /metrics over the measured window
// (after a warm-up), so start-up and the first weight fetch do not count.
//
//   actor_bench [--seconds 30] [--warmup 8] [--slots 8] [--group 4]
//               [--max_new_tokens 64] [--publish_every 5] [--baseline_engines 1]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <future>
#include <thread>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "model/aten.h"
#include <ATen/Parallel.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/blas_threads.h"
#include "actor/testing/fake_learner_server.h"
#include "actor/testing/fakes.h"
#include "actor/testing/random_weights.h"
#include "cli/supervisor.h"
#include "core/flags.h"
#include "core/service.h"
#include "model/checkpoint.h"
#include "model/engine.h"
#include "model/transformer.h"

namespace cohort {
namespace {

namespace v1 = ::cohort::v1;

void Emit(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

double ProcessCpuSeconds() {
  struct rusage u;
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// name{labels} -> value, from a Prometheus text page.
std::map<std::string, double> Scrape(int port) {
  std::map<std::string, double> out;
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return out;
  for (absl::string_view line : absl::StrSplit(res->body, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    double v;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &v)) continue;
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

// CPU seconds of each thread of process `pid` (tid -> {name, seconds}), from
// /proc/<pid>/task/<tid>/stat (utime + stime).
std::map<int, std::pair<std::string, double>> ThreadCpu(pid_t pid) {
  std::map<int, std::pair<std::string, double>> out;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::FILE* f = std::fopen((e.path() / "stat").c_str(), "r");
    if (f == nullptr) continue;
    char buf[1024];
    const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    const std::string s(buf, n);
    const size_t open = s.find('('), close = s.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(s.substr(close + 2), ' ');
    if (fields.size() < 13) continue;
    // After the name: state(0) ppid ... utime(11) stime(12).
    const double cpu = (std::stod(fields[11]) + std::stod(fields[12])) / tick;
    const int tid = std::atoi(e.path().filename().c_str());
    std::string name = s.substr(open + 1, close - open - 1);
    if (tid == pid) name += " (main)";
    out[tid] = {name, cpu};
  }
  return out;
}

// `engines` engines side by side in this process (as many as the actors,
// so both sides share the machine alike), one torch thread each, queues kept
// full: generated tokens per CPU-second of the process.
double Standalone(const model::ModelConfig& config, int slots, int group, int max_new,
                  double seconds, int engines) {
  at::set_num_threads(1);
  SetBlasThreads(1);  // as cohort-actor does with actor.threads: 1
  std::vector<std::unique_ptr<model::Engine>> all;
  for (int e = 0; e < engines; ++e) {
    auto transformer = model::Transformer::Create(config, model::RandomInitWeights(config, 1),
                                                  at::kFloat, at::Device(at::kCPU));
    model::EngineOptions eo;
    eo.num_slots = slots;
    eo.max_len = 256;
    all.push_back(*model::Engine::Create(*std::move(transformer), eo));
    all.back()->Start();
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> drivers;
  for (int e = 0; e < engines; ++e) {
    drivers.emplace_back([&, e] {
      model::Engine& engine = *all[e];
      std::deque<std::future<absl::StatusOr<model::GenerationResult>>> futures;
      uint64_t seed = 1 + 1000000 * static_cast<uint64_t>(e);
      auto submit = [&] {
        model::GenerationRequest r;
        for (int i = 1; i <= 3 + static_cast<int>(seed % 5); ++i) r.prompt.push_back(i);
        r.num_samples = group;
        r.params.max_new_tokens = max_new;
        r.params.seed = seed++;
        r.eos_ids = {0};
        futures.push_back(engine.Submit(std::move(r)));
      };
      // Enough queued to keep every slot busy, as the actor does.
      const int depth = (slots + group - 1) / group + 2;
      for (int i = 0; i < depth; ++i) submit();
      while (!stop.load()) {
        if (futures.front().wait_for(std::chrono::milliseconds(20)) == std::future_status::ready) {
          futures.pop_front();
          submit();
        }
      }
    });
  }
  auto tokens = [&] {
    int64_t n = 0;
    for (auto& e : all) n += e->stats().generated_tokens;
    return n;
  };
  absl::SleepFor(absl::Seconds(2));  // warm-up
  const double cpu0 = ProcessCpuSeconds();
  const int64_t tok0 = tokens();
  absl::SleepFor(absl::Seconds(seconds));
  const double generated = static_cast<double>(tokens() - tok0);
  const double cpu = ProcessCpuSeconds() - cpu0;
  stop = true;
  for (auto& e : all) e->Stop();
  for (auto& d : drivers) d.join();
  return generated / cpu;
}

int Main(int argc, char** argv) {
  double seconds = 30, warmup = 8, publish_every = 5;
  int64_t slots = 8, group = 4, max_new = 64, baseline_engines = 1;
  FlagSet flags("actor_bench", "Two actors in a steady run vs the standalone engine.");
  flags.Double("seconds", &seconds, "Measured window, seconds.");
  flags.Double("warmup", &warmup, "Seconds before the window.");
  flags.Double("publish_every", &publish_every, "Seconds between policy versions.");
  flags.Int("slots", &slots, "actor.slots (the engine batch).");
  flags.Int("group", &group, "G.");
  flags.Int("max_new_tokens", &max_new, "Completion length limit.");
  flags.Int("baseline_engines", &baseline_engines,
            "Standalone engines side by side in the baseline process (1: as bench/engine_bench; "
            "2: one per actor, but two engines in one process contend for the BLAS pool).");
  bool standalone_only = false;
  flags.Bool("standalone_only", &standalone_only,
             "Only the baseline for --seconds, one JSON line (the bench runs itself so to "
             "measure it beside the actors, under the same load).");
  ParseFlagsOrExit(flags, argc, argv);
  model::ModelConfig config = *model::PresetConfig("tiny");
  config.max_position_embeddings = 256;
  config.eos_token_ids = {0};
  if (standalone_only) {
    Emit({{"standalone_tokens_per_cpu_second",
           Standalone(config, static_cast<int>(slots), static_cast<int>(group),
                      static_cast<int>(max_new), seconds, static_cast<int>(baseline_engines))}});
    return 0;
  }

  const std::string self = argv[0];
  const std::string build = self.substr(0, self.rfind('/')) + "/..";
  char tmpl[] = "/tmp/actor_bench.XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);

  // The baseline first: two engines in this process (one per actor), one
  // torch thread each, queues kept full, the same batch, G and lengths.
  const double standalone =
      Standalone(config, static_cast<int>(slots), static_cast<int>(group),
                 static_cast<int>(max_new), 10, static_cast<int>(baseline_engines));

  actor::testing::FakeLearner::Options o;
  o.prompts = 1000000;
  o.group_size = static_cast<int>(group);
  o.lease_ttl_ms = 30000;
  o.heartbeat_interval_ms = 2000;
  o.model.set_config_json(config.ToJson());
  o.model.add_eos_token_ids(0);
  o.model.set_model_fingerprint(config.Fingerprint());
  o.model.set_dtype("float32");
  o.model.set_source("preset:tiny");
  o.weights = [&config](int64_t v) { return actor::testing::RandomHostWeights(config, v); };
  o.task = "math";
  o.max_new_tokens = static_cast<int>(max_new);
  o.chunk_bytes = 1 << 20;
  o.reward_addresses = {};
  actor::testing::FakeLearner ledger(o);
  auto server = actor::testing::FakeLearnerServer::Start(&ledger);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string yaml = dir + "/run.yaml";
  std::FILE* f = std::fopen(yaml.c_str(), "w");
  std::fprintf(f, "actor:\n  slots: %ld\n  threads: 1\nrun:\n  log_level: warning\n",
               static_cast<long>(slots));
  std::fclose(f);
  auto reward = cli::ChildProcess::Spawn(build + "/reward_server/cohort-reward",
                                         {"--config", yaml, "--port_file", dir + "/reward.port"},
                                         dir + "/reward.log");
  if (!reward.ok()) return 1;
  absl::StatusOr<PortFile> rport = absl::NotFoundError("reward.port");
  for (int i = 0; i < 300 && !rport.ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    rport = ReadPortFile(dir + "/reward.port");
  }
  if (!rport.ok()) return 1;
  std::vector<std::unique_ptr<cli::ChildProcess>> actors;
  for (int i = 0; i < 2; ++i) {
    auto a = cli::ChildProcess::Spawn(build + "/actor/cohort-actor",
                                      {"--learner", (*server)->address(), "--config", yaml,
                                       "--reward", absl::StrCat("127.0.0.1:", rport->grpc_port),
                                       "--port_file", absl::StrCat(dir, "/actor-", i, ".port")},
                                      absl::StrCat(dir, "/actor-", i, ".log"));
    if (!a.ok()) return 1;
    actors.push_back(*std::move(a));
  }
  std::vector<int> metrics_ports;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<PortFile> p = absl::NotFoundError("port");
    for (int k = 0; k < 600 && !p.ok(); ++k) {
      absl::SleepFor(absl::Milliseconds(100));
      p = ReadPortFile(absl::StrCat(dir, "/actor-", i, ".port"));
    }
    if (!p.ok()) return 1;
    metrics_ports.push_back(p->metrics_port);
  }
  int64_t version = 1;
  auto run_for = [&](double s) {
    const absl::Time end = absl::Now() + absl::Seconds(s);
    absl::Time next = absl::Now() + absl::Seconds(publish_every);
    while (absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(100));
      if (absl::Now() >= next) {
        ledger.Publish(++version);
        next += absl::Seconds(publish_every);
      }
    }
  };
  run_for(warmup);
  std::vector<std::map<std::string, double>> before, after;
  std::vector<std::map<int, std::pair<std::string, double>>> threads_before, threads_after;
  for (int port : metrics_ports) before.push_back(Scrape(port));
  for (auto& a : actors) threads_before.push_back(ThreadCpu(a->pid()));
  const int64_t groups0 = static_cast<int64_t>(ledger.groups().size());
  // The baseline once more, in its own process beside the actors for most
  // of the window (it warms up for 2 s first), so both see the same load.
  const double beside_seconds = std::max(5.0, seconds - 4);
  auto beside = cli::ChildProcess::Spawn(
      self,
      {"--standalone_only", "--seconds", absl::StrCat(beside_seconds), "--slots",
       absl::StrCat(slots), "--group", absl::StrCat(group), "--max_new_tokens",
       absl::StrCat(max_new), "--baseline_engines", absl::StrCat(baseline_engines)},
      dir + "/beside.log");
  run_for(seconds);
  for (int port : metrics_ports) after.push_back(Scrape(port));
  for (auto& a : actors) threads_after.push_back(ThreadCpu(a->pid()));
  const int64_t groups1 = static_cast<int64_t>(ledger.groups().size());
  for (auto& a : actors) a->Stop(absl::Seconds(10));
  reward.value()->Stop(absl::Seconds(5));

  double sum_rate = 0;
  for (int i = 0; i < 2; ++i) {
    auto d = [&](const std::string& k) { return after[i][k] - before[i][k]; };
    const char* states[] = {"busy", "idle_prompts", "idle_weights", "idle_rewards"};
    double total = 0;
    for (const char* s : states) {
      total += d(absl::StrCat("cohort_actor_engine_seconds_total{state=\"", s, "\"}"));
    }
    nlohmann::json j;
    j["actor"] = i;
    for (const char* s : states) {
      j[s] = d(absl::StrCat("cohort_actor_engine_seconds_total{state=\"", s, "\"}")) /
             std::max(total, 1e-9);
    }
    const double cpu = d("cohort_process_cpu_seconds_total");
    const double tokens = d("cohort_actor_generated_tokens_total");
    j["cpu_seconds"] = cpu;
    j["tokens"] = tokens;
    j["tokens_per_cpu_second"] = tokens / std::max(cpu, 1e-9);
    j["tokens_per_second"] = tokens / seconds;
    j["groups_submitted"] = d("cohort_actor_groups_submitted_total");
    sum_rate += tokens / std::max(cpu, 1e-9);
    // Where the actor's CPU went, by thread (/proc): the busiest thread is
    // the engine's (it decodes); the rest is the actor's own work around it
    // (RPCs, rewards, heartbeats, weight fetches, the control loop). A
    // load-independent view of the overhead.
    std::vector<std::pair<double, std::string>> by_thread;
    double thread_total = 0;
    for (const auto& [tid, named] : threads_after[i]) {
      auto b = threads_before[i].find(tid);
      const double s = named.second - (b == threads_before[i].end() ? 0 : b->second.second);
      by_thread.push_back({s, named.first});
      thread_total += s;
    }
    std::sort(by_thread.rbegin(), by_thread.rend());
    nlohmann::json top = nlohmann::json::array();
    for (size_t k = 0; k < by_thread.size() && k < 5; ++k) {
      top.push_back({{"thread", by_thread[k].second}, {"cpu_seconds", by_thread[k].first}});
    }
    j["engine_thread_cpu_share"] =
        by_thread.empty() ? 0.0 : by_thread[0].first / std::max(thread_total, 1e-9);
    j["threads"] = top;
    Emit(j);
  }
  nlohmann::json lj;
  lj["learner_groups_per_second"] = static_cast<double>(groups1 - groups0) / seconds;
  lj["versions_published"] = version;
  Emit(lj);
  // And again after the cluster: the machine's load changes over a run; the
  // better of the two is the baseline (the conservative choice).
  const double standalone_after =
      Standalone(config, static_cast<int>(slots), static_cast<int>(group),
                 static_cast<int>(max_new), 10, static_cast<int>(baseline_engines));
  const double baseline = std::max(standalone, standalone_after);
  double standalone_beside = 0;
  if (beside.ok() && (*beside)->WaitFor(absl::Seconds(60))) {
    std::FILE* log = std::fopen((dir + "/beside.log").c_str(), "r");
    char line[4096];
    while (log != nullptr && std::fgets(line, sizeof(line), log) != nullptr) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("standalone_tokens_per_cpu_second")) {
        standalone_beside = j["standalone_tokens_per_cpu_second"].get<double>();
      }
    }
    if (log != nullptr) std::fclose(log);
  }
  Emit({{"standalone_tokens_per_cpu_second", baseline},
        {"standalone_before", standalone},
        {"standalone_after", standalone_after},
        {"standalone_beside", standalone_beside},
        {"batch", slots},
        {"baseline_engines", baseline_engines}});
  // ratio: against the better of before and after (conservative);
  // ratio_beside: against the baseline measured beside the actors, in the
  // same window and under the same load (the figure the load moves least).
  Emit({{"ratio", sum_rate / 2 / baseline},
        {"ratio_beside", standalone_beside > 0 ? sum_rate / 2 / standalone_beside : 0.0}});
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) { return cohort::Main(argc, argv); }
