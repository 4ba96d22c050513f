// Learner benchmark: tokens/s of one GRPO training step (Trainer::TrainStep:
// policy forward + backward, reference forward, clipped surrogate + k3 KL,
// grad clipping, AdamW) on the `tiny` and `qwen2.5-0.5b` shapes with a fixed
// token budget per step, against the same step written in Python with
// Debian's python3-torch (bench/learner_bench.py, run with /usr/bin/python3:
// the same library as LibTorch). Each measurement is its own process (so
// peak RSS is the step's); cohort and Python alternate, 3 runs each, and the
// median of each is reported. Also the peak RSS of the 0.5B step (beta > 0)
// against weights + grads + AdamW moments + reference (5 x params x 4 B).
//
// No arguments needed: 11 minutes on the 2-core development box at load
// average 11 -> 5 (its measurement processes' CPU time: 7 minutes; the six
// 0.5B processes are two thirds of it). Prints one JSON object per line:
//   {"shape", "tokens_per_step", "cohort_tokens_per_s", "python_tokens_per_s",
//    "ratio", "peak_rss_bytes", "python_peak_rss_bytes", "state_bytes",
//    "rss_over_state", "shape_wall_seconds", ...}
// plus the same per process CPU-second ("*_tokens_per_cpu_s", "cpu_ratio"),
// which is what to compare on a machine shared with other work; then
//   {"total": true, "wall_seconds", "children_cpu_seconds",
//    "load_average_start", "load_average_end"}.
// Measured there (docs/learner.md): tiny 1.61-1.72x Python per CPU-second,
// qwen2.5-0.5b 1.19x (1.40x wall), the 0.5B step's peak RSS 1.10x its state.
//
//   learner_bench [--shapes tiny,tiny-varlen,quickstart,qwen2.5-0.5b] [--runs 3] [--threads 1]
//                 [--checkpointing 1]
// (internal: learner_bench --one PRESET GROUPS G PROMPT COMPLETION STEPS THREADS
//  DETERMINISM VARLEN CHECKPOINTING [FUSED])
//
// quickstart: the quickstart's GRPO step (model preset tiny-quickstart,
// 16 prompts x 8 samples of 16 + 20 tokens).
//
// tiny-varlen: the tiny step with completions of 8..88 tokens (the same
// 8192 tokens): Python pads to the longest as TRL does, cohort packs
// (optim.padding_free); *_row_tokens_per_step say how many positions each
// computed. With --checkpointing 1, one more qwen2.5-0.5b cohort run with
// optim.activation_checkpointing gives checkpointing_peak_rss_bytes and
// checkpointing_tokens_per_s (off by default: it adds a fifth of the time).
//
// On `tiny` it also measures learner.determinism (same threads): the
// trainer's part of deterministic mode costs what that line shows. On the
// tiny shapes it also runs the trainer as it was before its fused path
// (TrainerOptions::fused_kernels and keep_freed_memory off: the plain ATen
// ops, glibc's default malloc trimming): cohort_unfused_tokens_per_cpu_s
// and fused_cpu_ratio (fused over unfused, per CPU-second).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/aten.h"
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "learner/trainer.h"
#include "model/checkpoint.h"

namespace cohort::learner {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  std::string name;    // the line's "shape"
  std::string preset;  // model/presets.h
  int groups, group_size, prompt_len, completion_len, steps;
  bool varlen = false;  // completion lengths vary (CompletionLengths)
};

// Fixed token budget per step: tiny 16 x 8 x 64 = 8192 tokens, 0.5B 2 x 4 x 64 = 512.
// tiny-varlen: the same 8192 tokens, completions of 8..88 tokens (GRPO's
// completions differ in length): Python pads each to the longest, as TRL
// does; cohort packs them (optim.padding_free).
const Shape kShapes[] = {{"tiny", "tiny", 16, 8, 16, 48, 5},
                         {"tiny-varlen", "tiny", 16, 8, 16, 48, 5, true},
                         {"quickstart", "tiny-quickstart", 16, 8, 16, 20, 10},
                         {"qwen2.5-0.5b", "qwen2.5-0.5b", 2, 4, 32, 32, 1}};

// Completion lengths of the n samples: c each, or pairs c - d, c + d with
// d = (13 * pair) % (c - 7), so the total is n * c either way
// (learner_bench.py's completion_lengths).
std::vector<int> CompletionLengths(int n, int c, bool varlen) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const int d = varlen ? (13 * (i / 2)) % (c - 7) : 0;
    out.push_back(i % 2 == 0 ? c - d : c + d);
  }
  return out;
}
constexpr double kBeta = 0.04;

