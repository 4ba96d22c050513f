#include "reward_server/scorer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "cohort/v1/reward.grpc.pb.h"
#include "core/verifier_names.h"
#include "gtest/gtest.h"

namespace cohort::reward {
namespace {

// A user's reward model: answers reward = length of the completion / 10,
// after sleeping `delay_ms`.
class FakeRewardModel final : public cohort::v1::Reward::Service {
 public:
  std::atomic<int> delay_ms{0};
  std::atomic<int> calls{0};
  grpc::Status Score(grpc::ServerContext*, const cohort::v1::ScoreRequest* req,
                     cohort::v1::ScoreResponse* resp) override {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    for (const auto& s : req->samples()) {
      auto* r = resp->add_results();
      r->set_id(s.id());
      r->set_status(cohort::v1::REWARD_STATUS_OK);
      r->set_reward(s.completion().size() / 10.0);
      (*r->mutable_components())["rm"] = s.completion().size() / 10.0;
    }
    return grpc::Status::OK;
  }
};

struct FakeServer {
  FakeRewardModel service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  FakeServer() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&service);
    server = b.BuildAndStart();
  }
  ~FakeServer() { server->Shutdown(std::chrono::system_clock::now()); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

RewardTaskSpec Spec(std::string verifier,
                    std::map<std::string, double> weights = {{"accuracy", 1}}) {
  RewardTaskSpec s;
  s.verifier = std::move(verifier);
  s.weights = std::move(weights);
  return s;
}

ScorerOptions BaseOptions(MetricsRegistry* reg) {
  ScorerOptions o;
  o.workers = 2;
  o.sample_timeout_seconds = 5;
  o.metrics = reg;
  o.tasks["math"] = Spec("math");
  o.tasks["gsm8k"] = Spec("gsm8k");
  o.tasks["countdown"] = Spec("countdown");
  RewardTaskSpec r1 = Spec("math", {{"accuracy", 1.0}, {"format", 0.5}, {"language", 0.25}});
  r1.format = "r1-zero";
  r1.language = "en";
  o.tasks["math_r1"] = r1;
  RewardTaskSpec len = Spec("gsm8k", {{"accuracy", 1.0}, {"length", 1.0}});
  len.max_length = 100;
  len.cache_length = 20;
  o.tasks["gsm8k_len"] = len;
  return o;
}

Sample MakeSample(std::string task, std::string completion, std::string answer,
                  std::string id = "s") {
  Sample s;
  s.id = std::move(id);
  s.task = std::move(task);
  s.completion = std::move(completion);
  s.answer = std::move(answer);
  return s;
}

class ScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Scorer::Create(BaseOptions(&registry_));
    ASSERT_TRUE(s.ok()) << s.status();
    scorer_ = std::move(*s);
  }
  MetricsRegistry registry_;
  std::unique_ptr<Scorer> scorer_;
};

TEST_F(ScorerTest, AccuracyPerVerifier) {
  Result r = scorer_->ScoreNow(MakeSample("math", "So \\boxed{\\frac{1}{2}}.", "0.5"));
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.reward, 1.0);
  EXPECT_DOUBLE_EQ(r.components.at("accuracy"), 1.0);

  r = scorer_->ScoreNow(MakeSample("math", "So \\boxed{12}.", "1/2"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_DOUBLE_EQ(r.reward, 0.0);

  r = scorer_->ScoreNow(MakeSample("gsm8k", "3 + 4 = 7\n#### 7", "She has 3+4=7 apples.\n#### 7"));
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.reward, 1.0);

  Sample cd = MakeSample("countdown", "<answer>(6 - 2) * 6</answer>", "");
  cd.extra = {{"numbers", {6, 2, 6}}, {"target", 24}};
  r = scorer_->ScoreNow(cd);
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.reward, 1.0) << r.reason;

  // No answer at all is the policy's failure: OK with 0.
  r = scorer_->ScoreNow(MakeSample("math", "I don't know.", "3"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_DOUBLE_EQ(r.reward, 0.0);
}

TEST(ScorerRegistryTest, EveryVerifierNameIsAcceptedAndImplemented) {
  MetricsRegistry reg;
  ScorerOptions o;
  o.workers = 1;
  o.metrics = &reg;
  o.sandbox.bwrap_path = "/nonexistent/bwrap";  // `code` answers ERROR, saying why
  for (std::string_view name : kVerifierNames) o.tasks[std::string(name)] = Spec("");
  auto s = Scorer::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  for (std::string_view name : kVerifierNames) {
    Result r = (*s)->ScoreNow(MakeSample(std::string(name), "x", "y"));
    EXPECT_EQ(r.reason.find("not implemented"), std::string::npos) << name << ": " << r.reason;
  }
  o.tasks["bad"] = Spec("poetry");
  auto bad = Scorer::Create(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("expected " + VerifierNamesText()), std::string::npos)
      << bad.status();
}

TEST_F(ScorerTest, RewardIsTheWeightedSumOfComponents) {
  Result r = scorer_->ScoreNow(
      MakeSample("math_r1", "<think> two plus two is four </think> <answer> 4 </answer>", "4"));
  ASSERT_EQ(r.status, Status::kOk) << r.reason;
  ASSERT_EQ(r.components.size(), 3u);
  EXPECT_DOUBLE_EQ(r.components.at("accuracy"), 1.0);
  EXPECT_DOUBLE_EQ(r.components.at("format"), 1.0);
  EXPECT_GT(r.components.at("language"), 0.5);
  EXPECT_DOUBLE_EQ(r.reward,
                   1.0 + 0.5 * r.components.at("format") + 0.25 * r.components.at("language"));

  Sample len = MakeSample("gsm8k_len", "#### 5", "#### 5");
  len.completion_tokens = 90;  // 10 tokens into the 20-token window
  r = scorer_->ScoreNow(len);
  ASSERT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.components.at("length"), -0.5);
  EXPECT_DOUBLE_EQ(r.reward, 0.5);
}

