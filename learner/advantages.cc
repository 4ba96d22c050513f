#include "learner/advantages.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace cohort::learner {
namespace {

struct Moments {
  int n = 0;
  double mean = 0;
  double std = 0;  // sample std (N - 1); 0 when n < 2
};

Moments OkMoments(const GroupRewards& g) {
  Moments m;
  double sum = 0;
  for (size_t i = 0; i < g.rewards.size(); ++i) {
    if (g.ok[i]) {
      sum += g.rewards[i];
      ++m.n;
    }
  }
  if (m.n == 0) return m;
  m.mean = sum / m.n;
  if (m.n < 2) return m;
  double ss = 0;
  for (size_t i = 0; i < g.rewards.size(); ++i) {
    if (g.ok[i]) ss += (g.rewards[i] - m.mean) * (g.rewards[i] - m.mean);
  }
  m.std = std::sqrt(ss / (m.n - 1));
  return m;
}

}  // namespace

int CountOk(const GroupRewards& group) {
  int n = 0;
  for (size_t i = 0; i < group.ok.size(); ++i) n += group.ok[i] ? 1 : 0;
  return n;
}

bool AllRewardsEqual(const GroupRewards& group) {
  bool seen = false;
  double first = 0;
  for (size_t i = 0; i < group.rewards.size() && i < group.ok.size(); ++i) {
    if (!group.ok[i]) continue;
    if (!seen) {
      first = group.rewards[i];
      seen = true;
    } else if (group.rewards[i] != first) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::vector<std::vector<double>>> ComputeAdvantages(
    const std::vector<GroupRewards>& groups, const AdvantageOptions& options) {
  if (options.estimator != "grpo" && options.estimator != "rloo") {
    return absl::InvalidArgumentError(
        absl::StrCat("advantages: unknown estimator \"", options.estimator, "\" (grpo | rloo)"));
  }
  if (options.scale != "group" && options.scale != "batch" && options.scale != "none") {
    return absl::InvalidArgumentError(absl::StrCat("advantages: unknown scale_rewards \"",
                                                   options.scale, "\" (group | batch | none)"));
  }
  GroupRewards all;  // every OK reward of the batch, for batch scaling
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].rewards.size() != groups[g].ok.size()) {
      return absl::InvalidArgumentError(absl::StrCat("advantages: group ", g, " has ",
                                                     groups[g].rewards.size(), " rewards but ",
                                                     groups[g].ok.size(), " ok flags"));
    }
    for (size_t i = 0; i < groups[g].rewards.size(); ++i) {
      if (groups[g].ok[i] && !std::isfinite(groups[g].rewards[i])) {
        return absl::InvalidArgumentError(absl::StrCat("advantages: group ", g, " sample ", i,
                                                       " is OK but its reward is not finite"));
      }
      if (groups[g].ok[i]) {
        all.rewards.push_back(groups[g].rewards[i]);
        all.ok.push_back(true);
      }
    }
  }
  const double batch_std = OkMoments(all).std;
  std::vector<std::vector<double>> out(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    const GroupRewards& group = groups[g];
    out[g].assign(group.rewards.size(), 0.0);
    const Moments m = OkMoments(group);
    if (m.n < 2) continue;
    double denom = 1.0;
    if (options.scale == "group") denom = m.std + options.std_eps;
    if (options.scale == "batch") denom = batch_std + options.std_eps;
    const double loo = options.estimator == "rloo" ? static_cast<double>(m.n) / (m.n - 1) : 1.0;
    for (size_t i = 0; i < group.rewards.size(); ++i) {
      if (group.ok[i]) out[g][i] = (group.rewards[i] - m.mean) * loo / denom;
    }
  }
  return out;
}

}  // namespace cohort::learner
