#include "actor/rollout.h"

#include <cmath>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "actor/testing/fakes.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;
using testing::FakeGenerator;
using testing::FakeLearner;
using testing::FakeRewardClient;
using ::testing::HasSubstr;

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

class RolloutTest : public ::testing::Test {
 protected:
  void Start(FakeLearner::Options lo = {}, FakeGenerator::Options go = {}) {
    learner_ = std::make_unique<FakeLearner>(lo);
    RolloutOptions o;
    o.actor_name = "test-actor";
    o.pid = 42;
    o.slots = static_cast<int32_t>(go.slots);
    o.metrics = &metrics_;
    o.drain_grace = drain_grace_;
    o.reconnect.initial_backoff = absl::Milliseconds(10);
    o.reconnect.max_backoff = absl::Milliseconds(50);
    o.heartbeat_interval = absl::Milliseconds(50);
    o.make_generator = [this,
                        go](const v1::JoinResponse&) -> absl::StatusOr<std::unique_ptr<Generator>> {
      auto g = std::make_unique<FakeGenerator>(go);
      generators_.push_back(g.get());
      return std::unique_ptr<Generator>(std::move(g));
    };
    o.make_reward_client =
        [this](const v1::JoinResponse&) -> absl::StatusOr<std::unique_ptr<RewardClient>> {
      if (no_reward_address_) return absl::InvalidArgumentError("no reward server address");
      auto r = std::make_unique<ForwardingReward>(&reward_);
      return std::unique_ptr<RewardClient>(std::move(r));
    };
    rollout_ = std::make_unique<Rollout>(o, learner_.get());
    thread_ = std::thread([this] { result_ = rollout_->Run(); });
  }

  bool no_reward_address_ = false;  // the reward client cannot be built

  absl::Status Finish() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }

  void TearDown() override {
    if (rollout_ != nullptr) rollout_->Stop();
    if (thread_.joinable()) thread_.join();
  }

  void ExpectExactlyOnce(int prompts) {
    auto trained = learner_->trained();
    EXPECT_EQ(static_cast<int>(trained.size()), prompts);
    for (const auto& [prompt, n] : trained) EXPECT_EQ(n, 1) << "prompt " << prompt;
  }

  // Forwards to the test's FakeRewardClient (owned by the fixture).
  class ForwardingReward : public RewardClient {
   public:
    explicit ForwardingReward(FakeRewardClient* r) : r_(r) {}
    std::vector<v1::RewardResult> Score(const std::vector<v1::ScoreSample>& s) override {
      return r_->Score(s);
    }
    void Shutdown() override { r_->Unblock(); }

   private:
    FakeRewardClient* r_;
  };

  MetricsRegistry metrics_;
  FakeRewardClient reward_;
  absl::Duration drain_grace_ = absl::Seconds(5);
  std::unique_ptr<FakeLearner> learner_;
  std::vector<FakeGenerator*> generators_;
  std::unique_ptr<Rollout> rollout_;
  std::thread thread_;
  absl::Status result_;
};

TEST_F(RolloutTest, EveryPromptIsTrainedOnceWithFullGroups) {
  FakeLearner::Options lo;
  lo.prompts = 30;
  lo.group_size = 4;
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok()) << result_;
  ExpectExactlyOnce(30);
  for (const v1::ScoredGroup& g : learner_->groups()) {
    ASSERT_EQ(g.completions_size(), 4);
    for (const v1::Completion& c : g.completions()) {
      EXPECT_EQ(c.token_ids_size(), 4);
      EXPECT_EQ(c.logprobs_size(), 4);
      EXPECT_EQ(c.policy_versions_size(), 4);
      EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_EOS);
      EXPECT_EQ(c.reward().status(), v1::REWARD_STATUS_OK);
      EXPECT_EQ(c.policy_versions(0), 1);
    }
  }
  RolloutStats s = rollout_->stats();
  EXPECT_EQ(s.groups_submitted, 30);
  EXPECT_EQ(s.joins, 1);
  EXPECT_EQ(s.tokens_generated, 30 * 4 * 4);
  EXPECT_EQ(learner_->outstanding(), 0);
  // The engine was kept full: several groups in flight at once.
  EXPECT_GE(generators_[0]->max_in_flight(), 2);
  EXPECT_THAT(metrics_.Render(), HasSubstr("cohort_actor_groups_submitted_total 30"));
}

