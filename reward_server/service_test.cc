// The reward service on a real gRPC server (ephemeral port) under
// concurrent load, with deadlines exceeded and malformed requests mixed in.
#include "reward_server/service.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "core/rpc.h"
#include "gtest/gtest.h"

namespace cohort::reward {
namespace {

// Stands in for a slow user reward model: sleeps, then scores 0.5.
class SlowModel final : public cohort::v1::Reward::Service {
 public:
  grpc::Status Score(grpc::ServerContext*, const cohort::v1::ScoreRequest* req,
                     cohort::v1::ScoreResponse* resp) override {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (const auto& s : req->samples()) {
      auto* r = resp->add_results();
      r->set_id(s.id());
      r->set_status(cohort::v1::REWARD_STATUS_OK);
      r->set_reward(0.5);
    }
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
};

cohort::v1::ScoreSample MakeSample(const std::string& id, const std::string& task,
                                   const std::string& completion, const std::string& answer,
                                   const std::string& extra = "") {
  cohort::v1::ScoreSample s;
  s.set_id(id);
  s.set_task(task);
  s.set_completion(completion);
  s.set_answer(answer);
  s.set_extra_json(extra);
  return s;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions slow_opts;
    auto slow = RpcServer::Start(slow_opts, {&slow_model_});
    ASSERT_TRUE(slow.ok()) << slow.status();
    slow_server_ = std::move(*slow);

    ScorerOptions o;
    o.workers = 2;
    o.sample_timeout_seconds = 2;
    o.metrics = &registry_;
    for (const char* t : {"math", "gsm8k"}) {
      RewardTaskSpec spec;
      spec.verifier = t;
      o.tasks[t] = spec;
    }
    RewardTaskSpec code;
    code.verifier = "code";
    o.tasks["code"] = code;
    RewardTaskSpec slow_spec;
    slow_spec.endpoint = slow_server_->address();
    o.tasks["slow"] = slow_spec;
    o.sandbox.first_uid = 62200;
    o.sandbox.uid_count = 4;
    o.sandbox.limits.wall_seconds = 1;
    auto scorer = Scorer::Create(o);
    ASSERT_TRUE(scorer.ok()) << scorer.status();
    scorer_ = std::move(*scorer);

    RewardServiceOptions so;
    so.max_batch = 64;
    so.max_field_bytes = 256 << 10;
    so.metrics = &registry_;
    service_ = std::make_unique<RewardService>(scorer_.get(), so);
    ServerOptions opts;
    opts.max_message_bytes = 1 << 20;
    auto server = RpcServer::Start(opts, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(2));
    if (slow_server_) slow_server_->Shutdown(absl::Seconds(2));
  }

  grpc::Status Call(const cohort::v1::ScoreRequest& req, cohort::v1::ScoreResponse* resp,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto stub = cohort::v1::Reward::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub->Score(&ctx, req, resp);
  }

  double Counter(const std::string& name, const std::string& help, const Labels& labels) {
    return registry_.GetCounter(name, help, labels)->Value();
  }