TEST_F(ScorerTest, UnscorableSamplesAreNeverZero) {
  Result r = scorer_->ScoreNow(MakeSample("poetry", "x", "y"));
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_NE(r.reason.find("unknown task 'poetry'"), std::string::npos) << r.reason;
  EXPECT_TRUE(std::isnan(r.reward));

  r = scorer_->ScoreNow(MakeSample("", "x", "y"));
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_EQ(r.reason, "task: empty");

  // A reference without a number cannot be scored.
  r = scorer_->ScoreNow(MakeSample("gsm8k", "#### 5", "no number here"));
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_TRUE(std::isnan(r.reward));
  EXPECT_NE(r.reason.find("accuracy"), std::string::npos);

  // Countdown without its fields.
  r = scorer_->ScoreNow(MakeSample("countdown", "<answer>1+2</answer>", ""));
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_TRUE(std::isnan(r.reward));

  // A negative token count makes the length component INVALID, so the
  // sample is, although its accuracy computed.
  Sample len = MakeSample("gsm8k_len", "#### 5", "#### 5");
  len.completion_tokens = -3;
  r = scorer_->ScoreNow(len);
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_TRUE(std::isnan(r.reward));
  EXPECT_DOUBLE_EQ(r.components.at("accuracy"), 1.0);
  EXPECT_NE(r.reason.find("length"), std::string::npos);
}

TEST(ScorerConfig, BadTaskSpecsAreRejectedByName) {
  MetricsRegistry reg;
  auto bad = [&](auto mutate) {
    ScorerOptions o = BaseOptions(&reg);
    mutate(o);
    auto s = Scorer::Create(o);
    return s.ok() ? std::string("OK") : std::string(s.status().message());
  };
  EXPECT_NE(bad([](ScorerOptions& o) {
              o.tasks["math"].weights["style"] = 1;
            }).find("reward.tasks.math.weights.style"),
            std::string::npos);
  EXPECT_NE(
      bad([](ScorerOptions& o) { o.tasks["x"] = Spec("lean"); }).find("reward.tasks.x.verifier"),
      std::string::npos);
  EXPECT_NE(bad([](ScorerOptions& o) {
              o.tasks["math"].weights["language"] = 1;
            }).find("reward.tasks.math.language"),
            std::string::npos);
  EXPECT_NE(bad([](ScorerOptions& o) { o.tasks["math"].weights["length"] = 1; }).find("max_length"),
            std::string::npos);
  EXPECT_NE(
      bad([](ScorerOptions& o) { o.sample_timeout_seconds = 0; }).find("sample_timeout_seconds"),
      std::string::npos);
}

TEST(ScorerConfig, MathOptionsComeFromTheTaskSpec) {
  MetricsRegistry reg;
  ScorerOptions o = BaseOptions(&reg);
  RewardTaskSpec eu = Spec("math");
  eu.decimal_comma = true;
  eu.ordered_lists = true;
  eu.relative_tolerance = 1e-3;
  o.tasks["math_eu"] = eu;
  auto s = Scorer::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  auto accuracy = [&](const std::string& task, const std::string& said, const std::string& ref) {
    Result r = (*s)->ScoreNow(MakeSample(task, "\\boxed{" + said + "}", ref));
    EXPECT_EQ(r.status, Status::kOk) << r.reason;
    return r.components.at("accuracy");
  };
  EXPECT_EQ(accuracy("math", "1,5", "1.5"), 0.0);
  EXPECT_EQ(accuracy("math_eu", "1,5", "1.5"), 1.0);
  EXPECT_EQ(accuracy("math", "3, 5", "5, 3"), 1.0);
  EXPECT_EQ(accuracy("math_eu", "3; 5", "5; 3"), 0.0);
  EXPECT_EQ(accuracy("math", "3.1416", "\\pi"), 0.0);
  EXPECT_EQ(accuracy("math_eu", "3.1416", "\\pi"), 1.0);
}

