#include "actor/lease_keeper.h"

#include <gtest/gtest.h>

#include "actor/testing/fakes.h"

namespace cohort::actor {
namespace {

using testing::FakeLearner;

TEST(LeaseKeeper, RenewsReleasesAndReportsExpired) {
  FakeLearner::Options o;
  o.prompts = 3;
  FakeLearner learner(o);
  auto join = learner.Join([] {
    cohort::v1::JoinRequest r;
    r.set_actor_name("a");
    r.set_protocol_version(cohort::v1::LEARNER_PROTOCOL_CURRENT);
    return r;
  }());
  ASSERT_TRUE(join.ok());
  cohort::v1::LeasePromptsRequest lr;
  lr.set_actor_id(join->actor_id());
  lr.set_max_prompts(3);
  auto leases = learner.LeasePrompts(lr);
  ASSERT_TRUE(leases.ok());
  ASSERT_EQ(leases->leases_size(), 3);
  LeaseKeeper keeper(&learner);
  for (const auto& l : leases->leases()) keeper.Add(l.lease_id(), l.deadline_unix_ms());
  keeper.Add("unknown-lease", 0);
  keeper.Release(leases->leases(0).lease_id());
  EXPECT_EQ(keeper.held(), 3u);
  auto beat = keeper.Beat(join->actor_id(), 1, 10, false);
  ASSERT_TRUE(beat.ok()) << beat.status();
  ASSERT_EQ(beat->expired.size(), 1u);
  EXPECT_EQ(beat->expired[0], "unknown-lease");
  EXPECT_EQ(keeper.held(), 2u);
  EXPECT_EQ(keeper.pending_releases(), 0u);
  EXPECT_EQ(learner.released(), 1);
  EXPECT_EQ(learner.queued(), 1);
  // A failed beat keeps the releases for the next one.
  keeper.Release(leases->leases(1).lease_id());
  learner.SetUnavailable(true);
  EXPECT_FALSE(keeper.Beat(join->actor_id(), 1, 10, false).ok());
  EXPECT_EQ(keeper.pending_releases(), 1u);
  learner.SetUnavailable(false);
  ASSERT_TRUE(keeper.Beat(join->actor_id(), 1, 10, true).ok());
  EXPECT_EQ(learner.released(), 2);
}

}  // namespace
}  // namespace cohort::actor
