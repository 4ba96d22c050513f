// Throughput of the `math` verifier (answer extraction + equivalence) on
// realistic completions, single-threaded and with N threads. Prints one JSON
// object per line.
//
//   reward_bench [--data DIR] [--seconds S] [--threads N]
//                [--baseline OTHER_REWARD_BENCH --rounds R]
//
// With --baseline, the other binary (e.g. this bench built at an earlier
// commit) and this one run alternately R times in this one invocation, and
// a "reward_math_ratio" line per style and thread count gives this binary's
// best throughput over the baseline's (medians alongside), and, when the
// baseline prints it too, "cpu_ratio": the same per second of CPU time,
// the robust figure on a machine that other processes load. A "math_agreement" line reports
// how often the verifier agrees with the labelled answer pairs of
// reward_server/verifiers/testdata/agreement_pairs.jsonl, and
// "math_forms" the comparisons per second on those pairs.
//
// GSM8K-style completions are the GSM8K test solutions inside <think> tags,
// ending in "#### N" or "The answer is \boxed{N}."; MATH-500-style ones are
// the MATH-500 reference solutions (with their \boxed{} answer). A quarter
// of each set is made wrong (another item's answer) so that both verdicts
// are exercised.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <map>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "reward_server/verifiers/math_accuracy.h"
#include "reward_server/verifiers/math_equiv.h"