TEST(ScorerCode, CodeTaskUsesTheSandboxOrSaysWhyNot) {
  MetricsRegistry reg;
  ScorerOptions o = BaseOptions(&reg);
  o.tasks["code"] = Spec("code");
  o.sandbox.first_uid = 62100;
  o.sandbox.uid_count = 4;
  auto s = Scorer::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  Sample c = MakeSample("code", "```python\ndef f(x):\n    return 2 * x\n```", "");
  c.extra = {{"tests", {"assert f(2) == 4", "assert f(3) == 7"}}};
  if ((*s)->sandbox_error().empty()) {
    Result r = (*s)->ScoreNow(c);
    EXPECT_EQ(r.status, Status::kOk) << r.reason;
    EXPECT_DOUBLE_EQ(r.reward, 0.5) << r.reason;
  }

  o.sandbox.bwrap_path = "/nonexistent/bwrap";
  auto broken = Scorer::Create(o);
  ASSERT_TRUE(broken.ok()) << broken.status();
  EXPECT_NE((*broken)->sandbox_error().find("bubblewrap not found"), std::string::npos);
  Result r = (*broken)->ScoreNow(c);
  EXPECT_EQ(r.status, Status::kError);
  EXPECT_TRUE(std::isnan(r.reward));
  EXPECT_NE(r.reason.find("bubblewrap not found"), std::string::npos);
  // Other tasks still work.
  EXPECT_EQ((*broken)->ScoreNow(MakeSample("math", "\\boxed{2}", "2")).reward, 1.0);
}

TEST(ScorerRemote, EndpointTasksCallTheRemoteServer) {
  FakeServer remote;
  MetricsRegistry reg;
  ScorerOptions o = BaseOptions(&reg);
  o.sample_timeout_seconds = 0.3;
  RewardTaskSpec rm;
  rm.endpoint = remote.address();
  o.tasks["rm"] = rm;
  RewardTaskSpec down;
  down.endpoint = "127.0.0.1:1";
  o.tasks["down"] = down;
  o.workers = 1;
  auto s = Scorer::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();

  Result r = (*s)->ScoreNow(MakeSample("rm", "0123456789abcde", ""));
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.reward, 1.5);
  EXPECT_DOUBLE_EQ(r.components.at("rm"), 1.5);

  r = (*s)->ScoreNow(MakeSample("down", "x", ""));
  EXPECT_EQ(r.status, Status::kError);
  EXPECT_TRUE(std::isnan(r.reward));
  EXPECT_NE(r.reason.find("127.0.0.1:1"), std::string::npos) << r.reason;

  // A slow remote: each sample times out 0.3 s after ITS start, although
  // with one worker the third waited ~0.6 s in the queue.
  remote.service.delay_ms = 1500;
  auto start = absl::Now();
  std::vector<Sample> batch;
  for (int i = 0; i < 3; ++i) {
    batch.push_back(MakeSample("rm", "abc", "", "slow" + std::to_string(i)));
  }
  auto results = (*s)->ScoreBatch(batch, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(850));
  for (const Result& x : *results) {
    EXPECT_EQ(x.status, Status::kTimeout) << x.reason;
    EXPECT_TRUE(std::isnan(x.reward));
    EXPECT_LT(x.verify_seconds, 0.6) << x.id;
    EXPECT_GE(x.verify_seconds, 0.25) << x.id;
  }
  EXPECT_EQ((*results)[2].id, "slow2");
}

TEST_F(ScorerTest, BatchesKeepOrderAcrossWorkers) {
  std::vector<Sample> batch;
  for (int i = 0; i < 200; ++i) {
    batch.push_back(MakeSample("gsm8k", "#### " + std::to_string(i % 7),
                               "#### " + std::to_string(i % 5), "id" + std::to_string(i)));
  }
  auto results = scorer_->ScoreBatch(batch, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(results->size(), 200u);
  for (int i = 0; i < 200; ++i) {
    const Result& r = (*results)[i];
    EXPECT_EQ(r.id, "id" + std::to_string(i));
    EXPECT_EQ(r.status, Status::kOk);
    EXPECT_EQ(r.reward, (i % 7 == i % 5) ? 1.0 : 0.0) << i;
  }
  EXPECT_EQ(registry_
                .GetCounter("cohort_reward_samples_total", "Samples scored, by task and status.",
                            {{"task", "gsm8k"}, {"status", "OK"}})
                ->Value(),
            200);
}

TEST(ScorerDeadline, BatchPastItsDeadlineIsDeadlineExceeded) {
  FakeServer remote;
  remote.service.delay_ms = 400;
  MetricsRegistry reg;
  ScorerOptions o = BaseOptions(&reg);
  RewardTaskSpec rm;
  rm.endpoint = remote.address();
  o.tasks["rm"] = rm;
  o.workers = 1;
  auto s = Scorer::Create(o);
  ASSERT_TRUE(s.ok());
  std::vector<Sample> batch(5, MakeSample("rm", "x", ""));
  auto r = (*s)->ScoreBatch(batch, absl::Now() + absl::Milliseconds(150));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The samples that had not started are skipped, not scored.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_LE(remote.service.calls.load(), 2);
  EXPECT_EQ((*s)->queue_depth(), 0);
}

}  // namespace
}  // namespace cohort::reward
