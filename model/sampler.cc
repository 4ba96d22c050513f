#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/aten.h"

#include "absl/strings/str_cat.h"

namespace cohort::model {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: top_k must be >= 0, got ", top_k));
  }
  if (!(top_p > 0 && top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: top_p must be in (0, 1], got ", top_p));
  }
  if (max_new_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: max_new_tokens must be positive, got ", max_new_tokens));
  }
  for (const std::string& s : stop) {
    if (s.empty()) {
      return absl::InvalidArgumentError("sampling: empty stop string");
    }
  }
  return absl::OkStatus();
}

SampleRng SampleRng::ForSample(uint64_t seed, int64_t index) {
  SampleRng mix(seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(index + 1)));
  return SampleRng(mix.Next());
}

uint64_t SampleRng::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double SampleRng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

SampledToken SampleFromLogProbs(const float* logprobs, int64_t vocab, const SamplingParams& params,
                                SampleRng& rng) {
  SampledToken out;
  if (params.temperature == 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logprobs[i] > logprobs[best]) best = i;
    }
    out.id = static_cast<int32_t>(best);
    out.logprob = logprobs[best];
    return out;
  }
  const double u = rng.Uniform();
  const bool truncate = (params.top_k > 0 && params.top_k < vocab) || params.top_p < 1.0;
  int64_t chosen = -1;
  if (!truncate) {
    // log-probs are normalized, so the mass is 1 up to rounding.
    const double target = u;
    double cum = 0;
    int64_t last_positive = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double p = std::exp(logprobs[i]);
      if (p > 0) last_positive = i;
      cum += p;
      if (cum > target && p > 0) {
        chosen = i;
        break;
      }
    }
    if (chosen < 0) chosen = last_positive;  // rounding at the very end
  } else {
    // Candidates by descending probability (ties: lower id first).
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    auto more_likely = [logprobs](int32_t a, int32_t b) {
      return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
    };
    int64_t kept = vocab;
    if (params.top_k > 0 && params.top_k < vocab) {
      kept = params.top_k;
      std::partial_sort(order.begin(), order.begin() + kept, order.end(), more_likely);
    } else {
      std::sort(order.begin(), order.end(), more_likely);
    }
    // Renormalize over the top-k set, then cut at top_p mass.
    double mass = 0;
    for (int64_t i = 0; i < kept; ++i) mass += std::exp(logprobs[order[i]]);
    if (params.top_p < 1.0) {
      double cum = 0;
      for (int64_t i = 0; i < kept; ++i) {
        cum += std::exp(logprobs[order[i]]) / mass;
        if (cum >= params.top_p) {
          kept = i + 1;
          break;
        }
      }
    }
    double total = 0;
    for (int64_t i = 0; i < kept; ++i) total += std::exp(logprobs[order[i]]);
    const double target = u * total;
    double cum = 0;
    chosen = order[kept - 1];
    for (int64_t i = 0; i < kept; ++i) {
      cum += std::exp(logprobs[order[i]]);
      if (cum > target) {
        chosen = order[i];
        break;
      }
    }
  }
  out.id = static_cast<int32_t>(chosen);
  out.logprob = logprobs[chosen];
  return out;
}

at::Tensor TemperatureLogProbs(const at::Tensor& logits, const std::vector<double>& temperatures) {
  std::vector<float> inv(temperatures.size());
  for (size_t i = 0; i < temperatures.size(); ++i) {
    inv[i] = temperatures[i] > 0 ? static_cast<float>(1.0 / temperatures[i]) : 1.0f;
  }
  // On the logits' device (a GPU computes the log-softmax of a large batch
  // far faster than the host), then to the CPU for the sampler's scan.
  at::Tensor x = logits.to(at::kFloat);
  const bool all_one = std::all_of(inv.begin(), inv.end(), [](float v) { return v == 1.0f; });
  if (!all_one) {
    x = x * at::tensor(at::ArrayRef<float>(inv), at::kFloat).to(x.device()).unsqueeze(1);
  }
  return at::log_softmax(x, -1).to(at::kCPU).contiguous();
}

}  // namespace cohort::model
