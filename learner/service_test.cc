// cohort.v1.Learner and cohort.v1.Admin over real gRPC on an ephemeral
// loopback port, driven by a fake actor client.
#include "learner/service.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "core/crc32c.h"
#include "core/rpc.h"

namespace cohort::learner {
namespace {

constexpr char kToken[] = "actor-token";
constexpr char kAdminToken[] = "admin-token";

WeightTensor Bf16(const std::string& name, std::vector<uint8_t> bytes) {
  WeightTensor t;
  t.name = name;
  t.dtype = WeightDType::kBF16;
  t.shape = {static_cast<int64_t>(bytes.size() / 2)};
  auto data = AllocateWeightBytes(bytes.size());
  std::memcpy(data.get(), bytes.data(), bytes.size());
  t.data = data;
  t.size = static_cast<int64_t>(bytes.size());
  return t;
}

class FakeControl : public LearnerControl {
 public:
  absl::StatusOr<v1::CheckpointResponse> CheckpointNow() override {
    v1::CheckpointResponse r;
    r.set_path("/tmp/ckpt-1");
    r.set_step(1);
    return r;
  }
  void StartDrain() override { drained = true; }
  void FillStatus(v1::RunStatus* s) override {
    s->set_run_id("run-1");
    s->set_stage("grpo");
    s->set_stage_kind("grpo");
  }
  bool drained = false;
};

class LearnerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LedgerOptions lo;
    lo.num_prompts = 4;
    lo.prompts_per_step = 2;
    lo.max_staleness = 1;
    lo.max_lease_attempts = 2;
    ledger_ = std::shared_ptr<Ledger>(*Ledger::Create(lo));
    auto prompts = std::make_shared<std::vector<StagePrompt>>();
    for (int i = 0; i < 4; ++i) {
      prompts->push_back({{1, 2, 3},
                          "what is " + std::to_string(i),
                          "math",
                          "4",
                          "{}",
                          "uid-" + std::to_string(i)});
    }
    LearnerServiceOptions o;
    o.run_id = "run-1";
    o.model.set_model_fingerprint("fp-tiny");
    o.model.set_config_json("{\"vocab_size\": 100}");
    o.model.add_eos_token_ids(2);
    o.vocab_size = 100;
    o.reward_addresses = {"127.0.0.1:1", "127.0.0.1:2"};
    o.metrics = &registry_;
    o.chunk_bytes = 64;
    store_ =
        std::make_unique<WeightStore>(WeightStoreOptions{.keep_versions = 3, .chunk_bytes = 64});
    std::vector<uint8_t> w(300);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<uint8_t>(i * 7);
    weights0_ = w;
    WeightSnapshot s;
    s.tensors = {Bf16("w", w), Bf16("b", {1, 2, 3, 4})};
    ASSERT_TRUE(store_->Publish(0, s).ok());
    ASSERT_TRUE(store_->WaitPublished(0, absl::Seconds(10)));
    service_ = std::make_unique<LearnerService>(o, store_.get());
    LeaseStage stage;
    stage.name = "grpo";
    stage.ledger = ledger_;
    stage.prompts = prompts;
    stage.group_size = 3;
    stage.sampling.set_temperature(1.0);
    stage.sampling.set_max_new_tokens(8);
    service_->SetStage(stage);
    admin_ = std::make_unique<AdminService>(service_.get(), &control_, true);
    ServerOptions so;
    so.bearer_token = kToken;
    so.admin_token = kAdminToken;
    server_ = *RpcServer::Start(so, {service_.get(), admin_.get()});
    ChannelOptions co;
    co.bearer_token = kToken;
    auto channel = *MakeChannel(server_->address(), co);
    stub_ = v1::Learner::NewStub(channel);
    actor_admin_ = v1::Admin::NewStub(channel);
    co.bearer_token = kAdminToken;
    admin_stub_ = v1::Admin::NewStub(*MakeChannel(server_->address(), co));
  }

  void TearDown() override { server_->Shutdown(absl::Seconds(2)); }

