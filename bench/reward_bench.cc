// Throughput of the `math` verifier (answer extraction + equivalence) on
// realistic completions, single-threaded and with N threads. Prints one JSON
// object per line.
//
//   reward_bench [--data DIR] [--seconds S] [--threads N]
//
// GSM8K-style completions are the GSM8K test solutions inside <think> tags,
// ending in "#### N" or "The answer is \boxed{N}."; MATH-500-style ones are
// the MATH-500 reference solutions (with their \boxed{} answer). A quarter
// of each set is made wrong (another item's answer) so that both verdicts
// are exercised.
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "reward_server/verifiers/math_accuracy.h"

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

struct Run {
  double per_second = 0;
  long scored = 0;
  double accuracy = 0;
  long not_ok = 0;
};

Run Measure(const std::vector<Sample>& samples, int threads, double seconds) {
  std::atomic<long> total{0};
  std::atomic<long> correct{0};
  std::atomic<long> not_ok{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pool;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
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
  run.accuracy = total ? static_cast<double>(correct) / total : 0;
  run.not_ok = not_ok;
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = std::string(COHORT_SOURCE_DIR) + "/../shared/data";
  double seconds = 2.0;
  int max_threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--data") {
      data = argv[i + 1];
    } else if (flag == "--seconds") {
      seconds = std::atof(argv[i + 1]);
    } else if (flag == "--threads") {
      max_threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: reward_bench [--data DIR] [--seconds S] [--threads N]\n");
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
  for (const Set& set : sets) {
    double chars = 0;
    for (const Sample& s : set.samples) chars += s.completion.size();
    for (int threads = 1; threads <= max_threads; threads *= 2) {
      Run run = Measure(set.samples, threads, seconds);
      nlohmann::json line = {
          {"bench", "reward_math"},
          {"style", set.name},
          {"threads", threads},
          {"samples_per_s", std::round(run.per_second)},
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
  return 0;
}
