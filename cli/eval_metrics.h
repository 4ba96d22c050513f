// The numbers `cohort eval` reports, from per-sample outcomes. Torch-free.
//
//   pass_at_1    mean over problems of (correct samples / n): greedy accuracy
//                with --greedy (n = 1)
//   cons_at_k    majority vote over the n samples' extracted answers (ties:
//                the answer seen first), as DeepSeek-R1 reports cons@64
//   pass_at_k    the unbiased estimator of Chen et al. (2021):
//                mean over problems of 1 - C(n - c, k) / C(n, k), n >= k
//   format_rate  fraction of all samples with the expected format
//
// Thread-safety: pure functions.
#ifndef COHORT_CLI_EVAL_METRICS_H_
#define COHORT_CLI_EVAL_METRICS_H_

#include <string>
#include <vector>

namespace cohort::cli {

struct SampleOutcome {
  bool correct = false;
  bool formatted = false;
  std::string answer;  // extracted final answer; "" = none
};

struct EvalMetrics {
  double pass_at_1 = 0, cons_at_k = 0, pass_at_k = 0, format_rate = 0;
  double mean_length = 0;  // completion tokens, when given
  int k = 0, n = 0;
  int problems = 0;
};

// 1 - C(n - c, k) / C(n, k), computed as a product (no overflow).
double PassAtK(int n, int c, int k);

// `outcomes[i]` holds problem i's n samples (every problem the same n).
EvalMetrics ComputeEvalMetrics(const std::vector<std::vector<SampleOutcome>>& outcomes, int k);

}  // namespace cohort::cli

#endif  // COHORT_CLI_EVAL_METRICS_H_
