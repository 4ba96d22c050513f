// Token sampling: temperature, top-k, top-p, per-sample seeded RNG.
//
// Semantics (in this order, as Hugging Face applies them):
//   temperature == 0  greedy: the arg-max token (ties: the lowest id).
//   otherwise         p = softmax(logits / temperature) over the full
//                     vocabulary; keep the top_k most likely tokens
//                     (top_k == 0: all); then keep the smallest set of most
//                     likely tokens whose mass reaches top_p (top_p >= 1:
//                     all); draw from the kept set renormalized.
// Behaviour log-prob: log_softmax(logits / T) at the drawn token over the
// FULL vocabulary (T = 1 when greedy), i.e. the quantity the learner's scorer
// computes. With top-k / top-p truncation the sampling distribution differs
// from it, so importance ratios carry that truncation bias; RL configs
// therefore default to top_p = 1 and top_k = 0.
//
// Reproducibility: each sample owns a SampleRng seeded from (request seed,
// sample index); one uniform draw per token. The drawn token depends only on
// that sample's logits and RNG, never on the other sequences in the batch.
//
// Thread-safety: SampleRng is a value type (not shared); the functions are
// pure.
#ifndef COHORT_MODEL_SAMPLER_H_
#define COHORT_MODEL_SAMPLER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace cohort::model {

struct SamplingParams {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  int64_t max_new_tokens = 256;
  std::vector<std::string> stop;  // stop strings (matched on decoded text)
  uint64_t seed = 0;

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
};

// splitmix64: small, fast, and good enough for sampling; the stream of a
// sample is a pure function of its seed.
class SampleRng {
 public:
  explicit SampleRng(uint64_t seed = 0) : state_(seed) {}
  // The RNG of sample `index` of a request seeded with `seed`.
  static SampleRng ForSample(uint64_t seed, int64_t index);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform();

 private:
  uint64_t state_;
};

struct SampledToken {
  int32_t id = 0;
  float logprob = 0;  // behaviour log-prob, see above
};

// Samples one token given `logprobs` = log_softmax(logits / T) over the
// vocabulary (T = 1 when greedy): see TemperatureLogProbs.
SampledToken SampleFromLogProbs(const float* logprobs, int64_t vocab, const SamplingParams& params,
                                SampleRng& rng);

// log_softmax(logits / T) per row, computed on the logits' device and
// returned fp32 on the CPU, contiguous; `logits` is [n, vocab] and
// temperatures[i] applies to row i (0 means greedy: T = 1).
at::Tensor TemperatureLogProbs(const at::Tensor& logits, const std::vector<double>& temperatures);

}  // namespace cohort::model

#endif  // COHORT_MODEL_SAMPLER_H_
