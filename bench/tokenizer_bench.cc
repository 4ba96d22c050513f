// Tokenizer encode throughput, single thread, printed as JSON lines.
//
//   tokenizer_bench --tokenizer DIR/tokenizer.json --corpus golden.jsonl
//
// The corpus is every "text" of a JSONL file, repeated until it holds at
// least --min_mb megabytes; each text is encoded separately, without special
// tokens. bench/tokenizer_bench.sh runs this and Hugging Face's tokenizer on
// the same corpus.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/flags.h"
#include "core/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

// CPU seconds of this process (all threads): fairer than wall time on a
// shared, busy machine.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path = "../shared/data/tokenizers/qwen3/tokenizer.json";
  std::string corpus_path = "../shared/data/tokenizers/qwen3/golden.jsonl";
  double min_mb = 10;
  cohort::FlagSet flags("tokenizer_bench", "Encode throughput of cohort's tokenizer (JSON lines).");
  flags.String("tokenizer", &tokenizer_path, "tokenizer.json to load.");
  flags.String("corpus", &corpus_path, "JSONL file whose \"text\" fields make the corpus.");
  flags.Double("min_mb", &min_mb,
               "Repeat the texts until the corpus has this many MB (1e6 bytes).");
  cohort::ParseFlagsOrExit(flags, argc, argv);

  std::vector<std::string> texts;
  size_t unique_bytes = 0;
  {
    std::ifstream in(corpus_path);
    if (!in) {
      std::fprintf(stderr, "tokenizer_bench: cannot open corpus %s\n", corpus_path.c_str());
      return 1;
    }
    std::string line;
    size_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.contains("text") || !j["text"].is_string()) {
        std::fprintf(stderr, "tokenizer_bench: %s line %zu has no \"text\" string\n",
                     corpus_path.c_str(), line_no);
        return 1;
      }
      texts.push_back(j["text"].get<std::string>());
      unique_bytes += texts.back().size();
    }
  }
  if (texts.empty()) {
    std::fprintf(stderr, "tokenizer_bench: corpus %s is empty\n", corpus_path.c_str());
    return 1;
  }
  size_t repeats = static_cast<size_t>(min_mb * 1e6 / static_cast<double>(unique_bytes)) + 1;

  auto t0 = std::chrono::steady_clock::now();
  auto tok = cohort::Tokenizer::FromFile(tokenizer_path);
  if (!tok.ok()) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  double load_s = Seconds(t0);

  std::vector<int32_t> ids;
  ids.reserve(1 << 16);
  size_t bytes = 0, tokens = 0;
  t0 = std::chrono::steady_clock::now();
  double cpu0 = CpuSeconds();
  for (size_t r = 0; r < repeats; ++r) {
    for (const std::string& text : texts) {
      ids.clear();
      (*tok)->EncodeTo(text, /*add_special_tokens=*/false, &ids);
      bytes += text.size();
      tokens += ids.size();
    }
  }
  double secs = Seconds(t0);
  double cpu_secs = CpuSeconds() - cpu0;
  std::printf(
      "{\"bench\":\"tokenizer_encode\",\"impl\":\"cohort\",\"threads\":1,\"texts\":%zu,"
      "\"repeats\":%zu,\"bytes\":%zu,\"tokens\":%zu,\"seconds\":%.4f,\"mb_per_s\":%.2f,"
      "\"cpu_seconds\":%.4f,\"cpu_mb_per_s\":%.2f,\"load_seconds\":%.3f}\n",
      texts.size() * repeats, repeats, bytes, tokens, secs, static_cast<double>(bytes) / 1e6 / secs,
      cpu_secs, static_cast<double>(bytes) / 1e6 / cpu_secs, load_s);
  return 0;
}
