// Log-prob scoring for training: a batched, padded, masked forward over full
// sequences (prompt + completion) returning the log-prob of each given token.
//
// Definition: logprob[b, t] = log_softmax(logits[b, t] / T)[tokens[b, t + 1]]
// over the full vocabulary, the same quantity the engine records as the
// behaviour log-prob (sampler.h); T = 1 scores the policy itself.
//
// Differentiable: with ScoreOptions::keep_graph and grad mode on, the result
// carries autograd history back to the transformer's weights (set
// requires_grad on Transformer::weights()); otherwise it runs without grad.
//
// Thread-safety: as the Transformer it runs (one thread at a time).
#ifndef COHORT_MODEL_SCORING_H_
#define COHORT_MODEL_SCORING_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "model/transformer.h"

namespace cohort::model {

struct ScoreOptions {
  double temperature = 1.0;  // must be > 0
  bool keep_graph = false;   // keep autograd history (training)
};

// tokens, attention_mask: [B, T] (1 real, 0 padding, left or right).
// Returns [B, T - 1] fp32: entry t scores tokens[:, t + 1] given the tokens
// up to t; 0 where either position is padding.
absl::StatusOr<at::Tensor> TokenLogProbs(const Transformer& model, const at::Tensor& tokens,
                                         const at::Tensor& attention_mask,
                                         const ScoreOptions& options = {});

struct ScoredSequence {
  std::vector<int32_t> prompt;      // non-empty
  std::vector<int32_t> completion;  // may be empty
};

// The log-prob of every completion token of each sequence (right-padded into
// one batch, no autograd); result[i].size() == sequences[i].completion.size().
absl::StatusOr<std::vector<std::vector<float>>> CompletionLogProbs(
    const Transformer& model, const std::vector<ScoredSequence>& sequences,
    double temperature = 1.0);

}  // namespace cohort::model

#endif  // COHORT_MODEL_SCORING_H_
