// cohort-actor as real processes against a real cohort-reward and a
// cohort.v1.Learner gRPC server: the in-memory ledger of
// actor/testing/fake_learner_server.h (exactly-once accounting, leases
// with a TTL, checksummed weight streams of a tiny random model). Proves
// the actor's wiring: joining with only --learner, generating with the real
// engine, scoring on the real reward server, SIGKILL and SIGTERM, a reward
// server outage, a learner restart on its port, a refused Join.
#include <signal.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/aten.h"

#include "absl/strings/str_cat.h"
#include "actor/testing/fake_learner_server.h"
#include "actor/testing/fakes.h"
#include "actor/testing/random_weights.h"
#include "cli/supervisor.h"
#include "core/tasks/addition.h"
#include "core/tokenizer.h"
#include "model/checkpoint.h"
#include "tests/cluster_util.h"

namespace cohort {
namespace {

namespace v1 = ::cohort::v1;
using ::cohort::actor::HostWeights;
using ::cohort::actor::testing::FakeLearner;
using ::cohort::actor::testing::FakeLearnerServer;
using ::cohort::cli::ChildProcess;
using ::cohort::cli::DescribeWaitStatus;
using ::cohort::testing::Binary;
using ::cohort::testing::ReadFile;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitForPortFile;
using ::cohort::testing::WaitUntil;
using ::cohort::testing::WriteFile;
using ::testing::HasSubstr;

// The tiny preset with the addition task's character-level vocabulary.
struct TinyModel {
  v1::ModelFiles files;
  model::ModelConfig config;
  TinyModel() {
    auto tok =
        Tokenizer::FromJson(tasks::AdditionTokenizerJson(), tasks::AdditionTokenizerConfigJson());
    config = *model::PresetConfig("tiny");
    config.vocab_size = (*tok)->vocab_size();
    config.max_position_embeddings = 256;
    config.eos_token_ids = {(*tok)->eos_id().value_or(0)};
    files.set_config_json(config.ToJson());
    files.set_tokenizer_json(tasks::AdditionTokenizerJson());
    files.set_tokenizer_config_json(tasks::AdditionTokenizerConfigJson());
    files.set_chat_template("plain");
    files.add_eos_token_ids(static_cast<int32_t>(config.eos_token_ids[0]));
    files.set_model_fingerprint(config.Fingerprint());
    files.set_dtype("float32");
    files.set_source("preset:tiny (addition vocabulary)");
  }
  // Version v: random weights of seed v.
  HostWeights Weights(int64_t version) const {
    return actor::testing::RandomHostWeights(config, version);
  }
};

class ActorClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = dir_ / "run.yaml";
    WriteFile(config_,
              "actor:\n  slots: 4\n  drain_grace_seconds: 3\nsupervisor:\n"
              "  stop_timeout_seconds: 10\nreward:\n  retry_seconds: 30\n");
  }
  void TearDown() override {
    for (auto& a : actors_) {
      if (a != nullptr) a->Stop(absl::Seconds(5));
    }
    if (reward_ != nullptr) reward_->Stop(absl::Seconds(5));
  }

  FakeLearner::Options LedgerOptions(int prompts) {
    FakeLearner::Options o;
    o.prompts = prompts;
    o.group_size = 2;
    o.lease_ttl_ms = 2000;
    o.heartbeat_interval_ms = 200;
    o.model = model_.files;
    o.weights = [this](int64_t v) { return model_.Weights(v); };
    o.task = "math";
    o.answer = "42";
    o.max_new_tokens = 8;
    o.chunk_bytes = 64 << 10;
    o.reward_addresses = {};
    return o;
  }

