#include "learner/advantages.h"

#include <cmath>

#include "gtest/gtest.h"

namespace cohort::learner {
namespace {

constexpr double kTol = 1e-9;

TEST(AdvantagesTest, GroupNormalisedWithSampleStd) {
  // rewards 1, 0, 0, 1: mean 0.5, sample std sqrt(1/3).
  GroupRewards g{{1, 0, 0, 1}, {true, true, true, true}};
  auto a = ComputeAdvantages({g}, AdvantageOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  const double s = std::sqrt(1.0 / 3.0) + 1e-4;
  EXPECT_NEAR((*a)[0][0], 0.5 / s, kTol);
  EXPECT_NEAR((*a)[0][1], -0.5 / s, kTol);
}

TEST(AdvantagesTest, NonOkSamplesAreLeftOut) {
  // Sample 2 is not OK: statistics over {2, 4}: mean 3, std sqrt(2).
  GroupRewards g{{2, 4, NAN}, {true, true, false}};
  auto a = ComputeAdvantages({g}, AdvantageOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  const double s = std::sqrt(2.0) + 1e-4;
  EXPECT_NEAR((*a)[0][0], -1 / s, kTol);
  EXPECT_NEAR((*a)[0][1], 1 / s, kTol);
  EXPECT_EQ((*a)[0][2], 0.0);
}

TEST(AdvantagesTest, ZeroStdGroupsGiveZeroAndAreFlagged) {
  GroupRewards g{{1, 1, 1}, {true, true, true}};
  auto a = ComputeAdvantages({g}, AdvantageOptions{});
  ASSERT_TRUE(a.ok());
  for (double v : (*a)[0]) EXPECT_EQ(v, 0.0);
  EXPECT_TRUE(AllRewardsEqual(g));
  EXPECT_FALSE(AllRewardsEqual(GroupRewards{{1, 0}, {true, true}}));
  // Non-OK samples do not count: OK rewards {1, 1} are all equal.
  EXPECT_TRUE(AllRewardsEqual(GroupRewards{{1, 0, 1}, {true, false, true}}));
  EXPECT_EQ(CountOk(GroupRewards{{1, 0, 1}, {true, false, true}}), 2);
}

TEST(AdvantagesTest, FewerThanTwoOkSamplesHaveNoBaseline) {
  GroupRewards g{{5, 1}, {true, false}};
  auto a = ComputeAdvantages({g}, AdvantageOptions{});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)[0][0], 0.0);
  EXPECT_EQ((*a)[0][1], 0.0);
}

TEST(AdvantagesTest, MeanOnlyForScaleNone) {
  AdvantageOptions o;
  o.scale = "none";
  auto a = ComputeAdvantages({GroupRewards{{3, 1, 2}, {true, true, true}}}, o);
  ASSERT_TRUE(a.ok());
  EXPECT_NEAR((*a)[0][0], 1.0, kTol);
  EXPECT_NEAR((*a)[0][1], -1.0, kTol);
  EXPECT_NEAR((*a)[0][2], 0.0, kTol);
}

TEST(AdvantagesTest, RlooSubtractsTheMeanOfTheOthers) {
  AdvantageOptions o;
  o.estimator = "rloo";
  o.scale = "none";
  // r = 3, 1, 2: others' means 1.5, 2.5, 2 -> 1.5, -1.5, 0.
  auto a = ComputeAdvantages({GroupRewards{{3, 1, 2, 9}, {true, true, true, false}}}, o);
  ASSERT_TRUE(a.ok());
  EXPECT_NEAR((*a)[0][0], 1.5, kTol);
  EXPECT_NEAR((*a)[0][1], -1.5, kTol);
  EXPECT_NEAR((*a)[0][2], 0.0, kTol);
  EXPECT_EQ((*a)[0][3], 0.0);
}

TEST(AdvantagesTest, BatchScalingUsesTheStdOfEveryOkReward) {
  AdvantageOptions o;
  o.scale = "batch";
  // Group means 0.5 and 2.5; batch rewards {0, 1, 2, 3}: sample std sqrt(5/3).
  auto a = ComputeAdvantages(
      {GroupRewards{{0, 1}, {true, true}}, GroupRewards{{2, 3, 7}, {true, true, false}}}, o);
  ASSERT_TRUE(a.ok());
  const double s = std::sqrt(5.0 / 3.0) + 1e-4;
  EXPECT_NEAR((*a)[0][0], -0.5 / s, kTol);
  EXPECT_NEAR((*a)[1][1], 0.5 / s, kTol);
  EXPECT_EQ((*a)[1][2], 0.0);
}

TEST(AdvantagesTest, BadInputIsRefused) {
  AdvantageOptions o;
  o.estimator = "ppo";
  EXPECT_FALSE(ComputeAdvantages({}, o).ok());
  o = AdvantageOptions{};
  o.scale = "tokens";
  EXPECT_FALSE(ComputeAdvantages({}, o).ok());
  auto a = ComputeAdvantages({GroupRewards{{1, 2}, {true}}}, AdvantageOptions{});
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("2 rewards but 1 ok flags"), std::string::npos);
  a = ComputeAdvantages({GroupRewards{{1, NAN}, {true, true}}}, AdvantageOptions{});
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("not finite"), std::string::npos);
}

}  // namespace
}  // namespace cohort::learner
