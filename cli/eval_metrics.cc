#include "cli/eval_metrics.h"

#include <map>

namespace cohort::cli {

double PassAtK(int n, int c, int k) {
  if (n - c < k) return 1.0;
  double miss = 1.0;
  for (int i = n - c + 1; i <= n; ++i) miss *= 1.0 - static_cast<double>(k) / i;
  return 1.0 - miss;
}

EvalMetrics ComputeEvalMetrics(const std::vector<std::vector<SampleOutcome>>& outcomes, int k) {
  EvalMetrics m;
  m.k = k;
  m.problems = static_cast<int>(outcomes.size());
  if (outcomes.empty()) return m;
  m.n = static_cast<int>(outcomes[0].size());
  int64_t samples = 0, formatted = 0;
  for (const auto& problem : outcomes) {
    int n = static_cast<int>(problem.size()), c = 0;
    std::map<std::string, int> votes;
    std::map<std::string, bool> answer_correct;
    std::vector<std::string> order;
    for (const SampleOutcome& s : problem) {
      c += s.correct;
      formatted += s.formatted;
      ++samples;
      if (s.answer.empty()) continue;
      if (votes[s.answer]++ == 0) order.push_back(s.answer);
      answer_correct[s.answer] = answer_correct[s.answer] || s.correct;
    }
    if (n == 0) continue;
    m.pass_at_1 += static_cast<double>(c) / n;
    m.pass_at_k += PassAtK(n, c, k);
    std::string best;
    int best_votes = 0;
    for (const std::string& a : order) {
      if (votes[a] > best_votes) best = a, best_votes = votes[a];
    }
    m.cons_at_k += !best.empty() && answer_correct[best];
  }
  m.pass_at_1 /= m.problems;
  m.pass_at_k /= m.problems;
  m.cons_at_k /= m.problems;
  m.format_rate = samples ? static_cast<double>(formatted) / samples : 0;
  return m;
}

}  // namespace cohort::cli