  void StartLedger(FakeLearner::Options o, int port = 0) {
    if (ledger_ == nullptr) ledger_ = std::make_unique<FakeLearner>(std::move(o));
    auto server = FakeLearnerServer::Start(ledger_.get(), port);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void StartReward(int port = 0) {
    std::vector<std::string> args = {"--config",           config_,       "--port",
                                     std::to_string(port), "--port_file", dir_ / "reward.port"};
    auto child =
        ChildProcess::Spawn(Binary("reward_server", "cohort-reward"), args, dir_ / "reward.log");
    ASSERT_TRUE(child.ok()) << child.status();
    reward_ = *std::move(child);
    auto ports = WaitForPortFile(dir_ / "reward.port", absl::Seconds(30), reward_pid_);
    ASSERT_TRUE(ports.ok()) << ports.status() << ReadFile(dir_ / "reward.log");
    reward_pid_ = ports->pid;
    reward_port_ = ports->grpc_port;
  }

  ChildProcess* StartActor(const std::string& name) {
    std::vector<std::string> args = {"--learner", server_->address(), "--config",
                                     config_,     "--name",           name};
    if (reward_port_ != 0) {
      args.push_back("--reward");
      args.push_back(absl::StrCat("127.0.0.1:", reward_port_));
    }
    auto child = ChildProcess::Spawn(Binary("actor", "cohort-actor"), args, dir_ / (name + ".log"));
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return nullptr;
    actors_.push_back(*std::move(child));
    return actors_.back().get();
  }

  void ExpectExactlyOnce(int prompts) {
    auto trained = ledger_->trained();
    EXPECT_EQ(static_cast<int>(trained.size()), prompts);
    for (const auto& [p, n] : trained) EXPECT_EQ(n, 1) << "prompt " << p;
  }

  std::string Logs() {
    std::string out;
    for (const auto& a : actors_) out += ReadFile(a->log_path()).substr(0, 20000);
    return out;
  }

  TempDir dir_;
  std::string config_;
  TinyModel model_;
  std::unique_ptr<FakeLearner> ledger_;
  std::unique_ptr<FakeLearnerServer> server_;
  std::unique_ptr<ChildProcess> reward_;
  pid_t reward_pid_ = 0;
  int reward_port_ = 0;
  std::vector<std::unique_ptr<ChildProcess>> actors_;
};

TEST_F(ActorClusterTest, TwoActorsTrainEveryPromptOnceAndDrainOnSigterm) {
  StartReward();
  StartLedger(LedgerOptions(24));
  ChildProcess* a = StartActor("actor-a");
  ChildProcess* b = StartActor("actor-b");
  // Both join (with only --learner and the config) before the work runs out.
  ASSERT_TRUE(WaitUntil([&] { return ledger_->joins() == 2; }, absl::Seconds(60))) << Logs();
  ASSERT_TRUE(WaitUntil([&] { return ledger_->done(); }, absl::Seconds(90))) << Logs();
  ExpectExactlyOnce(24);
  for (const v1::ScoredGroup& g : ledger_->groups()) {
    ASSERT_EQ(g.completions_size(), 2);
    for (const v1::Completion& c : g.completions()) {
      EXPECT_GT(c.token_ids_size(), 0);
      EXPECT_EQ(c.reward().status(), v1::REWARD_STATUS_OK) << c.reward().reason();
      EXPECT_EQ(c.policy_versions(0), 1);
    }
  }
  a->Signal(SIGTERM);
  b->Signal(SIGTERM);
  ASSERT_TRUE(a->WaitFor(absl::Seconds(8)));
  ASSERT_TRUE(b->WaitFor(absl::Seconds(8)));
  EXPECT_EQ(DescribeWaitStatus(a->wait_status()), "exited with code 0") << Logs();
  EXPECT_EQ(DescribeWaitStatus(b->wait_status()), "exited with code 0");
  EXPECT_EQ(ledger_->outstanding(), 0);
}

TEST_F(ActorClusterTest, KilledActorLosesNothingAndVersionsAdvance) {
  StartReward();
  // Enough prompts that work remains after version 2 is published (40 were
  // all generated with version 1 within a second on an idle machine).
  StartLedger(LedgerOptions(160));
  ChildProcess* a = StartActor("actor-a");
  StartActor("actor-b");
  // Both actors hold version 1 before version 2 is published, so the
  // survivor can only get version 2 as a delta against it.
  ASSERT_TRUE(WaitUntil([&] { return ledger_->joins() >= 2 && ledger_->full_fetches() >= 2; },
                        absl::Seconds(60)))
      << Logs();
  ASSERT_TRUE(WaitUntil([&] { return ledger_->trained().size() >= 6; }, absl::Seconds(60)))
      << Logs();
  // No new work until the survivor runs version 2 (under load it could
  // otherwise generate every remaining prompt with version 1 first).
  ledger_->HoldLeases(true);
  a->Signal(SIGKILL);
  ledger_->Publish(2);
  ASSERT_TRUE(WaitUntil([&] { return ledger_->max_reported_version() >= 2; }, absl::Seconds(60)))
      << Logs();
  ledger_->HoldLeases(false);
  ASSERT_TRUE(WaitUntil([&] { return ledger_->done(); }, absl::Seconds(90))) << Logs();
  ExpectExactlyOnce(160);
  bool v2 = false;
  for (const v1::ScoredGroup& g : ledger_->groups()) {
    for (const v1::Completion& c : g.completions()) {
      for (int64_t v : c.policy_versions()) v2 |= v == 2;
    }
  }
  EXPECT_TRUE(v2) << "the surviving actor swapped version 2 in";
  EXPECT_GE(ledger_->delta_fetches(), 1) << Logs();
}

TEST_F(ActorClusterTest, RewardOutageAndLearnerRestartLoseNothingAndScoreNothingZero) {
  StartReward();
  StartLedger(LedgerOptions(40));
  const int learner_port = server_->port();
  StartActor("actor-a");
  ASSERT_TRUE(WaitUntil([&] { return ledger_->trained().size() >= 4; }, absl::Seconds(60)))
      << Logs();
  // The reward server goes away for a while and comes back on its port.
  reward_->Signal(SIGKILL);
  ASSERT_TRUE(reward_->WaitFor(absl::Seconds(5)));
  absl::SleepFor(absl::Seconds(2));
  StartReward(reward_port_);
  ASSERT_TRUE(WaitUntil([&] { return ledger_->trained().size() >= 14; }, absl::Seconds(60)))
      << Logs();
  // The learner restarts on its port and forgets the actor and its leases.
  server_->Shutdown();
  server_.reset();
  ledger_->Restart();
  absl::SleepFor(absl::Seconds(1));
  StartLedger({}, learner_port);
  ASSERT_TRUE(WaitUntil([&] { return ledger_->done(); }, absl::Seconds(90))) << Logs();
  ExpectExactlyOnce(40);
  EXPECT_GE(ledger_->joins(), 2);
  for (const v1::ScoredGroup& g : ledger_->groups()) {
    for (const v1::Completion& c : g.completions()) {
      if (c.reward().status() != v1::REWARD_STATUS_OK) {
        EXPECT_TRUE(std::isnan(c.reward().reward())) << "an unscored sample is never 0";
      }
    }
  }
}

TEST_F(ActorClusterTest, RefusedJoinExitsWithTheReason) {
  FakeLearner::Options o = LedgerOptions(4);
  o.refuse_join = "model fingerprint 1234 does not match the learner's 5678";
  StartLedger(o);
  ChildProcess* a = StartActor("actor-a");
  ASSERT_TRUE(a->WaitFor(absl::Seconds(20)));
  EXPECT_EQ(DescribeWaitStatus(a->wait_status()), "exited with code 3");
  EXPECT_THAT(ReadFile(a->log_path()), HasSubstr("fingerprint 1234"));
}

}  // namespace
}  // namespace cohort
