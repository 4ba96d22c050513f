#include "model/scoring.h"

#include <algorithm>
#include <optional>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/torch_error.h"

namespace cohort::model {

absl::StatusOr<at::Tensor> TokenLogProbs(const Transformer& model, const at::Tensor& tokens,
                                         const at::Tensor& attention_mask,
                                         const ScoreOptions& options) {
  if (!(options.temperature > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("score: temperature must be > 0, got ", options.temperature));
  }
  if (tokens.dim() != 2 || tokens.size(1) < 2) {
    return absl::InvalidArgumentError("score: tokens must be [batch, time] with time >= 2");
  }
  std::optional<at::NoGradGuard> no_grad;
  if (!options.keep_graph) no_grad.emplace();
  ASSIGN_OR_RETURN(at::Tensor logits, model.Forward(tokens, attention_mask));
  try {
    const int64_t t = tokens.size(1);
    at::Tensor ids = tokens.to(logits.device(), at::kLong);
    at::Tensor mask = attention_mask.to(logits.device()).to(at::kBool);
    at::Tensor scaled = logits.narrow(1, 0, t - 1);
    if (options.temperature != 1.0) {
      scaled = scaled * static_cast<float>(1.0 / options.temperature);
    }
    at::Tensor next = ids.narrow(1, 1, t - 1).unsqueeze(-1);
    at::Tensor picked = scaled.gather(-1, next).squeeze(-1);
    at::Tensor logprobs = picked - at::logsumexp(scaled, -1);
    at::Tensor valid = at::logical_and(mask.narrow(1, 0, t - 1), mask.narrow(1, 1, t - 1));
    return logprobs * valid.to(at::kFloat);
  } catch (const std::exception& e) {
    return TorchError("score", e);
  }
}

namespace {

absl::StatusOr<std::vector<std::vector<float>>> CompletionLogProbsUnguarded(
    const Transformer& model, const std::vector<ScoredSequence>& sequences, double temperature) {
  if (sequences.empty()) return std::vector<std::vector<float>>();
  int64_t t = 2;
  for (const ScoredSequence& s : sequences) {
    if (s.prompt.empty()) {
      return absl::InvalidArgumentError("score: empty prompt");
    }
    t = std::max<int64_t>(t, s.prompt.size() + s.completion.size());
  }
  const int64_t b = static_cast<int64_t>(sequences.size());
  at::Tensor tokens = at::zeros({b, t}, at::kLong);
  at::Tensor mask = at::zeros({b, t}, at::kLong);
  auto tok = tokens.accessor<int64_t, 2>();
  auto msk = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    int64_t j = 0;
    for (int32_t id : sequences[i].prompt) {
      tok[i][j] = id;
      msk[i][j++] = 1;
    }
    for (int32_t id : sequences[i].completion) {
      tok[i][j] = id;
      msk[i][j++] = 1;
    }
  }
  ScoreOptions options;
  options.temperature = temperature;
  ASSIGN_OR_RETURN(at::Tensor logprobs, TokenLogProbs(model, tokens, mask, options));
  at::Tensor cpu = logprobs.to(at::kCPU, at::kFloat).contiguous();
  auto lp = cpu.accessor<float, 2>();
  std::vector<std::vector<float>> out(b);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t p = static_cast<int64_t>(sequences[i].prompt.size());
    for (size_t k = 0; k < sequences[i].completion.size(); ++k) {
      out[i].push_back(lp[i][p - 1 + static_cast<int64_t>(k)]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> CompletionLogProbs(
    const Transformer& model, const std::vector<ScoredSequence>& sequences, double temperature) {
  return GuardTorch("score",
                    [&] { return CompletionLogProbsUnguarded(model, sequences, temperature); });
}

}  // namespace cohort::model