  std::string Join(const std::string& name = "fake-actor") {
    grpc::ClientContext ctx;
    v1::JoinRequest req;
    req.set_actor_name(name);
    req.set_slots(4);
    req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
    v1::JoinResponse resp;
    grpc::Status s = stub_->Join(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.actor_id();
  }

  v1::ScoredGroup Group(const v1::Lease& lease, std::vector<double> rewards) {
    v1::ScoredGroup g;
    g.set_prompt_id(lease.prompt_id());
    g.set_epoch(lease.epoch());
    g.set_lease_id(lease.lease_id());
    for (double r : rewards) {
      v1::Completion* c = g.add_completions();
      for (int t = 0; t < 3; ++t) {
        c->add_token_ids(5 + t);
        c->add_logprobs(-0.5f);
        c->add_policy_versions(0);
      }
      c->set_finish_reason(v1::FINISH_REASON_EOS);
      c->mutable_reward()->set_status(std::isnan(r) ? v1::REWARD_STATUS_TIMEOUT
                                                    : v1::REWARD_STATUS_OK);
      c->mutable_reward()->set_reward(r);
    }
    return g;
  }

  grpc::Status Submit(const std::string& actor, const v1::ScoredGroup& g,
                      v1::SubmitGroupResponse* resp) {
    grpc::ClientContext ctx;
    v1::SubmitGroupRequest req;
    req.set_actor_id(actor);
    *req.mutable_group() = g;
    return stub_->SubmitGroup(&ctx, req, resp);
  }

  MetricsRegistry registry_;
  std::shared_ptr<Ledger> ledger_;
  std::unique_ptr<WeightStore> store_;
  std::vector<uint8_t> weights0_;
  std::unique_ptr<LearnerService> service_;
  FakeControl control_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<RpcServer> server_;
  std::unique_ptr<v1::Learner::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> actor_admin_, admin_stub_;
};

TEST_F(LearnerServiceTest, JoinChecksProtocolAndFingerprint) {
  grpc::ClientContext c1;
  v1::JoinRequest req;
  req.set_actor_name("old");
  req.set_slots(1);
  v1::JoinResponse resp;
  grpc::Status s = stub_->Join(&c1, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("speaks learner protocol 0, this learner speaks 1"),
            std::string::npos)
      << s.error_message();
  req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  req.set_model_fingerprint("fp-other");
  grpc::ClientContext c2;
  s = stub_->Join(&c2, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("fp-other"), std::string::npos);
  req.set_model_fingerprint("fp-tiny");
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->Join(&c3, req, &resp).ok());
  EXPECT_EQ(resp.model().config_json(), "{\"vocab_size\": 100}");
  EXPECT_EQ(resp.reward_addresses_size(), 2);
  EXPECT_EQ(resp.reward_address(), "127.0.0.1:1");
  EXPECT_EQ(resp.run_id(), "run-1");
  EXPECT_EQ(resp.group_size(), 3);
  EXPECT_EQ(resp.protocol_version(), 1);
}