TEST_F(RolloutTest, NewVersionsAreSwappedInWhileGenerating) {
  FakeLearner::Options lo;
  lo.prompts = 200;
  FakeGenerator::Options go;
  go.step_time = absl::Milliseconds(2);
  Start(lo, go);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 10; }));
  learner_->Publish(2);
  ASSERT_TRUE(WaitFor([&] { return rollout_->policy_version() == 2; }));
  // Work remains for version 3 however slow the swap (leases held until it).
  learner_->HoldLeases(true);
  learner_->Publish(3);
  ASSERT_TRUE(WaitFor([&] { return rollout_->policy_version() == 3; }));
  learner_->HoldLeases(false);
  ASSERT_TRUE(WaitFor([&] { return rollout_->stats().policy_versions_seen.count(3) > 0; }));
  rollout_->RequestDrain();
  ASSERT_TRUE(Finish().ok());
  EXPECT_THAT(generators_[0]->swaps(), ::testing::ElementsAre(1, 2, 3));
  EXPECT_GE(learner_->delta_fetches(), 2) << "v2 and v3 come as deltas";
  for (const auto& [p, n] : learner_->trained()) EXPECT_EQ(n, 1);
}

TEST_F(RolloutTest, CorruptWeightsAreNeverSwapped) {
  FakeLearner::Options lo;
  lo.prompts = 200;
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return rollout_->policy_version() == 1; }));
  learner_->CorruptNextFetches(1000);
  learner_->Publish(2);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(rollout_->policy_version(), 1);
  EXPECT_THAT(generators_[0]->swaps(), ::testing::ElementsAre(1));
  learner_->CorruptNextFetches(0);
  ASSERT_TRUE(WaitFor([&] { return rollout_->policy_version() == 2; }));
  EXPECT_THAT(metrics_.Render(),
              HasSubstr("cohort_actor_weight_fetches_total{result=\"checksum\"}"));
}

TEST_F(RolloutTest, SurvivesAnUnreachableLearnerAndARestart) {
  FakeLearner::Options lo;
  lo.prompts = 60;
  lo.lease_ttl_ms = 3000;
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 5; }));
  learner_->SetUnavailable(true);
  absl::SleepFor(absl::Milliseconds(300));
  learner_->SetUnavailable(false);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 20; }));
  learner_->Restart();  // forgets the actor: NOT_FOUND, rejoin, leases gone
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  ExpectExactlyOnce(60);
  EXPECT_GE(rollout_->stats().joins, 2);
}

// The learner died after publishing version 5 and resumed from the
// checkpoint of version 2: the actor takes version 2 again (its tokens of
// versions 3..5 would be refused forever) and every prompt is trained once.
TEST_F(RolloutTest, LearnerResumedAtAnOlderVersionIsFollowed) {
  FakeLearner::Options lo;
  lo.prompts = 40;
  lo.lease_ttl_ms = 3000;
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 5; }));
  learner_->Publish(5);
  ASSERT_TRUE(WaitFor([&] { return rollout_->policy_version() == 5; }));
  learner_->Restart();
  learner_->Publish(2);
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  EXPECT_EQ(rollout_->policy_version(), 2);
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  ExpectExactlyOnce(40);
  EXPECT_GE(rollout_->stats().joins, 2);
}

TEST_F(RolloutTest, DrainFinishesInFlightAndHandsTheRestBack) {
  FakeLearner::Options lo;
  lo.prompts = 100;
  FakeGenerator::Options go;
  go.step_time = absl::Milliseconds(30);
  go.tokens_per_sample = 8;
  drain_grace_ = absl::Milliseconds(100);
  Start(lo, go);
  ASSERT_TRUE(WaitFor([&] { return learner_->outstanding() >= 3; }));
  const absl::Time start = absl::Now();
  rollout_->RequestDrain();
  ASSERT_TRUE(Finish().ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(learner_->outstanding(), 0) << "every lease was submitted or handed back";
  EXPECT_GT(learner_->released(), 0);
  EXPECT_EQ(static_cast<int64_t>(learner_->trained().size()) + learner_->queued(), 100);
}

TEST_F(RolloutTest, PromptThatDoesNotFitIsSubmittedAsInvalid) {
  FakeLearner::Options lo;
  lo.prompts = 6;
  lo.long_prompts = {3};
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  bool seen = false;
  for (const v1::ScoredGroup& g : learner_->groups()) {
    if (g.prompt_id() != 3) continue;
    seen = true;
    for (const v1::Completion& c : g.completions()) {
      EXPECT_EQ(c.reward().status(), v1::REWARD_STATUS_INVALID);
      EXPECT_THAT(c.reward().reason(), HasSubstr("does not fit"));
      EXPECT_TRUE(std::isnan(c.reward().reward()));
    }
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(rollout_->stats().groups_invalid, 1);
}

TEST_F(RolloutTest, UnscoredSamplesAreSubmittedNonOkNeverZero) {
  FakeLearner::Options lo;
  lo.prompts = 10;
  reward_.SetFailing(true);
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  for (const v1::ScoredGroup& g : learner_->groups()) {
    for (const v1::Completion& c : g.completions()) {
      EXPECT_EQ(c.reward().status(), v1::REWARD_STATUS_ERROR);
      EXPECT_TRUE(std::isnan(c.reward().reward()));
    }
  }
}

TEST_F(RolloutTest, SlowRewardsShowAsIdleForRewards) {
  FakeLearner::Options lo;
  lo.prompts = 100;
  reward_.Block();
  Start(lo);
  // Generation runs ahead until max_unsubmitted_groups wait for rewards;
  // then the engine idles for rewards.
  EXPECT_TRUE(WaitFor([&] { return rollout_->stats().idle_rewards_seconds > 0.2; }));
  RolloutStats s = rollout_->stats();
  EXPECT_LT(s.busy_seconds, s.idle_rewards_seconds);
  reward_.Unblock();
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  ExpectExactlyOnce(100);
}

TEST_F(RolloutTest, DeterministicModeGeneratesEachGroupAloneWithItsPinnedVersion) {
  FakeLearner::Options lo;
  lo.prompts = 12;
  lo.deterministic = true;
  Start(lo);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 4; }));
  learner_->Publish(2);
  learner_->SetPinnedVersion(2);
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok());
  ExpectExactlyOnce(12);
  EXPECT_EQ(generators_[0]->max_in_flight(), 1);
  bool saw_v2 = false;
  for (const v1::ScoredGroup& g : learner_->groups()) {
    std::set<int64_t> versions;
    for (const v1::Completion& c : g.completions()) {
      versions.insert(c.policy_versions().begin(), c.policy_versions().end());
    }
    EXPECT_EQ(versions.size(), 1u) << "one version per group";
    saw_v2 |= versions.count(2) > 0;
  }
  EXPECT_TRUE(saw_v2);
  // The seeds come from the lease.
  for (const GenerateSpec& spec : generators_[0]->submitted()) {
    EXPECT_EQ(spec.sampling.seed() % 1000, 1u);
  }
}

