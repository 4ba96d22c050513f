#include "actor/reward_client.h"

#include <atomic>
#include <cmath>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "cohort/v1/reward.grpc.pb.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;
using ::testing::HasSubstr;

// A Reward server that scores 1.0 per sample, or fails with `fail_code`.
class FakeReward final : public v1::Reward::Service {
 public:
  grpc::Status Score(grpc::ServerContext*, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override {
    ++calls;
    if (fail_code.load() != grpc::StatusCode::OK) {
      return grpc::Status(fail_code.load(), "injected failure");
    }
    for (const auto& s : request->samples()) {
      v1::RewardResult* r = response->add_results();
      r->set_id(s.id());
      r->set_status(error_samples ? v1::REWARD_STATUS_ERROR : v1::REWARD_STATUS_OK);
      r->set_reward(error_samples ? NAN : 1.0);
    }
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  std::atomic<grpc::StatusCode> fail_code{grpc::StatusCode::OK};
  std::atomic<bool> error_samples{false};
};

struct Server {
  FakeReward service;
  std::unique_ptr<RpcServer> server;
  void Start(int port = 0) {
    ServerOptions o;
    o.port = port;
    auto s = RpcServer::Start(o, {&service});
    ASSERT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
  }
};

std::vector<v1::ScoreSample> Samples(int n) {
  std::vector<v1::ScoreSample> out(n);
  for (int i = 0; i < n; ++i) {
    out[i].set_id("s" + std::to_string(i));
    out[i].set_task("math");
    out[i].set_completion("x");
  }
  return out;
}

RewardClientOptions Options(std::vector<std::string> addresses) {
  RewardClientOptions o;
  o.addresses = std::move(addresses);
  o.rpc_timeout = absl::Seconds(2);
  o.give_up_after = absl::Seconds(3);
  o.backoff.initial_backoff = absl::Milliseconds(20);
  o.backoff.max_backoff = absl::Milliseconds(200);
  o.max_batch = 4;
  return o;
}

TEST(RewardClient, SpreadsOverServersAndSkipsAFailingOne) {
  Server a, b;
  a.Start();
  b.Start();
  MetricsRegistry metrics;
  RewardClientOptions o = Options({a.server->address(), b.server->address()});
  o.metrics = &metrics;
  auto client = MakeGrpcRewardClient(o);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 4; ++i) (*client)->Score(Samples(4));
  EXPECT_GT(a.service.calls.load(), 0);
  EXPECT_GT(b.service.calls.load(), 0);
  a.service.fail_code = grpc::StatusCode::UNAVAILABLE;
  std::vector<v1::RewardResult> r = (*client)->Score(Samples(10));  // 3 batches
  ASSERT_EQ(r.size(), 10u);
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].status(), v1::REWARD_STATUS_OK);
    EXPECT_EQ(r[i].id(), "s" + std::to_string(i));
    EXPECT_EQ(r[i].reward(), 1.0);
  }
  EXPECT_THAT(metrics.Render(), HasSubstr("cohort_actor_reward_retries_total"));
}

TEST(RewardClient, OutageBacksOffThenResumesOrReportsErrorNeverZero) {
  Server a;
  a.Start();
  const int port = a.server->port();
  const std::string address = a.server->address();
  a.server->Shutdown(absl::Seconds(1));
  auto client = MakeGrpcRewardClient(Options({address}));
  ASSERT_TRUE(client.ok());
  // Down for good: every sample ERROR with NaN after give_up_after.
  absl::Time start = absl::Now();
  std::vector<v1::RewardResult> r = (*client)->Score(Samples(3));
  EXPECT_GE(absl::Now() - start, absl::Seconds(2));
  for (const auto& x : r) {
    EXPECT_EQ(x.status(), v1::REWARD_STATUS_ERROR);
    EXPECT_TRUE(std::isnan(x.reward()));
    EXPECT_THAT(x.reason(), HasSubstr("not scored"));
  }
  // Comes back on its port within the retry window: scored normally.
  Server again;
  std::thread restart([&] {
    absl::SleepFor(absl::Milliseconds(500));
    again.Start(port);
  });
  r = (*client)->Score(Samples(3));
  restart.join();
  for (const auto& x : r) EXPECT_EQ(x.status(), v1::REWARD_STATUS_OK) << x.reason();
}

TEST(RewardClient, ErrorSamplesAreRetriedElsewhereAndInvalidRequestsAreNot) {
  Server a, b;
  a.Start();
  b.Start();
  a.service.error_samples = true;
  auto client = MakeGrpcRewardClient(Options({a.server->address(), b.server->address()}));
  ASSERT_TRUE(client.ok());
  for (int i = 0; i < 3; ++i) {
    for (const auto& x : (*client)->Score(Samples(2))) {
      EXPECT_EQ(x.status(), v1::REWARD_STATUS_OK);
    }
  }
  b.service.fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  a.service.fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  const int before = a.service.calls + b.service.calls;
  for (const auto& x : (*client)->Score(Samples(2))) {
    EXPECT_EQ(x.status(), v1::REWARD_STATUS_ERROR);
    EXPECT_THAT(x.reason(), HasSubstr("injected failure"));
  }
  EXPECT_EQ(a.service.calls + b.service.calls, before + 1) << "no retry of a refused request";
}

TEST(RewardClient, NeedsAnAddress) {
  EXPECT_THAT(MakeGrpcRewardClient(RewardClientOptions()).status().message(),
              HasSubstr("no reward server address"));
}

}  // namespace
}  // namespace cohort::actor
