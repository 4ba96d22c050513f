// cohort-dump-logits: runs cohort's transformer over a fixed input and
// writes the fp32 logits as JSON, for the Hugging Face reference check
// (scripts/device/check_hf_logits.py compares them with transformers').
//
//   cohort-dump-logits --model DIR --ids 1,2,3 --out logits.json
//
// Output: {"model": DIR, "ids": [...], "dtype": "float32",
//          "shape": [T, vocab], "logits": [[...], ...]} (row t = logits
// after token t; each value printed with 9 significant digits, which reads
// back as the same float32).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
// clang-format on

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/flags.h"
#include "core/status.h"
#include "model/checkpoint.h"
#include "model/transformer.h"

namespace {

absl::StatusOr<std::vector<int64_t>> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids: '", part, "' is not a non-negative integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--ids is empty");
  return ids;
}

absl::Status Dump(const std::string& dir, const std::string& ids_text, const std::string& out) {
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, ParseIds(ids_text));
  ASSIGN_OR_RETURN(cohort::model::LoadedModel model, cohort::model::LoadModelDir(dir, at::kFloat));
  for (int64_t id : ids) {
    if (id >= model.config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids: ", id, " is outside the vocabulary of ", model.config.vocab_size));
    }
  }
  ASSIGN_OR_RETURN(auto transformer,
                   cohort::model::Transformer::Create(model.config, std::move(model.weights),
                                                      at::kFloat, at::Device(at::kCPU)));
  const int64_t t = static_cast<int64_t>(ids.size());
  at::Tensor tokens = at::tensor(ids, at::kLong).reshape({1, t});
  at::Tensor mask = at::ones({1, t}, at::kLong);
  ASSIGN_OR_RETURN(at::Tensor logits, transformer->Forward(tokens, mask));
  logits = logits.to(at::kFloat).contiguous().reshape({t, -1});
  const int64_t vocab = logits.size(1);
  const float* data = logits.data_ptr<float>();

  std::string text = absl::StrCat("{\"model\": \"", dir, "\", \"ids\": [");
  for (int64_t i = 0; i < t; ++i) absl::StrAppend(&text, i ? ", " : "", ids[i]);
  absl::StrAppend(&text, "], \"dtype\": \"float32\", \"shape\": [", t, ", ", vocab,
                  "], \"logits\": [");
  char buf[32];
  for (int64_t i = 0; i < t; ++i) {
    text += i ? ",\n[" : "\n[";
    for (int64_t v = 0; v < vocab; ++v) {
      std::snprintf(buf, sizeof(buf), "%s%.9g", v ? "," : "", data[i * vocab + v]);
      text += buf;
    }
    text += "]";
  }
  text += "]}\n";
  std::ofstream f(out);
  f << text;
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("writing '", out, "' failed"));
  std::printf("wrote %s: logits [%lld, %lld] of %s\n", out.c_str(), static_cast<long long>(t),
              static_cast<long long>(vocab), dir.c_str());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, ids, out;
  cohort::FlagSet flags("cohort-dump-logits",
                        "Writes the fp32 logits of cohort's transformer for a fixed input "
                        "(one full forward pass on the CPU) as JSON.");
  flags.String("model", &model, "Model directory (config.json + safetensors).");
  flags.String("ids", &ids, "Comma-separated input token ids.");
  flags.String("out", &out, "Output JSON file.");
  cohort::ParseFlagsOrExit(flags, argc, argv);
  if (model.empty() || ids.empty() || out.empty()) {
    std::fprintf(stderr, "cohort-dump-logits: --model, --ids and --out are required\n");
    return 2;
  }
  absl::Status s = Dump(model, ids, out);
  if (!s.ok()) {
    std::fprintf(stderr, "cohort-dump-logits: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