  MetricsRegistry registry_;
  SlowModel slow_model_;
  std::unique_ptr<RpcServer> slow_server_;
  std::unique_ptr<Scorer> scorer_;
  std::unique_ptr<RewardService> service_;
  std::unique_ptr<RpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ServiceTest, ScoresABatchInOrder) {
  cohort::v1::ScoreRequest req;
  *req.add_samples() = MakeSample("a", "math", "\\boxed{\\dfrac{3}{4}}", "0.75");
  *req.add_samples() = MakeSample("b", "gsm8k", "#### 1,000", "#### 1000");
  *req.add_samples() = MakeSample("c", "math", "\\boxed{5}", "6");
  *req.add_samples() = MakeSample("d", "nope", "x", "y");
  cohort::v1::ScoreResponse resp;
  grpc::Status st = Call(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.results_size(), 4);
  EXPECT_EQ(resp.results(0).id(), "a");
  EXPECT_EQ(resp.results(0).status(), cohort::v1::REWARD_STATUS_OK);
  EXPECT_EQ(resp.results(0).reward(), 1.0);
  EXPECT_EQ(resp.results(0).components().at("accuracy"), 1.0);
  EXPECT_EQ(resp.results(1).reward(), 1.0);
  EXPECT_EQ(resp.results(2).status(), cohort::v1::REWARD_STATUS_OK);
  EXPECT_EQ(resp.results(2).reward(), 0.0);
  EXPECT_EQ(resp.results(3).status(), cohort::v1::REWARD_STATUS_INVALID);
  EXPECT_TRUE(std::isnan(resp.results(3).reward()));
  EXPECT_NE(resp.results(3).reason().find("unknown task 'nope'"), std::string::npos);
}

TEST(ResultToProtoTest, ReasonsAreAlwaysValidUtf8) {
  Result r;
  r.id = "x";
  r.status = Status::kOk;
  r.reason = std::string("cut \xE4\xB8") + " mid-character, \xFF, ok: \xE4\xB8\xAD";
  cohort::v1::RewardResult out;
  ResultToProto(r, &out);
  EXPECT_EQ(out.reason(), "cut ?? mid-character, ?, ok: \xE4\xB8\xAD");
  std::string wire;
  ASSERT_TRUE(out.SerializeToString(&wire));
  cohort::v1::RewardResult back;
  EXPECT_TRUE(back.ParseFromString(wire));
}

TEST_F(ServiceTest, MalformedRequestsNameTheField) {
  cohort::v1::ScoreResponse resp;
  cohort::v1::ScoreRequest req;
  *req.add_samples() = MakeSample("a", "math", "\\boxed{1}", "1");
  *req.add_samples() = MakeSample("b", "math", "\\boxed{1}", "1");
  *req.add_samples() = MakeSample("c", "math", "\\boxed{1}", "1");
  *req.add_samples() = MakeSample("d", "", "\\boxed{1}", "1");
  grpc::Status st = Call(req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "samples[3].task: empty");

  req.mutable_samples(3)->set_task("code");
  req.mutable_samples(3)->set_extra_json("[1, 2");
  st = Call(req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "samples[3].extra_json: not a JSON object");

  req.mutable_samples(0)->set_id("");
  st = Call(req, &resp);
  EXPECT_EQ(st.error_message(), "samples[0].id: empty");

  cohort::v1::ScoreRequest big;
  for (int i = 0; i < 65; ++i) {
    *big.add_samples() = MakeSample("x", "math", "\\boxed{1}", "1");
  }
  st = Call(big, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("max_batch of 64"), std::string::npos);

  cohort::v1::ScoreRequest long_field;
  *long_field.add_samples() = MakeSample("x", "math", std::string(300 << 10, 'a'), "1");
  st = Call(long_field, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("samples[0].completion: 307200 bytes"), std::string::npos)
      << st.error_message();

  cohort::v1::ScoreRequest huge;  // over the server's 1 MiB message limit
  *huge.add_samples() = MakeSample("x", "math", std::string(2 << 20, 'a'), "1");
  st = Call(huge, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(ServiceTest, CallerDeadlineIsHonoured) {
  cohort::v1::ScoreRequest req;
  for (int i = 0; i < 4; ++i) {
    *req.add_samples() = MakeSample("s" + std::to_string(i), "slow", "x", "");
  }
  cohort::v1::ScoreResponse resp;
  auto start = std::chrono::steady_clock::now();
  grpc::Status st = Call(req, &resp, std::chrono::milliseconds(200));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  // The server is still answering.
  cohort::v1::ScoreRequest ok;
  *ok.add_samples() = MakeSample("a", "math", "\\boxed{2}", "2");
  st = Call(ok, &resp);
  EXPECT_TRUE(st.ok());
}

// Polls `fn` for up to `limit`; true once it holds.
template <typename Fn>
bool Eventually(Fn fn, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!fn()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

TEST_F(ServiceTest, CancelledCallIsAnsweredAtOnceAndSkipsUnstartedSamples) {
  const std::string help = "Score calls answered, by gRPC status code.";
  cohort::v1::ScoreRequest req;
  for (int i = 0; i < 8; ++i) {
    *req.add_samples() = MakeSample("s" + std::to_string(i), "slow", "x", "");
  }
  auto stub = cohort::v1::Reward::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ctx.TryCancel();
  });
  cohort::v1::ScoreResponse resp;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status st = stub->Score(&ctx, req, &resp);
  canceller.join();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  // The server answered CANCELLED itself (OnCancel), not after the batch.
  EXPECT_TRUE(Eventually(
      [&] {
        return Counter("cohort_reward_batches_total", help, {{"code", "CANCELLED"}}) == 1;
      },
      std::chrono::seconds(2)));
  EXPECT_EQ(Counter("cohort_reward_batches_total", help, {{"code", "OK"}}), 0);
  // Only the samples the 2 workers had started reach the slow model.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_LE(slow_model_.calls.load(), 2);
  EXPECT_EQ(scorer_->queue_depth(), 0);

  // A missed deadline is answered by the server as DEADLINE_EXCEEDED.
  grpc::Status late = Call(req, &resp, std::chrono::milliseconds(100));
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually(
      [&] {
        return Counter("cohort_reward_batches_total", help, {{"code", "DEADLINE_EXCEEDED"}}) == 1;
      },
      std::chrono::seconds(2)));
  // And the server still answers.
  cohort::v1::ScoreRequest ok;
  *ok.add_samples() = MakeSample("a", "math", "\\boxed{2}", "2");
  st = Call(ok, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.results(0).reward(), 1.0);
}

TEST_F(ServiceTest, ConcurrentLoadWithFailuresMixedIn) {
  const bool sandbox = scorer_->sandbox_error().empty();
  std::atomic<int> ok_calls{0}, deadline_calls{0}, invalid_calls{0}, bad_results{0}, checked{0};
  auto client = [&](int t) {
    for (int round = 0; round < 12; ++round) {
      cohort::v1::ScoreRequest req;
      cohort::v1::ScoreResponse resp;
      const int kind = (t + round) % 6;
      std::chrono::milliseconds timeout(20000);
      if (kind == 0) {  // malformed
        *req.add_samples() = MakeSample("m", "math", "\\boxed{1}", "1");
        *req.add_samples() = MakeSample("", "math", "\\boxed{1}", "1");
      } else if (kind == 1) {  // will miss its deadline
        *req.add_samples() = MakeSample("s", "slow", "x", "");
        timeout = std::chrono::milliseconds(100);
      } else if (kind == 2 && sandbox) {  // hostile and honest code
        *req.add_samples() = MakeSample("loop", "code", "```python\nwhile True: pass\n```", "",
                                        R"({"tests": ["assert f(1) == 1"]})");
        *req.add_samples() = MakeSample("forkbomb", "code",
                                        "```python\nimport os\nwhile True:\n    try: os.fork()\n"
                                        "    except OSError: pass\n```",
                                        "", R"({"tests": ["assert f(1) == 1"]})");
        *req.add_samples() =
            MakeSample("good", "code", "```python\ndef f(x):\n    return x\n```", "",
                       R"({"tests": ["assert f(1) == 1", "assert f(2) == 3"]})");
      } else {  // math and gsm8k, half right
        for (int i = 0; i < 16; ++i) {
          int v = t * 100 + round * 16 + i;
          *req.add_samples() =
              MakeSample(std::to_string(v), i % 2 ? "math" : "gsm8k",
                         i % 2 ? "\\boxed{" + std::to_string(v) + "}" : "#### " + std::to_string(v),
                         std::to_string(i % 4 < 2 ? v : v + 1));
        }
        *req.add_samples() = MakeSample("bad", "gsm8k", "#### 1", "none");
      }
      grpc::Status st = Call(req, &resp, timeout);
      if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        ++deadline_calls;
        EXPECT_EQ(kind, 1);
        continue;
      }
      if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        ++invalid_calls;
        EXPECT_EQ(st.error_message(), "samples[1].id: empty");
        continue;
      }
      ASSERT_TRUE(st.ok()) << st.error_message();
      ++ok_calls;
      ASSERT_EQ(resp.results_size(), req.samples_size());
      for (int i = 0; i < resp.results_size(); ++i) {
        const auto& r = resp.results(i);
        EXPECT_EQ(r.id(), req.samples(i).id());
        if (r.status() == cohort::v1::REWARD_STATUS_OK) {
          if (std::isnan(r.reward())) ++bad_results;
        } else if (!std::isnan(r.reward()) || r.reason().empty()) {
          ++bad_results;  // a failure must never look like a score
        }
        if (r.id() == "loop" || r.id() == "forkbomb") {
          EXPECT_EQ(r.status(), cohort::v1::REWARD_STATUS_OK) << r.reason();
          EXPECT_EQ(r.reward(), 0.0);
        } else if (r.id() == "good") {
          EXPECT_EQ(r.reward(), 0.5) << r.reason();
        } else if (r.id() == "bad") {
          EXPECT_EQ(r.status(), cohort::v1::REWARD_STATUS_INVALID);
        } else if (kind >= 2) {
          int v = std::stoi(r.id());
          int i = (v - t * 100 - round * 16);
          EXPECT_EQ(r.status(), cohort::v1::REWARD_STATUS_OK) << r.reason();
          EXPECT_EQ(r.reward(), i % 4 < 2 ? 1.0 : 0.0) << r.id();
          ++checked;
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) threads.emplace_back(client, t);
  for (auto& th : threads) th.join();

  EXPECT_EQ(bad_results.load(), 0);
  EXPECT_EQ(deadline_calls.load(), 12);
  EXPECT_EQ(invalid_calls.load(), 12);
  EXPECT_EQ(ok_calls.load(), 48);
  EXPECT_GT(checked.load(), 500);
  EXPECT_EQ(Counter("cohort_reward_batches_total", "Score calls answered, by gRPC status code.",
                    {{"code", "INVALID_ARGUMENT"}}),
            12);
  EXPECT_EQ(Counter("cohort_reward_batches_total", "Score calls answered, by gRPC status code.",
                    {{"code", "OK"}}),
            48);
  EXPECT_GE(Counter("cohort_reward_samples_total", "Samples scored, by task and status.",
                    {{"task", "gsm8k"}, {"status", "INVALID"}}),
            1);
}

}  // namespace
}  // namespace cohort::reward
