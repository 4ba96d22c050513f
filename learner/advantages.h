// GRPO advantages: one value per sample, computed per group from the
// group's OK samples only (samples whose reward could not be computed are
// left out of the statistics and get advantage 0 and no loss).
//
//   grpo  A = r - mean(r_ok)
//   rloo  A = r - mean of the group's other OK samples = (r - mean) * n / (n - 1)
// then, by `scale_rewards`,
//   group A /= std_group + 1e-4   (sample std, N - 1)
//   batch A /= std_batch + 1e-4   (sample std of every OK reward of the batch)
//   none  no division (Dr. GRPO: mean-only)
// A group with fewer than 2 OK samples has no baseline: all its advantages
// are 0.
//
// Torch-free. Thread-safety: pure functions.
#ifndef COHORT_LEARNER_ADVANTAGES_H_
#define COHORT_LEARNER_ADVANTAGES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::learner {

// The rewards of one group; ok[i] false means sample i is not OK (its
// reward is ignored, e.g. NaN).
struct GroupRewards {
  std::vector<double> rewards;
  std::vector<bool> ok;
};

struct AdvantageOptions {
  std::string estimator = "grpo";  // grpo | rloo (grpo.advantage)
  std::string scale = "group";     // group | batch | none (grpo.scale_rewards)
  double std_eps = 1e-4;
};

// advantages[g][i] for every sample of every group; 0 for non-OK samples.
// INVALID_ARGUMENT for an unknown estimator/scale or rewards/ok of
// different lengths.
absl::StatusOr<std::vector<std::vector<double>>> ComputeAdvantages(
    const std::vector<GroupRewards>& groups, const AdvantageOptions& options);

// Number of OK samples of a group.
int CountOk(const GroupRewards& group);

// The dynamic-sampling predicate: true when the group's OK rewards are all
// equal (no learning signal), including groups with fewer than 2 OK samples.
bool AllRewardsEqual(const GroupRewards& group);

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_ADVANTAGES_H_