// CPU seconds of this process (all threads): on a machine shared with
// other work, tokens per CPU-second are far steadier than per wall second.
double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The 1-minute load average (-1 if unknown).
double LoadAverage() {
  double l[1];
  return ::getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

int64_t PeakRss() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// One process's measurement of cohort's step (1 warm-up step + `steps`).
int RunOne(const Shape& s, int threads, bool determinism, bool checkpointing, bool fused) {
  absl::StatusOr<model::ModelConfig> config = model::PresetConfig(s.preset);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  TrainerOptions o;
  o.grpo.beta = kBeta;
  o.grpo.epsilon = 0.2;
  o.grpo.epsilon_high = 0.28;
  o.grpo.loss_type = "dapo";
  o.optim.lr = 1e-6;
  o.optim.max_grad_norm = 1.0;
  o.optim.micro_batch_tokens = s.groups * s.group_size * (s.prompt_len + s.completion_len);
  o.max_completion_length = s.completion_len;
  o.threads = threads;
  o.determinism = determinism;
  o.activation_checkpointing = checkpointing;
  o.fused_kernels = fused;
  o.keep_freed_memory = fused;
  auto trainer = Trainer::Create(*config, model::RandomInitWeights(*config, 1), o);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(trainer.status().message()).c_str());
    return 1;
  }
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config->vocab_size - 1));
  std::vector<TrainGroup> batch(s.groups);
  const std::vector<int> lengths =
      CompletionLengths(s.groups * s.group_size, s.completion_len, s.varlen);
  for (int g = 0; g < s.groups; ++g) {
    for (int i = 0; i < s.prompt_len; ++i) batch[g].prompt_tokens.push_back(tok(rng));
    for (int k = 0; k < s.group_size; ++k) {
      TrainSample sample;
      const int len = lengths[g * s.group_size + k];
      for (int i = 0; i < len; ++i) sample.tokens.push_back(tok(rng));
      sample.logprobs.assign(len, -5.0f);
      sample.versions.assign(len, 0);
      sample.ok = true;
      sample.reward = static_cast<double>(rng() % 2);
      batch[g].samples.push_back(std::move(sample));
    }
  }
  std::vector<double> times;
  double cpu_total = 0;        // process CPU seconds of the timed steps
  double last_row_tokens = 0;  // rows x width the trainer computed (padding included)
  for (int step = 0; step < 1 + s.steps; ++step) {
    const auto start = Clock::now();
    const double cpu_start = ProcessCpuSeconds();
    absl::StatusOr<StepResult> r = (*trainer)->TrainStep(batch);
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (step > 0) cpu_total += ProcessCpuSeconds() - cpu_start;
    if (!r.ok() || r->skipped) {
      std::fprintf(stderr, "step failed: %s\n",
                   r.ok() ? r->skip_reason.c_str() : std::string(r.status().message()).c_str());
      return 1;
    }
    if (step > 0) times.push_back(secs);
    last_row_tokens = r->metrics.at("row_tokens");
  }
  double total = 0;
  for (double t : times) total += t;
  const double tokens =
      static_cast<double>(s.groups) * s.group_size * (s.prompt_len + s.completion_len);
  nlohmann::json j = {{"tokens_per_s", tokens * times.size() / total},
                      {"tokens_per_cpu_s", tokens * times.size() / cpu_total},
                      {"step_seconds", times},
                      {"row_tokens", last_row_tokens},
                      {"peak_rss_bytes", PeakRss()},
                      {"threads", at::get_num_threads()}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// Runs `cmd` and parses the last line of its stdout as JSON.
absl::StatusOr<nlohmann::json> RunJson(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return absl::InternalError("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  if (rc != 0 || lines.empty()) {
    return absl::InternalError(absl::StrCat("`", cmd, "` failed (status ", rc, "): ", out));
  }
  nlohmann::json j = nlohmann::json::parse(lines.back(), nullptr, false);
  if (j.is_discarded()) return absl::InternalError("not JSON: " + lines.back());
  return j;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Run(int argc, char** argv) {
  if (argc >= 12 && std::string(argv[1]) == "--one") {
    Shape s{argv[2],
            argv[2],
            std::stoi(argv[3]),
            std::stoi(argv[4]),
            std::stoi(argv[5]),
            std::stoi(argv[6]),
            std::stoi(argv[7]),
            std::string(argv[10]) == "1"};
    return RunOne(s, std::stoi(argv[8]), std::string(argv[9]) == "1", std::string(argv[11]) == "1",
                  argc < 13 || std::string(argv[12]) == "1");
  }
  std::vector<std::string> shapes = {"tiny", "tiny-varlen", "quickstart", "qwen2.5-0.5b"};
  int runs = 3, threads = 1;
  bool checkpointing_rss = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--shapes")
      shapes = absl::StrSplit(argv[i + 1], ',');
    else if (flag == "--runs")
      runs = std::stoi(argv[i + 1]);
    else if (flag == "--threads")
      threads = std::stoi(argv[i + 1]);
    else if (flag == "--checkpointing")
      checkpointing_rss = std::string(argv[i + 1]) == "1";
    else {
      std::fprintf(stderr, "learner_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return 1;
  self[len] = '\0';
  const std::string script = COHORT_SOURCE_DIR "/bench/learner_bench.py";
  const bool have_python = ::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  const auto bench_start = Clock::now();
  const double load_start = LoadAverage();
  for (const Shape& s : kShapes) {
    if (std::find(shapes.begin(), shapes.end(), s.name) == shapes.end()) continue;
    const auto shape_start = Clock::now();
    absl::StatusOr<model::ModelConfig> config = model::PresetConfig(s.preset);
    if (!config.ok()) return 1;
    const std::string cfg_path =
        absl::StrCat("/tmp/learner_bench_", ::getpid(), "_", s.name, ".json");
    std::ofstream(cfg_path) << config->ToJson();
    int64_t params = 0;
    for (const auto& spec : model::ExpectedTensors(*config)) {
      int64_t n = 1;
      for (int64_t d : spec.shape) n *= d;
      params += n;
    }
    std::vector<double> ours, theirs, deterministic, ours_cpu, theirs_cpu, deterministic_cpu;
    std::vector<double> unfused, unfused_cpu;
    int64_t rss = 0, py_rss = 0;
    double row_tokens = 0;
    nlohmann::json checkpointed;
    std::string error;
    for (int r = 0; r < runs; ++r) {
      // Both sides get the same OMP_NUM_THREADS (OpenBLAS follows it too).
      // --one SHAPE(preset) ... THREADS DETERMINISM VARLEN CHECKPOINTING
      const std::string one = absl::StrCat(
          "OMP_NUM_THREADS=", threads, " ", self, " --one ", s.preset, " ", s.groups, " ",
          s.group_size, " ", s.prompt_len, " ", s.completion_len, " ", s.steps, " ", threads);
      const std::string varlen = s.varlen ? " 1" : " 0";
      if (s.preset != "qwen2.5-0.5b") {
        // The trainer without its fused path (fused_kernels, keep_freed_memory off).
        absl::StatusOr<nlohmann::json> u = RunJson(one + " 0" + varlen + " 0 0");
        if (u.ok()) {
          unfused.push_back((*u)["tokens_per_s"].get<double>());
          unfused_cpu.push_back((*u)["tokens_per_cpu_s"].get<double>());
        }
      }
      if (s.name == "tiny") {
        absl::StatusOr<nlohmann::json> d = RunJson(one + " 1" + varlen + " 0");
        if (d.ok()) {
          deterministic.push_back((*d)["tokens_per_s"].get<double>());
          deterministic_cpu.push_back((*d)["tokens_per_cpu_s"].get<double>());
        }
      }
      if (checkpointing_rss && s.name == "qwen2.5-0.5b" && r == 0) {
        // Once: the same step with optim.activation_checkpointing.
        absl::StatusOr<nlohmann::json> k = RunJson(one + " 0" + varlen + " 1");
        if (k.ok()) checkpointed = *k;
      }
      absl::StatusOr<nlohmann::json> c = RunJson(one + " 0" + varlen + " 0");
      if (!c.ok()) {
        error = std::string(c.status().message());
        break;
      }
      ours.push_back((*c)["tokens_per_s"].get<double>());
      ours_cpu.push_back((*c)["tokens_per_cpu_s"].get<double>());
      row_tokens = (*c)["row_tokens"].get<double>();
      rss = std::max(rss, (*c)["peak_rss_bytes"].get<int64_t>());
      if (!have_python) continue;
      absl::StatusOr<nlohmann::json> p = RunJson(
          absl::StrCat("OMP_NUM_THREADS=", threads, " /usr/bin/python3 ", script, " --config ",
                       cfg_path, " --groups ", s.groups, " --group_size ", s.group_size,
                       " --prompt_len ", s.prompt_len, " --completion_len ", s.completion_len,
                       " --steps ", s.steps, " --beta ", kBeta, " --varlen ", s.varlen ? 1 : 0));
      if (!p.ok()) {
        error = std::string(p.status().message());
        break;
      }
      theirs.push_back((*p)["tokens_per_s"].get<double>());
      theirs_cpu.push_back((*p)["tokens_per_cpu_s"].get<double>());
      py_rss = std::max(py_rss, (*p)["peak_rss_bytes"].get<int64_t>());
    }
    std::remove(cfg_path.c_str());
    const int64_t state = params * 4 * 5;  // weights, grads, 2 AdamW moments, reference
    nlohmann::json j = {
        {"shape", s.name},
        {"tokens_per_step", s.groups * s.group_size * (s.prompt_len + s.completion_len)},
        {"completion_lengths", s.varlen ? "varied" : "equal"},
        {"cohort_row_tokens_per_step", row_tokens},
        {"python_row_tokens_per_step",
         [&] {
           const std::vector<int> l =
               CompletionLengths(s.groups * s.group_size, s.completion_len, s.varlen);
           return static_cast<double>(l.size()) *
                  (s.prompt_len + *std::max_element(l.begin(), l.end()));
         }()},
        {"beta", kBeta},
        {"threads", threads},
        {"runs", ours.size()},
        {"cohort_tokens_per_s", Median(ours)},
        {"peak_rss_bytes", rss},
        {"params", params},
        {"state_bytes", state},
        {"rss_over_state", static_cast<double>(rss) / static_cast<double>(state)}};
    if (!checkpointed.is_null()) {
      const int64_t k = checkpointed["peak_rss_bytes"].get<int64_t>();
      j["checkpointing_peak_rss_bytes"] = k;
      j["checkpointing_rss_over_state"] = static_cast<double>(k) / static_cast<double>(state);
      j["checkpointing_tokens_per_s"] = checkpointed["tokens_per_s"];
    }
    if (!unfused.empty()) {
      j["cohort_unfused_tokens_per_s"] = Median(unfused);
      j["cohort_unfused_tokens_per_cpu_s"] = Median(unfused_cpu);
      j["fused_cpu_ratio"] = Median(ours_cpu) / Median(unfused_cpu);
    }
    if (!deterministic.empty()) {
      j["cohort_deterministic_tokens_per_s"] = Median(deterministic);
      j["cohort_deterministic_tokens_per_cpu_s"] = Median(deterministic_cpu);
      j["determinism_cpu_ratio"] = Median(deterministic_cpu) / Median(ours_cpu);
    }
    if (!theirs.empty()) {
      j["python_tokens_per_s"] = Median(theirs);
      j["ratio"] = Median(ours) / Median(theirs);
      j["cohort_tokens_per_cpu_s"] = Median(ours_cpu);
      j["python_tokens_per_cpu_s"] = Median(theirs_cpu);
      j["cpu_ratio"] = Median(ours_cpu) / Median(theirs_cpu);
      j["python_peak_rss_bytes"] = py_rss;
    } else {
      j["python_tokens_per_s"] = nullptr;
      j["ratio"] = nullptr;
      j["note"] = have_python ? "python run failed"
                              : "/usr/bin/python3 has no torch (apt-get install python3-torch)";
    }
    if (!error.empty()) j["error"] = error;
    j["shape_wall_seconds"] = std::chrono::duration<double>(Clock::now() - shape_start).count();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  // The whole run: wall seconds, and the CPU seconds of all measurement
  // processes (each single-threaded with --threads 1, so about the wall
  // time the run takes on an idle machine), with the load average.
  struct rusage children;
  getrusage(RUSAGE_CHILDREN, &children);
  const double children_cpu =
      static_cast<double>(children.ru_utime.tv_sec + children.ru_stime.tv_sec) +
      1e-6 * static_cast<double>(children.ru_utime.tv_usec + children.ru_stime.tv_usec);
  nlohmann::json total = {
      {"total", true},
      {"wall_seconds", std::chrono::duration<double>(Clock::now() - bench_start).count()},
      {"children_cpu_seconds", children_cpu},
      {"load_average_start", load_start},
      {"load_average_end", LoadAverage()}};
  std::printf("%s\n", total.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace cohort::learner

int main(int argc, char** argv) { return cohort::learner::Run(argc, argv); }