TEST_F(LearnerServiceTest, LeaseSubmitRefusalsAndStatus) {
  std::string actor = Join();
  grpc::ClientContext lctx;
  v1::LeasePromptsRequest lreq;
  lreq.set_actor_id(actor);
  lreq.set_max_prompts(10);
  v1::LeasePromptsResponse leases;
  ASSERT_TRUE(stub_->LeasePrompts(&lctx, lreq, &leases).ok());
  ASSERT_EQ(leases.leases_size(), 4);  // (K + 1) * P
  const v1::Lease& l0 = leases.leases(0);
  EXPECT_EQ(l0.prompt_uid(), "uid-" + std::to_string(l0.prompt_id()));
  EXPECT_EQ(l0.group_size(), 3);
  EXPECT_NE(l0.sampling().seed(), 0u);
  EXPECT_EQ(l0.prompt_token_ids_size(), 3);

  v1::SubmitGroupResponse resp;
  // Bad input: each refused, naming the field, counted by reason.
  v1::ScoredGroup g = Group(l0, {1, 0, 1});
  g.mutable_completions()->RemoveLast();
  grpc::Status s = Submit(actor, g, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("group.completions"), std::string::npos);
  g = Group(l0, {1, 0, 1});
  g.mutable_completions(1)->set_logprobs(2, std::nanf(""));
  s = Submit(actor, g, &resp);
  EXPECT_NE(s.error_message().find("group.completions[1].logprobs[2]"), std::string::npos);
  g = Group(l0, {1, 0, 1});
  g.mutable_completions(2)->set_token_ids(0, 100);
  s = Submit(actor, g, &resp);
  EXPECT_NE(s.error_message().find("outside the vocabulary"), std::string::npos);
  g = Group(l0, {1, 0, 1});
  g.mutable_completions(0)->add_logprobs(-1);
  s = Submit(actor, g, &resp);
  EXPECT_NE(s.error_message().find("4 values for 3 token_ids"), std::string::npos);
  g = Group(l0, {1, 0, 1});
  g.set_lease_id("L-unknown");
  s = Submit(actor, g, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // An unknown actor must rejoin.
  s = Submit("nobody", Group(l0, {1, 0, 1}), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  // Good submissions, a duplicate, a group with < 2 OK samples (retried).
  ASSERT_TRUE(Submit(actor, Group(l0, {1, 0, 1}), &resp).ok());
  EXPECT_TRUE(resp.accepted());
  ASSERT_TRUE(Submit(actor, Group(l0, {1, 0, 1}), &resp).ok());
  EXPECT_TRUE(resp.duplicate());
  ASSERT_TRUE(Submit(actor, Group(leases.leases(1), {1, NAN, NAN}), &resp).ok());
  EXPECT_TRUE(resp.retry());

  // Heartbeat: renew one, release another.
  grpc::ClientContext hctx;
  v1::HeartbeatRequest hreq;
  hreq.set_actor_id(actor);
  hreq.add_lease_ids(leases.leases(2).lease_id());
  hreq.add_lease_ids(l0.lease_id());  // already submitted: reported
  hreq.add_released_lease_ids(leases.leases(3).lease_id());
  v1::HeartbeatResponse hresp;
  ASSERT_TRUE(stub_->Heartbeat(&hctx, hreq, &hresp).ok());
  ASSERT_EQ(hresp.expired_lease_ids_size(), 1);
  EXPECT_EQ(hresp.expired_lease_ids(0), l0.lease_id());

  // Admin: the actors' token is not enough.
  grpc::ClientContext a1;
  v1::RunStatus status;
  s = actor_admin_->GetStatus(&a1, v1::GetStatusRequest(), &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext a2;
  v1::DrainResponse dr;
  EXPECT_EQ(actor_admin_->Drain(&a2, v1::DrainRequest(), &dr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(control_.drained);
  grpc::ClientContext a3;
  ASSERT_TRUE(admin_stub_->GetStatus(&a3, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.run_id(), "run-1");
  EXPECT_EQ(status.ledger().prompts_total(), 4);
  EXPECT_EQ(status.ledger().buffered(), 1);
  EXPECT_EQ(status.ledger().queued(), 2);  // the retried one and the released one
  EXPECT_EQ(status.ledger().leased(), 1);
  EXPECT_EQ(status.ledger().leases_released(), 1);
  EXPECT_EQ(status.refusals().at("bad_logprobs"), 2);
  EXPECT_EQ(status.refusals().at("bad_token_ids"), 1);
  EXPECT_EQ(status.refusals().at("bad_group_size"), 1);
  EXPECT_EQ(status.refusals().at("unknown_lease"), 1);
  ASSERT_EQ(status.actors_size(), 1);
  EXPECT_EQ(status.actors(0).groups_submitted(), 2);
  EXPECT_EQ(status.actors(0).tokens_generated(), 18);
  grpc::ClientContext a4;
  v1::PauseResponse pr;
  ASSERT_TRUE(admin_stub_->Pause(&a4, v1::PauseRequest(), &pr).ok());
  grpc::ClientContext l2;
  v1::LeasePromptsResponse none;
  ASSERT_TRUE(stub_->LeasePrompts(&l2, lreq, &none).ok());
  EXPECT_EQ(none.leases_size(), 0);
  EXPECT_GT(none.retry_after_ms(), 0);
  grpc::ClientContext a5;
  ASSERT_TRUE(admin_stub_->Drain(&a5, v1::DrainRequest(), &dr).ok());
  EXPECT_TRUE(control_.drained);
  grpc::ClientContext h2;
  ASSERT_TRUE(stub_->Heartbeat(&h2, hreq, &hresp).ok());
  EXPECT_TRUE(hresp.drain());
}

// Verifies one streamed chunk's CRCs and applies it to `tensors` (a delta
// chunk XORs into the tensor's bytes), appending each finished tensor to
// `all`; on the last chunk checks the whole version's CRC. Returns whether
// the chunk was a delta.
bool ApplyChunk(const v1::WeightChunk& c, std::map<std::string, std::string>* tensors,
                std::string* all) {
  EXPECT_EQ(Crc32c(c.data()), c.crc32c());
  std::string& t = (*tensors)[c.tensor_name()];
  t.resize(c.tensor_bytes());
  const bool delta = c.encoding() == v1::WEIGHT_ENCODING_XOR_RLE;
  if (delta) {
    EXPECT_TRUE(
        XorRleApply(c.data(), reinterpret_cast<uint8_t*>(t.data()) + c.offset(), c.decoded_bytes())
            .ok());
  } else {
    std::memcpy(t.data() + c.offset(), c.data().data(), c.data().size());
  }
  if (c.tensor_last()) {
    EXPECT_EQ(Crc32c(t), c.tensor_crc32c()) << c.tensor_name();
    *all += t;
  }
  if (c.last()) EXPECT_EQ(Crc32c(*all), c.version_crc32c());
  return delta;
}

// Streams a version, verifying every CRC, and rebuilds the tensors.
std::map<std::string, std::string> Fetch(v1::Learner::Stub* stub, int64_t version, bool delta,
                                         int64_t base,
                                         const std::map<std::string, std::string>& have,
                                         int* delta_chunks) {
  grpc::ClientContext ctx;
  v1::FetchPolicyRequest req;
  req.set_version(version);
  req.set_delta(delta);
  req.set_base_version(base);
  auto reader = stub->FetchPolicy(&ctx, req);
  v1::WeightChunk c;
  std::map<std::string, std::string> out = have;
  std::string all;
  bool last = false;
  *delta_chunks = 0;
  while (reader->Read(&c)) {
    if (ApplyChunk(c, &out, &all)) {
      ++*delta_chunks;
      EXPECT_EQ(c.base_version(), base);
    }
    last |= c.last();
  }
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(last);
  return out;
}

TEST_F(LearnerServiceTest, FetchPolicyFullThenDelta) {
  int deltas = 0;
  auto v0 = Fetch(stub_.get(), 0, false, 0, {}, &deltas);
  EXPECT_EQ(v0["w"], std::string(weights0_.begin(), weights0_.end()));
  EXPECT_EQ(deltas, 0);
  std::vector<uint8_t> w1 = weights0_;
  w1[10] ^= 1;
  w1[250] ^= 0x80;
  WeightSnapshot s;
  s.tensors = {Bf16("w", w1), Bf16("b", {1, 2, 3, 4})};
  ASSERT_TRUE(store_->Publish(1, s).ok());
  ASSERT_TRUE(store_->WaitPublished(1, absl::Seconds(10)));
  auto v1 = Fetch(stub_.get(), 1, true, 0, v0, &deltas);
  EXPECT_GT(deltas, 0);
  EXPECT_EQ(v1["w"], std::string(w1.begin(), w1.end()));
  // Delta from a version the server has no delta for: the full stream.
  auto full = Fetch(stub_.get(), 1, true, 7, {}, &deltas);
  EXPECT_EQ(deltas, 0);
  EXPECT_EQ(full["w"], v1["w"]);
  // exact_version names version 0 (a deterministic lease's pin) although 1
  // is the latest; without it, 0 means the latest.
  for (bool exact : {true, false}) {
    grpc::ClientContext ectx;
    v1::FetchPolicyRequest ereq;
    ereq.set_version(0);
    ereq.set_exact_version(exact);
    auto ereader = stub_->FetchPolicy(&ectx, ereq);
    v1::WeightChunk ec;
    int chunks = 0;
    while (ereader->Read(&ec)) {
      EXPECT_EQ(ec.version(), exact ? 0 : 1);
      ++chunks;
    }
    EXPECT_TRUE(ereader->Finish().ok());
    EXPECT_GT(chunks, 0);
  }
  // A version not kept.
  grpc::ClientContext ctx;
  v1::FetchPolicyRequest req;
  req.set_version(42);
  auto reader = stub_->FetchPolicy(&ctx, req);
  v1::WeightChunk c;
  EXPECT_FALSE(reader->Read(&c));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_GT(registry_
                .GetCounter("cohort_learner_weight_bytes_served_total",
                            "Bytes of weight payload streamed by FetchPolicy.")
                ->Value(),
            600);
}

// Heartbeat.engine_time reaches RunStatus.actors: the latest totals of the
// current process, plus those of earlier processes of the same actor_name
// (a restarted actor, another pid, starts again from 0); a rejoin of the
// same process keeps its totals.
// Fair shares through the RPCs: the window of (K + 1) * P = 4 leases is
// split between the two actors that ask for it, and one that leaves gives
// its share back at once.
TEST_F(LearnerServiceTest, LeasePromptsSharesTheWindowBetweenActors) {
  LedgerOptions lo;
  lo.num_prompts = 4;
  lo.epochs = 8;
  lo.prompts_per_step = 2;
  lo.max_staleness = 1;
  lo.share_hold = absl::Seconds(60);  // every ask below is "recent", however slow the machine
  auto ledger = std::shared_ptr<Ledger>(*Ledger::Create(lo));
  LeaseStage stage;
  stage.name = "grpo";
  stage.ledger = ledger;
  stage.prompts = std::make_shared<std::vector<StagePrompt>>(
      4, StagePrompt{{1, 2, 3}, "what is 2+2", "math", "4", "{}", "uid"});
  stage.group_size = 3;
  service_->SetStage(stage);
  auto lease = [&](const std::string& actor, int64_t version) {
    grpc::ClientContext ctx;
    v1::LeasePromptsRequest req;
    req.set_actor_id(actor);
    req.set_max_prompts(10);
    req.set_policy_version(version);
    v1::LeasePromptsResponse resp;
    EXPECT_TRUE(stub_->LeasePrompts(&ctx, req, &resp).ok());
    return std::vector<v1::Lease>(resp.leases().begin(), resp.leases().end());
  };
  auto heartbeat = [&](const std::string& actor, std::vector<v1::Lease> release, bool leaving) {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest req;
    req.set_actor_id(actor);
    for (const v1::Lease& l : release) req.add_released_lease_ids(l.lease_id());
    req.set_leaving(leaving);
    v1::HeartbeatResponse resp;
    EXPECT_TRUE(stub_->Heartbeat(&ctx, req, &resp).ok());
  };
  auto submit_and_train = [&](const std::string& actor, const std::vector<v1::Lease>& leases) {
    for (const v1::Lease& l : leases) {
      v1::SubmitGroupResponse resp;
      ASSERT_TRUE(Submit(actor, Group(l, {1, 0, 1}), &resp).ok());
      ASSERT_TRUE(resp.accepted()) << resp.reason();
    }
    std::optional<LedgerBatch> batch = ledger->TakeBatch(absl::Now());
    ASSERT_TRUE(batch);
    ASSERT_TRUE(ledger->CommitBatch(*batch, batch->index + 1, true).ok());
  };
  auto held = [&]() {
    grpc::ClientContext ctx;
    v1::RunStatus status;
    EXPECT_TRUE(admin_stub_->GetStatus(&ctx, v1::GetStatusRequest(), &status).ok());
    std::map<std::string, int32_t> out;
    for (const v1::ActorInfo& a : status.actors()) out[a.actor_name()] = a.leases();
    return out;
  };
  const std::string a = Join("actor-a"), b = Join("actor-b");
  std::vector<v1::Lease> a1 = lease(a, 0);
  ASSERT_EQ(a1.size(), 4u);             // alone so far: the whole window
  EXPECT_TRUE(lease(b, 0).empty());     // the window is full: "b" waits
  submit_and_train(a, {a1[0], a1[1]});  // version 1: 2 places free
  EXPECT_TRUE(lease(a, 1).empty()) << "a holds its share (2) while b waits";
  std::vector<v1::Lease> b1 = lease(b, 1);
  EXPECT_EQ(b1.size(), 2u);
  EXPECT_EQ(held(), (std::map<std::string, int32_t>{{"actor-a", 2}, {"actor-b", 2}}));
  // "b" hands its leases back but still waits: its share stays free for it.
  submit_and_train(a, {a1[2], a1[3]});  // version 2
  heartbeat(b, b1, false);
  EXPECT_EQ(lease(a, 2).size(), 2u);
  // "b" leaves: "a" may take the whole window.
  heartbeat(b, {}, true);
  EXPECT_EQ(lease(a, 2).size(), 2u);
  EXPECT_EQ(held(), (std::map<std::string, int32_t>{{"actor-a", 4}, {"actor-b", 0}}));
}

TEST_F(LearnerServiceTest, HeartbeatEngineTimeIsReportedPerActorName) {
  auto join = [&](int64_t pid) {
    grpc::ClientContext ctx;
    v1::JoinRequest req;
    req.set_actor_name("timed");
    req.set_slots(4);
    req.set_pid(pid);
    req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
    v1::JoinResponse resp;
    EXPECT_TRUE(stub_->Join(&ctx, req, &resp).ok());
    return resp.actor_id();
  };
  auto beat = [&](const std::string& actor, double busy, double prompts, double weights,
                  double rewards) {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest req;
    req.set_actor_id(actor);
    v1::EngineTime* t = req.mutable_engine_time();
    t->set_busy_seconds(busy);
    t->set_idle_prompts_seconds(prompts);
    t->set_idle_weights_seconds(weights);
    t->set_idle_rewards_seconds(rewards);
    v1::HeartbeatResponse resp;
    EXPECT_TRUE(stub_->Heartbeat(&ctx, req, &resp).ok());
  };
  auto engine_time = [&]() {
    grpc::ClientContext ctx;
    v1::RunStatus status;
    EXPECT_TRUE(admin_stub_->GetStatus(&ctx, v1::GetStatusRequest(), &status).ok());
    for (const v1::ActorInfo& a : status.actors()) {
      if (a.actor_name() == "timed") return a.engine_time();
    }
    ADD_FAILURE() << "no actor named timed";
    return v1::EngineTime();
  };
  std::string a = join(100);
  EXPECT_EQ(engine_time().busy_seconds(), 0);
  beat(a, 1, 2, 3, 4);
  beat(a, 8, 2, 3, 4);  // running totals: the latest counts
  EXPECT_EQ(engine_time().busy_seconds(), 8);
  EXPECT_EQ(engine_time().idle_prompts_seconds(), 2);
  EXPECT_EQ(engine_time().idle_weights_seconds(), 3);
  EXPECT_EQ(engine_time().idle_rewards_seconds(), 4);
  // The same process joins again (a learner restart it rode out).
  a = join(100);
  EXPECT_EQ(engine_time().busy_seconds(), 8);
  beat(a, 9, 2, 3, 4);
  EXPECT_EQ(engine_time().busy_seconds(), 9);
  // A new process under the name: its totals add to the earlier ones.
  a = join(200);
  EXPECT_EQ(engine_time().busy_seconds(), 9);
  beat(a, 1, 0.5, 0, 0);
  EXPECT_EQ(engine_time().busy_seconds(), 10);
  EXPECT_EQ(engine_time().idle_prompts_seconds(), 2.5);
  EXPECT_EQ(engine_time().idle_rewards_seconds(), 4);
  // A submitted group's engine_time counts like a heartbeat's (the
  // submission itself may be refused: there is no such lease).
  {
    grpc::ClientContext sctx;
    v1::SubmitGroupRequest sreq;
    sreq.set_actor_id(a);
    sreq.mutable_group()->set_lease_id("no-such-lease");
    sreq.mutable_engine_time()->set_busy_seconds(3);
    v1::SubmitGroupResponse sresp;
    (void)stub_->SubmitGroup(&sctx, sreq, &sresp);
  }
  EXPECT_EQ(engine_time().busy_seconds(), 12);
  EXPECT_EQ(engine_time().idle_prompts_seconds(), 2);
  // A heartbeat without engine_time (an older actor) changes nothing.
  grpc::ClientContext ctx;
  v1::HeartbeatRequest req;
  req.set_actor_id(a);
  v1::HeartbeatResponse resp;
  ASSERT_TRUE(stub_->Heartbeat(&ctx, req, &resp).ok());
  EXPECT_EQ(engine_time().busy_seconds(), 12);
}

// FetchPolicy of versions still being built (WeightStore::GetPublished):
// a store whose build of version 1 is held part-way by its before_chunk
// hook, served over gRPC.
class FetchWhileBuildingTest : public ::testing::Test {
 protected:
  // Version 1's build stops before chunk 13 until Release(): tensors 0-2
  // (chunks 0-11) are final, tensor 3 is not.
  void SetUp() override {
    constexpr int64_t kGateAt = 13, kChunkBytes = 64;
    constexpr size_t kTensorBytes = 256;  // 4 chunks
    store_ = std::make_unique<WeightStore>(
        WeightStoreOptions{.keep_versions = 3,
                           .chunk_bytes = kChunkBytes,
                           .threads = 1,
                           .before_chunk = [this](int64_t version, int64_t chunk) {
                             if (version != 1 || chunk < kGateAt) return;
                             absl::MutexLock lock(&gate_mu_);
                             reached_ = true;
                             gate_mu_.Await(absl::Condition(&released_));
                           }});
    for (int t = 0; t < 8; ++t) {
      std::vector<uint8_t> b(kTensorBytes);
      for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + t * 31);
      v0_.push_back(b);
      b[(t * 53) % b.size()] ^= 0x10;  // one byte per tensor: deltas pay
      v1_.push_back(b);
    }
    ASSERT_TRUE(store_->Publish(0, Snapshot(v0_)).ok());
    ASSERT_TRUE(store_->WaitPublished(0, absl::Seconds(10)));
    LearnerServiceOptions o;
    o.metrics = &registry_;
    o.chunk_bytes = kChunkBytes;
    o.model.set_model_fingerprint("fp-building");  // a model to Join (for Heartbeat)
    service_ = std::make_unique<LearnerService>(o, store_.get());
    server_ = *RpcServer::Start(ServerOptions(), {service_.get()});
    channel_ = *MakeChannel(server_->address(), ChannelOptions());
  }
  void TearDown() override {
    Release();
    server_->Shutdown(absl::Seconds(2));
  }

  static WeightSnapshot Snapshot(const std::vector<std::vector<uint8_t>>& tensors) {
    WeightSnapshot s;
    for (size_t t = 0; t < tensors.size(); ++t) {
      s.tensors.push_back(Bf16("t" + std::to_string(t), tensors[t]));
    }
    return s;
  }
  void WaitReached() {
    absl::MutexLock lock(&gate_mu_);
    gate_mu_.Await(absl::Condition(&reached_));
  }
  void Release() {
    absl::MutexLock lock(&gate_mu_);
    released_ = true;
  }

  // One client streaming a version on its own thread: it checks every
  // checksum as Fetch() does and counts the chunks it has. `exact`: as a
  // pinned fetch; false: as an actor asking for the latest it was told of.
  struct Stream {
    grpc::ClientContext ctx;
    std::atomic<int> chunks{0};
    std::atomic<bool> last{false};
    std::atomic<bool> last_before_visible{false};
    std::map<std::string, std::string> tensors;
    grpc::Status status;
    std::thread thread;
    ~Stream() {
      if (thread.joinable()) thread.join();
    }
  };
  std::unique_ptr<Stream> StartStream(int64_t version, bool delta,
                                      const std::vector<std::vector<uint8_t>>& base,
                                      bool exact = true) {
    auto s = std::make_unique<Stream>();
    for (size_t t = 0; t < base.size(); ++t) {
      s->tensors["t" + std::to_string(t)] = std::string(base[t].begin(), base[t].end());
    }
    Stream* st = s.get();
    s->thread = std::thread([this, st, version, delta, exact] {
      auto stub = v1::Learner::NewStub(channel_);
      v1::FetchPolicyRequest req;
      req.set_version(version);
      req.set_exact_version(exact);
      req.set_delta(delta);
      req.set_base_version(0);
      auto reader = stub->FetchPolicy(&st->ctx, req);
      v1::WeightChunk c;
      std::string all;
      while (reader->Read(&c)) {
        EXPECT_EQ(ApplyChunk(c, &st->tensors, &all), delta);
        if (c.last()) {
          if (store_->Get(version) == nullptr) st->last_before_visible = true;
          st->last = true;
        }
        ++st->chunks;
      }
      st->status = reader->Finish();
    });
    return s;
  }
  static bool WaitChunks(const Stream& s, int n) {
    for (int i = 0; i < 1000 && s.chunks.load() < n; ++i) absl::SleepFor(absl::Milliseconds(10));
    return s.chunks.load() >= n;
  }
  std::string Bytes(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

  MetricsRegistry registry_;
  std::unique_ptr<WeightStore> store_;
  std::unique_ptr<LearnerService> service_;
  std::unique_ptr<RpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<std::vector<uint8_t>> v0_, v1_;
  absl::Mutex gate_mu_;
  bool reached_ ABSL_GUARDED_BY(gate_mu_) = false;
  bool released_ ABSL_GUARDED_BY(gate_mu_) = false;
};

// A delta stream and a full stream that arrive while version 1 is built get
// the final tensors at once, wait for the rest, and end (last chunk,
// version CRC) only after the version is complete and visible; a stream
// cancelled while it waits ends CANCELLED without the build's help.
TEST_F(FetchWhileBuildingTest, StreamsTensorsAsTheyAreBuiltAndEndsWhenComplete) {
  ASSERT_TRUE(store_->Publish(1, Snapshot(v1_)).ok());
  WaitReached();
  ASSERT_EQ(store_->Get(1), nullptr);
  auto delta = StartStream(1, /*delta=*/true, v0_);
  auto full = StartStream(1, /*delta=*/false, {});
  auto cancelled = StartStream(1, /*delta=*/false, {});
  ASSERT_TRUE(WaitChunks(*delta, 12));
  ASSERT_TRUE(WaitChunks(*full, 12));
  ASSERT_TRUE(WaitChunks(*cancelled, 12));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(delta->chunks.load(), 12);  // tensor 3 is not final: nothing of it
  EXPECT_EQ(full->chunks.load(), 12);
  EXPECT_FALSE(delta->last.load());
  cancelled->ctx.TryCancel();
  cancelled->thread.join();
  EXPECT_EQ(cancelled->status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(cancelled->chunks.load(), 12);

  Release();
  delta->thread.join();
  full->thread.join();
  for (Stream* s : {delta.get(), full.get()}) {
    EXPECT_TRUE(s->status.ok()) << s->status.error_message();
    EXPECT_TRUE(s->last.load());
    EXPECT_FALSE(s->last_before_visible.load());
    EXPECT_EQ(s->chunks.load(), 32);
    for (int t = 0; t < 8; ++t) EXPECT_EQ(s->tensors["t" + std::to_string(t)], Bytes(v1_[t]));
  }
  // A version that was never published is still NOT_FOUND.
  auto missing = StartStream(2, false, {});
  missing->thread.join();
  EXPECT_EQ(missing->status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// Heartbeat announces a version from Publish() on, while the store still
// builds it (latest_version() is the previous one): an actor told of it
// fetches it as it does any latest version (not exact, a delta against the
// version it holds), gets the final tensors at once, and its stream ends,
// every checksum verified, only once the version is complete and visible.
TEST_F(FetchWhileBuildingTest, HeartbeatAnnouncesAVersionBeingBuiltAndItsFetchCompletes) {
  auto stub = v1::Learner::NewStub(channel_);
  std::string actor;
  {
    grpc::ClientContext ctx;
    v1::JoinRequest req;
    req.set_actor_name("told-at-publish");
    req.set_slots(1);
    req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
    v1::JoinResponse resp;
    grpc::Status s = stub->Join(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.policy_version(), 0);
    actor = resp.actor_id();
  }
  auto heartbeat = [&]() -> int64_t {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest req;
    req.set_actor_id(actor);
    v1::HeartbeatResponse resp;
    grpc::Status s = stub->Heartbeat(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.latest_policy_version();
  };
  EXPECT_EQ(heartbeat(), 0);

  ASSERT_TRUE(store_->Publish(1, Snapshot(v1_)).ok());
  WaitReached();  // version 1 is held part-way: tensor 3 is not final
  ASSERT_EQ(store_->latest_version(), 0);
  ASSERT_EQ(store_->Get(1), nullptr);
  const int64_t announced = heartbeat();
  EXPECT_EQ(announced, 1) << "Heartbeat announces the version being built";
  EXPECT_EQ(store_->latest_version(), 0);  // still not complete

  auto fetch = StartStream(announced, /*delta=*/true, v0_, /*exact=*/false);
  ASSERT_TRUE(WaitChunks(*fetch, 12));  // tensors 0-2 while the build is held
  EXPECT_FALSE(fetch->last.load());
  Release();
  fetch->thread.join();
  EXPECT_TRUE(fetch->status.ok()) << fetch->status.error_message();
  EXPECT_TRUE(fetch->last.load());
  EXPECT_FALSE(fetch->last_before_visible.load());
  EXPECT_EQ(fetch->chunks.load(), 32);
  for (int t = 0; t < 8; ++t) EXPECT_EQ(fetch->tensors["t" + std::to_string(t)], Bytes(v1_[t]));
  EXPECT_EQ(store_->latest_version(), 1);
  EXPECT_EQ(heartbeat(), 1);
}

// A stream waiting for a build whose server shuts down, then the build
// finishing: the reactor outlives neither (no crash, no leak checker here,
// but the callback path that deletes it runs).
TEST_F(FetchWhileBuildingTest, ServerShutdownWhileAStreamWaits) {
  ASSERT_TRUE(store_->Publish(1, Snapshot(v1_)).ok());
  WaitReached();
  auto waiting = StartStream(1, /*delta=*/true, v0_);
  ASSERT_TRUE(WaitChunks(*waiting, 12));
  server_->Shutdown(absl::Milliseconds(200));
  waiting->thread.join();
  EXPECT_FALSE(waiting->status.ok());
  Release();
  ASSERT_TRUE(store_->WaitPublished(1, absl::Seconds(10)));
}

// Eviction (keep_versions = 1) while a stream of the evicted version is in
// progress: the stream holds its version and ends with every byte intact.
TEST(FetchPolicyEvictionTest, EvictedWhileStreamingStillStreamsIntact) {
  WeightStore store({.keep_versions = 1, .chunk_bytes = 64 << 10});
  std::vector<uint8_t> w0(4 << 20);
  for (size_t i = 0; i < w0.size(); ++i) w0[i] = static_cast<uint8_t>(i * 13 + (i >> 12));
  WeightSnapshot s0;
  s0.tensors = {Bf16("w", w0)};
  ASSERT_TRUE(store.Publish(0, s0).ok());
  ASSERT_TRUE(store.WaitPublished(0, absl::Seconds(10)));
  MetricsRegistry registry;
  LearnerServiceOptions o;
  o.metrics = &registry;
  o.chunk_bytes = 64 << 10;
  LearnerService service(o, &store);
  auto server = *RpcServer::Start(ServerOptions(), {&service});
  auto stub = v1::Learner::NewStub(*MakeChannel(server->address(), ChannelOptions()));
  grpc::ClientContext ctx;
  v1::FetchPolicyRequest req;
  req.set_version(0);
  req.set_exact_version(true);
  auto reader = stub->FetchPolicy(&ctx, req);
  v1::WeightChunk c;
  std::string got;
  ASSERT_TRUE(reader->Read(&c));  // the stream has started
  got += c.data();
  for (int64_t version = 1; version <= 2; ++version) {
    std::vector<uint8_t> w = w0;
    w[static_cast<size_t>(version)] ^= 1;
    WeightSnapshot s;
    s.tensors = {Bf16("w", w)};
    ASSERT_TRUE(store.Publish(version, s).ok());
    ASSERT_TRUE(store.WaitPublished(version, absl::Seconds(10)));
  }
  ASSERT_EQ(store.kept_versions(), std::vector<int64_t>{2});
  uint32_t version_crc = 0;
  while (reader->Read(&c)) {
    EXPECT_EQ(Crc32c(c.data()), c.crc32c());
    EXPECT_EQ(c.version(), 0);
    got += c.data();
    if (c.last()) version_crc = c.version_crc32c();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, std::string(w0.begin(), w0.end()));
  EXPECT_EQ(version_crc, Crc32c(got));
  server->Shutdown(absl::Seconds(2));
}

}  // namespace
}  // namespace cohort::learner