namespace {

using cohort::reward::ComponentResult;
using cohort::reward::Sample;
using cohort::reward::Status;

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

// Drops GSM8K's <<calculator>> annotations.
std::string StripCalculator(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "<<") == 0) {
      std::size_t end = s.find(">>", i);
      if (end != std::string::npos) {
        i = end + 1;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<Sample> Gsm8kSamples(const std::vector<nlohmann::json>& items) {
  std::vector<Sample> samples;
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::string solution = items[i]["answer"];
    std::size_t hashes = solution.rfind("####");
    std::string body = StripCalculator(solution.substr(0, hashes));
    std::string number = solution.substr(hashes + 5);
    std::string said = number;
    if (i % 4 == 3) {  // wrong: another item's answer
      std::string other = items[(i + 1) % items.size()]["answer"];
      said = other.substr(other.rfind("####") + 5);
    }
    Sample s;
    s.task = "math";
    s.prompt = items[i]["question"];
    s.answer = number;
    s.completion = "<think>\n" + body + "</think>\n" +
                   (i % 2 == 0 ? "#### " + said : "The answer is $\\boxed{" + said + "}$.");
    samples.push_back(std::move(s));
  }
  return samples;
}

std::vector<Sample> Math500Samples(const std::vector<nlohmann::json>& items) {
  std::vector<Sample> samples;
  for (std::size_t i = 0; i < items.size(); ++i) {
    Sample s;
    s.task = "math";
    s.prompt = items[i]["problem"];
    s.answer = items[i]["answer"];
    std::string solution = items[i]["solution"];
    if (i % 4 == 3) {
      solution += "\n\nSo the final answer is $\\boxed{" +
                  items[(i + 7) % items.size()]["answer"].get<std::string>() + "}$.";
    }
    s.completion = "<think>\n" + solution + "\n</think>\n";
    samples.push_back(std::move(s));
  }
  return samples;
}

// CPU time of the calling thread: on a loaded machine it measures the work
// done, where wall time also counts the time other processes ran.
long ThreadCpuNanos() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

struct Run {
  double per_second = 0;
  double per_cpu_second = 0;  // per second of the threads' own CPU time
  long scored = 0;
  double accuracy = 0;
  long not_ok = 0;
};

Run Measure(const std::vector<Sample>& samples, int threads, double seconds) {
  std::atomic<long> total{0};
  std::atomic<long> correct{0};
  std::atomic<long> not_ok{0};
  std::atomic<long> cpu_ns{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pool;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      long cpu_start = ThreadCpuNanos();
      long n = 0, ok = 0, bad = 0;
      std::size_t i = static_cast<std::size_t>(t) * 97 % samples.size();
      while (!stop.load(std::memory_order_relaxed)) {
        for (int k = 0; k < 64; ++k) {
          ComponentResult r = cohort::reward::MathAccuracy(samples[i]);
          if (r.status != Status::kOk) ++bad;
          if (r.value == 1.0) ++ok;
          ++n;
          if (++i == samples.size()) i = 0;
        }
      }
      cpu_ns += ThreadCpuNanos() - cpu_start;
      total += n;
      correct += ok;
      not_ok += bad;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Run run;
  run.scored = total;
  run.per_second = total / elapsed;
  run.per_cpu_second = cpu_ns > 0 ? total / (cpu_ns * 1e-9) : 0;
  run.accuracy = total ? static_cast<double>(correct) / total : 0;
  run.not_ok = not_ok;
  return run;
}

// Runs `command` and returns its stdout's JSON lines.
std::vector<nlohmann::json> RunBaseline(const std::string& command) {
  std::vector<nlohmann::json> lines;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return lines;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    auto j = nlohmann::json::parse(buf, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) lines.push_back(std::move(j));
  }
  pclose(p);
  return lines;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct PairRow {
  std::string reference, prediction;
  bool equal;
};

// The agreement set and the verifier's throughput on it (one thread).
void Agreement(double seconds) {
  std::ifstream in(std::string(COHORT_SOURCE_DIR) +
                   "/reward_server/verifiers/testdata/agreement_pairs.jsonl");
  std::vector<PairRow> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    rows.push_back({j["reference"], j["prediction"], j["expected"] == "equal"});
  }
  if (rows.empty()) return;
  int agreed = 0;
  for (const PairRow& r : rows) {
    agreed += cohort::reward::MathEquivalent(r.prediction, r.reference) == r.equal;
  }
  std::printf("%s\n",
              nlohmann::json({{"bench", "math_agreement"},
                              {"agreed", agreed},
                              {"total", rows.size()},
                              {"fraction", std::round(1000.0 * agreed / rows.size()) / 1000}})
                  .dump()
                  .c_str());
  long comparisons = 0;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (const PairRow& r : rows) {
      (void)cohort::reward::MathEquivalent(r.prediction, r.reference);
      ++comparisons;
    }
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::printf("%s\n", nlohmann::json({{"bench", "math_forms"},
                                      {"threads", 1},
                                      {"pairs", rows.size()},
                                      {"comparisons_per_s", std::round(comparisons / elapsed)}})
                          .dump()
                          .c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = std::string(COHORT_SOURCE_DIR) + "/../shared/data";
  double seconds = 2.0;
  int max_threads = 2;
  std::string baseline;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--data") {
      data = argv[i + 1];
    } else if (flag == "--seconds") {
      seconds = std::atof(argv[i + 1]);
    } else if (flag == "--threads") {
      max_threads = std::atoi(argv[i + 1]);
    } else if (flag == "--baseline") {
      baseline = argv[i + 1];
    } else if (flag == "--rounds") {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr,
                   "usage: reward_bench [--data DIR] [--seconds S] [--threads N] "
                   "[--baseline OTHER_BINARY --rounds R]\n");
      return 2;
    }
  }
  auto gsm8k = ReadJsonl(data + "/gsm8k/test.jsonl");
  auto math500 = ReadJsonl(data + "/math500/test.jsonl");
  if (gsm8k.empty() || math500.empty()) {
    std::fprintf(stderr, "reward_bench: no GSM8K/MATH-500 data under %s (use --data)\n",
                 data.c_str());
    return 1;
  }
  struct Set {
    const char* name;
    std::vector<Sample> samples;
  };
  Set sets[] = {{"gsm8k", Gsm8kSamples(gsm8k)}, {"math500", Math500Samples(math500)}};
  // (style, threads) -> samples/s of each round, this binary and the baseline.
  std::map<std::pair<std::string, int>, std::vector<double>> mine, theirs, mine_cpu, theirs_cpu;
  for (int round = 0; round < (baseline.empty() ? 1 : rounds); ++round) {
    if (!baseline.empty()) {
      std::string command = "'" + baseline + "' --data '" + data + "' --seconds " +
                            std::to_string(seconds) + " --threads " + std::to_string(max_threads);
      for (const nlohmann::json& j : RunBaseline(command)) {
        if (j.value("bench", "") != "reward_math") continue;
        std::pair<std::string, int> key{j["style"].get<std::string>(), j["threads"].get<int>()};
        theirs[key].push_back(j["samples_per_s"].get<double>());
        if (j.contains("samples_per_cpu_s")) {
          theirs_cpu[key].push_back(j["samples_per_cpu_s"].get<double>());
        }
      }
    }
    for (const Set& set : sets) {
      double chars = 0;
      for (const Sample& s : set.samples) chars += s.completion.size();
      for (int threads = 1; threads <= max_threads; threads *= 2) {
        Run run = Measure(set.samples, threads, seconds);
        mine[{set.name, threads}].push_back(run.per_second);
        mine_cpu[{set.name, threads}].push_back(run.per_cpu_second);
        nlohmann::json line = {
            {"bench", "reward_math"},
            {"style", set.name},
            {"threads", threads},
            {"samples_per_s", std::round(run.per_second)},
            {"samples_per_cpu_s", std::round(run.per_cpu_second)},
            {"scored", run.scored},
            {"accuracy", std::round(run.accuracy * 1000) / 1000},
            {"not_ok", run.not_ok},
            {"mean_completion_chars", std::round(chars / set.samples.size())},
            {"hardware_threads", std::thread::hardware_concurrency()},
        };
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      }
    }
  }
  for (const auto& [key, values] : mine) {
    auto it = theirs.find(key);
    if (it == theirs.end()) continue;
    // Best of the rounds: on a loaded machine the fastest round is the one
    // least disturbed; the medians are printed too.
    double a = *std::max_element(values.begin(), values.end());
    double b = *std::max_element(it->second.begin(), it->second.end());
    nlohmann::json line = {
        {"bench", "reward_math_ratio"},
        {"style", key.first},
        {"threads", key.second},
        {"rounds", values.size()},
        {"best_samples_per_s", std::round(a)},
        {"baseline_best_samples_per_s", std::round(b)},
        {"median_samples_per_s", std::round(Median(values))},
        {"baseline_median_samples_per_s", std::round(Median(it->second))},
        {"ratio", b > 0 ? std::round(1000 * a / b) / 1000 : 0.0},
    };
    // Per CPU-second, when the baseline reports it too: the robust figure
    // on a machine other processes load.
    auto tc = theirs_cpu.find(key);
    if (tc != theirs_cpu.end() && !tc->second.empty()) {
      const std::vector<double>& mc = mine_cpu[key];
      double c = *std::max_element(mc.begin(), mc.end());
      double d = *std::max_element(tc->second.begin(), tc->second.end());
      line["best_samples_per_cpu_s"] = std::round(c);
      line["baseline_best_samples_per_cpu_s"] = std::round(d);
      line["cpu_ratio"] = d > 0 ? std::round(1000 * c / d) / 1000 : 0.0;
    }
    std::printf("%s\n", line.dump().c_str());
  }
  Agreement(std::min(seconds, 1.0));
  return 0;
}
