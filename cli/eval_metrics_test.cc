#include "cli/eval_metrics.h"

#include "gtest/gtest.h"

namespace cohort::cli {
namespace {

TEST(EvalMetricsTest, UnbiasedPassAtK) {
  EXPECT_DOUBLE_EQ(PassAtK(10, 0, 1), 0.0);
  EXPECT_DOUBLE_EQ(PassAtK(10, 10, 5), 1.0);
  EXPECT_NEAR(PassAtK(10, 3, 1), 0.3, 1e-12);
  // 1 - C(7,5)/C(10,5) = 1 - 21/252
  EXPECT_NEAR(PassAtK(10, 3, 5), 1.0 - 21.0 / 252.0, 1e-12);
  EXPECT_DOUBLE_EQ(PassAtK(4, 1, 4), 1.0);
}

TEST(EvalMetricsTest, MajorityVoteAndRates) {
  std::vector<std::vector<SampleOutcome>> o = {
      // majority "5" is correct
      {{true, true, "5"}, {true, true, "5"}, {false, false, "6"}, {false, true, ""}},
      // majority "7" is wrong, one correct sample
      {{false, true, "7"}, {false, true, "7"}, {true, true, "8"}, {false, false, "9"}},
  };
  EvalMetrics m = ComputeEvalMetrics(o, 2);
  EXPECT_EQ(m.n, 4);
  EXPECT_EQ(m.k, 2);
  EXPECT_DOUBLE_EQ(m.pass_at_1, (0.5 + 0.25) / 2);
  EXPECT_DOUBLE_EQ(m.cons_at_k, 0.5);
  EXPECT_DOUBLE_EQ(m.format_rate, 6.0 / 8.0);
  EXPECT_NEAR(m.pass_at_k, (PassAtK(4, 2, 2) + PassAtK(4, 1, 2)) / 2, 1e-12);
}

}  // namespace
}  // namespace cohort::cli