TEST_F(RolloutTest, RefusedJoinEndsTheRunWithTheReason) {
  FakeLearner::Options lo;
  lo.refuse_join = "model fingerprint abc does not match the learner's def";
  Start(lo);
  absl::Status s = Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("the learner refused this actor"));
  EXPECT_THAT(s.message(), HasSubstr("fingerprint abc"));
}

// Not a refusal: the actor cannot use what the learner's Join names.
TEST_F(RolloutTest, UnusableJoinEndsTheRunSayingWhy) {
  no_reward_address_ = true;
  Start();
  absl::Status s = Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("this actor cannot work for the learner's run: cannot reach "
                                     "the reward servers: no reward server address"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("refused")));
}

// Heartbeats carry the engine's time by state (HeartbeatRequest.engine_time):
// busy while generating, idle for rewards while the reward server holds
// every group the actor may keep, idle for prompts once the learner has none.
TEST_F(RolloutTest, HeartbeatsCarryEngineTimeByState) {
  FakeLearner::Options lo;
  lo.prompts = 60;
  FakeGenerator::Options go;
  go.step_time = absl::Milliseconds(1);
  const absl::Time start = absl::Now();
  Start(lo, go);
  ASSERT_TRUE(WaitFor([&] { return learner_->trained().size() >= 5; }));
  reward_.Block();
  ASSERT_TRUE(WaitFor([&] { return learner_->last_engine_time().idle_rewards_seconds() > 0.1; }))
      << learner_->last_engine_time().ShortDebugString();
  reward_.Unblock();
  ASSERT_TRUE(WaitFor([&] { return learner_->done(); }));
  ASSERT_TRUE(WaitFor([&] { return learner_->last_engine_time().idle_prompts_seconds() > 0.1; }))
      << learner_->last_engine_time().ShortDebugString();
  const v1::EngineTime reported = learner_->last_engine_time();
  EXPECT_GT(reported.busy_seconds(), 0);
  // Groups carry it too: the last one was submitted after the engine had
  // waited for rewards.
  EXPECT_GT(learner_->last_submit_engine_time().busy_seconds(), 0);
  EXPECT_GT(learner_->last_submit_engine_time().idle_rewards_seconds(), 0);
  learner_->SetDrain(true);
  ASSERT_TRUE(Finish().ok()) << result_;
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  // Running totals: what the rollout counts at the end is at least what the
  // last heartbeat reported, and the four states add up to no more than the
  // wall time since the rollout was made.
  RolloutStats s = rollout_->stats();
  EXPECT_GE(s.busy_seconds, reported.busy_seconds());
  EXPECT_GE(s.idle_prompts_seconds, reported.idle_prompts_seconds());
  EXPECT_GE(s.idle_weights_seconds, reported.idle_weights_seconds());
  EXPECT_GE(s.idle_rewards_seconds, reported.idle_rewards_seconds());
  EXPECT_LE(reported.busy_seconds() + reported.idle_prompts_seconds() +
                reported.idle_weights_seconds() + reported.idle_rewards_seconds(),
            wall + 0.01);
  ExpectExactlyOnce(60);
}

}  // namespace
}  // namespace cohort::actor
