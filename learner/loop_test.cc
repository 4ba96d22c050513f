// The learner loop end to end in one process: a real gRPC LearnerService on
// loopback, fake actors leasing and submitting from threads, the fake
// trainer; exactly-once audited from trained/filtered/failed.jsonl,
// checkpoint + resume, and deterministic mode's independence from the
// number of actors and from an interruption.
#include "learner/loop.h"

#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file.h"
#include "core/rpc.h"
#include "learner/fake_trainer.h"

namespace cohort::learner {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/loop_test.XXXXXX";
  return ::mkdtemp(tmpl);
}

// Everything a learner process holds, rebuilt on "restart".
struct Learner {
  MetricsRegistry registry;
  FakePolicyTrainer trainer;
  std::unique_ptr<WeightStore> store;
  std::unique_ptr<LearnerService> service;
  std::unique_ptr<LearnerLoop> loop;
  std::unique_ptr<RpcServer> server;

  Learner(const std::string& dir, bool deterministic, int checkpoint_every) {
    store = std::make_unique<WeightStore>(WeightStoreOptions{.keep_versions = 4});
    LearnerServiceOptions so;
    so.run_id = "test-run";
    so.model.set_model_fingerprint("fake-fingerprint");
    so.vocab_size = 100;
    so.deterministic = deterministic;
    so.metrics = &registry;
    so.retry_after_ms = 5;
    service = std::make_unique<LearnerService>(so, store.get());
    LoopOptions lo;
    lo.run_dir = dir;
    lo.checkpoint_every = checkpoint_every;
    lo.deterministic = deterministic;
    lo.run_id = "test-run";
    lo.metrics = &registry;
    lo.poll = absl::Milliseconds(20);
    loop = std::make_unique<LearnerLoop>(lo, &trainer, store.get(), service.get());
    server = *RpcServer::Start(ServerOptions(), {service.get()});
  }
  ~Learner() { server->Shutdown(absl::Seconds(1)); }
};

LeaseStageSpec Spec(int prompts, int epochs) {
  LeaseStageSpec spec;
  spec.name = "grpo";
  spec.kind = "grpo";
  spec.ledger.num_prompts = prompts;
  spec.ledger.epochs = epochs;
  spec.ledger.prompts_per_step = 2;
  spec.ledger.max_staleness = 1;
  spec.ledger.max_lease_attempts = 2;
  spec.ledger.lease_ttl = absl::Milliseconds(300);
  spec.ledger.seed = 5;
  auto prompts_v = std::make_shared<std::vector<StagePrompt>>();
  for (int i = 0; i < prompts; ++i) {
    prompts_v->push_back(
        {{1, 2}, "p" + std::to_string(i), "math", "1", "{}", "id" + std::to_string(i)});
  }
  spec.prompts = prompts_v;
  spec.group_size = 3;
  return spec;
}

// A fake actor: leases, "generates" completions that depend only on the
// lease (prompt, seed, version), submits; sometimes abandons a lease.
// Joins as `name` offering `slots` slots.
grpc::Status JoinAs(v1::Learner::Stub& stub, const std::string& name, int slots,
                    v1::JoinResponse* out) {
  grpc::ClientContext ctx;
  v1::JoinRequest req;
  req.set_actor_name(name);
  req.set_slots(slots);
  req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  return stub.Join(&ctx, req, out);
}

void RunActor(const std::string& address, int id, std::atomic<bool>* stop, double abandon) {
  auto stub = v1::Learner::NewStub(*MakeChannel(address, ChannelOptions()));
  std::mt19937_64 rng(id);
  std::string actor_id;
  int64_t version = 0;  // the version it "generates with": the latest it heard of
  while (!*stop) {
    if (actor_id.empty()) {
      v1::JoinResponse resp;
      if (!JoinAs(*stub, absl::StrCat("actor-", id), 2, &resp).ok()) {
        absl::SleepFor(absl::Milliseconds(10));
        continue;
      }
      actor_id = resp.actor_id();
    }
    grpc::ClientContext ctx;
    v1::LeasePromptsRequest req;
    req.set_actor_id(actor_id);
    req.set_max_prompts(2);
    req.set_policy_version(version);
    v1::LeasePromptsResponse leases;
    grpc::Status s = stub->LeasePrompts(&ctx, req, &leases);
    if (!s.ok()) {
      actor_id.clear();
      continue;
    }
    version = leases.policy_version();
    if (leases.leases().empty()) {
      absl::SleepFor(absl::Milliseconds(5));
      continue;
    }
    for (const v1::Lease& l : leases.leases()) {
      if (std::uniform_real_distribution<double>(0, 1)(rng) < abandon) continue;  // "dies"
      v1::SubmitGroupRequest sub;
      sub.set_actor_id(actor_id);
      v1::ScoredGroup* g = sub.mutable_group();
      g->set_prompt_id(l.prompt_id());
      g->set_epoch(l.epoch());
      g->set_lease_id(l.lease_id());
      for (int i = 0; i < l.group_size(); ++i) {
        v1::Completion* c = g->add_completions();
        uint64_t seed = l.sampling().seed() + i;
        c->add_token_ids(static_cast<int32_t>(seed % 97));
        c->add_logprobs(-1.0f);
        c->add_policy_versions(l.policy_version());
        c->mutable_reward()->set_status(v1::REWARD_STATUS_OK);
        c->mutable_reward()->set_reward(static_cast<double>(seed % 3 == 0));
      }
      grpc::ClientContext sctx;
      v1::SubmitGroupResponse resp;
      stub->SubmitGroup(&sctx, sub, &resp);
    }
  }
}

struct Audit {
  std::map<std::pair<int64_t, int64_t>, int> seen;
  int64_t trained = 0;
};

Audit ReadJournals(const std::string& dir) {
  Audit a;
  for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
    absl::StatusOr<std::string> text = ReadFile(dir + "/" + f);
    if (!text.ok()) continue;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      nlohmann::json j = nlohmann::json::parse(line);
      ++a.seen[{j["prompt_id"].get<int64_t>(), j["epoch"].get<int64_t>()}];
      if (std::string(f) == "trained.jsonl") ++a.trained;
    }
  }
  return a;
}

void ExpectExactlyOnce(const std::string& dir, int prompts, int epochs) {
  Audit a = ReadJournals(dir);
  EXPECT_EQ(static_cast<int>(a.seen.size()), prompts * epochs);
  for (const auto& [item, n] : a.seen) {
    EXPECT_EQ(n, 1) << "prompt " << item.first << " epoch " << item.second;
  }
}

// Runs the stage with `actors` fake actors; stops the loop after
// `stop_after` steps when > 0 (and writes the final checkpoint).
absl::StatusOr<LedgerCounts> RunStage(Learner& l, const LeaseStageSpec& spec, int actors,
                                      double abandon, int stop_after = 0) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < actors; ++i) {
    threads.emplace_back(RunActor, l.server->address(), i, &stop, abandon);
  }
  std::thread stopper;
  if (stop_after > 0) {
    stopper = std::thread([&] {
      while (l.loop->step() < stop_after) absl::SleepFor(absl::Milliseconds(2));
      l.loop->Stop();
    });
  }
  absl::StatusOr<LedgerCounts> counts = l.loop->RunLeaseStage(spec);
  if (stopper.joinable()) stopper.join();
  stop = true;
  for (auto& t : threads) t.join();
  return counts;
}

TEST(LearnerLoopTest, StageRunsToCompletionExactlyOnce) {
  std::string dir = TempDir();
  Learner l(dir, false, 0);
  ASSERT_TRUE(l.loop->Start().ok());
  absl::StatusOr<LedgerCounts> c = RunStage(l, Spec(10, 2), 2, 0.1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->trained + c->filtered + c->failed, 20);
  EXPECT_EQ(c->duplicates, 0);
  EXPECT_EQ(c->lost, 0);
  ExpectExactlyOnce(dir, 10, 2);
  int64_t steps = l.loop->step();
  EXPECT_GE(steps, c->trained / 2);
  // Publish returns before the checksums are done: wait for visibility.
  EXPECT_TRUE(l.store->WaitPublished(steps, absl::Seconds(10)));
  EXPECT_EQ(l.store->latest_version(), steps);
  std::string metrics = *ReadFile(dir + "/metrics.jsonl");
  EXPECT_EQ(static_cast<int64_t>(std::count(metrics.begin(), metrics.end(), '\n')), steps);
  v1::RunStatus status;
  l.loop->FillStatus(&status);
  EXPECT_EQ(status.step(), steps);
  ASSERT_EQ(status.stages_size(), 1);
  EXPECT_EQ(status.stages(0).state(), "done");
  RemoveAll(dir).IgnoreError();
}

TEST(LearnerLoopTest, ResumesFromCheckpointWithoutLosingOrRepeating) {
  std::string dir = TempDir();
  int64_t stopped_at;
  {
    Learner l(dir, false, 2);
    ASSERT_TRUE(l.loop->Start().ok());
    absl::StatusOr<LedgerCounts> c = RunStage(l, Spec(12, 1), 2, 0.0, 3);
    EXPECT_TRUE(absl::IsCancelled(c.status())) << c.status();
    // A crash after the last periodic checkpoint: steps past it are
    // replayed (their journal lines dropped on resume).
    stopped_at = l.loop->step();
  }
  Audit before = ReadJournals(dir);
  EXPECT_GT(before.trained, 0);
  Learner l2(dir, false, 2);
  ASSERT_TRUE(l2.loop->Start().ok());
  EXPECT_EQ(l2.loop->resumed_stage_index(), 0);
  EXPECT_LE(l2.loop->step(), stopped_at);
  EXPECT_GE(l2.loop->step(), 2);
  absl::StatusOr<LedgerCounts> c = RunStage(l2, Spec(12, 1), 2, 0.0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->trained + c->filtered + c->failed, 12);
  ExpectExactlyOnce(dir, 12, 1);
  RemoveAll(dir).IgnoreError();
}

// A learner killed after publishing past its last checkpoint: the resumed
// one never reuses a number the dead one published (it publishes the
// checkpoint's weights as the next number past them), and a group
// generated with such a dead version, under a lease the checkpoint kept,
// is refused (retired_version) and its prompt trained exactly once later.
TEST(LearnerLoopTest, ResumeNumbersPastVersionsPublishedAfterTheCheckpoint) {
  std::string dir = TempDir();
  LeaseStageSpec spec = Spec(12, 1);
  spec.ledger.lease_ttl = absl::Seconds(60);  // the held lease outlives the restart
  std::map<int64_t, uint32_t> crc_before;     // version -> weights' CRC (dead learner)
  int64_t high = -1;
  v1::Lease held;
  {
    Learner l(dir, false, 3);
    ASSERT_TRUE(l.loop->Start().ok());
    // An actor that takes one lease early and never submits it (it is
    // live in the checkpoint at step 3).
    std::atomic<int64_t> step_at_grant{-1};
    std::thread holder([&] {
      auto stub = v1::Learner::NewStub(*MakeChannel(l.server->address(), ChannelOptions()));
      v1::JoinResponse joined;
      ASSERT_TRUE(JoinAs(*stub, "holder", 1, &joined).ok());
      int64_t version = 0;
      for (int i = 0; i < 5000; ++i) {
        grpc::ClientContext ctx;
        v1::LeasePromptsRequest req;
        req.set_actor_id(joined.actor_id());
        req.set_max_prompts(1);
        req.set_policy_version(version);  // an actor behind gets no leases
        v1::LeasePromptsResponse resp;
        if (!stub->LeasePrompts(&ctx, req, &resp).ok()) continue;
        version = resp.policy_version();
        if (resp.leases_size() > 0) {
          held = resp.leases(0);
          step_at_grant = l.loop->step();
          return;
        }
        absl::SleepFor(absl::Milliseconds(1));
      }
    });
    absl::StatusOr<LedgerCounts> c = RunStage(l, spec, 2, 0.0, 4);
    holder.join();
    EXPECT_TRUE(absl::IsCancelled(c.status())) << c.status();
    ASSERT_FALSE(held.lease_id().empty());
    ASSERT_GE(step_at_grant.load(), 0);
    ASSERT_LT(step_at_grant.load(), 3) << "the held lease must predate the checkpoint";
    // Killed: no final checkpoint; the newest is step 3's (version 3), and
    // versions up to 4 or 5 were visible to actors.
    ASSERT_TRUE(l.store->WaitPublished(l.loop->version(), absl::Seconds(10)));
    high = l.store->latest_version();
    ASSERT_GT(high, 3);
    for (int64_t v : l.store->kept_versions()) crc_before[v] = l.store->Get(v)->version_crc32c;
    EXPECT_EQ(*ReadFile(dir + "/published_version"), absl::StrCat(high, "\n"));
  }
  Learner l2(dir, false, 3);
  ASSERT_TRUE(l2.loop->Start().ok());
  EXPECT_EQ(l2.loop->step(), 3);
  EXPECT_EQ(l2.loop->version(), high + 1) << "the first version after the restart is new";
  ASSERT_TRUE(l2.store->WaitPublished(high + 1, absl::Seconds(10)));
  EXPECT_EQ(l2.store->kept_versions(), std::vector<int64_t>{high + 1});
  // It is the checkpoint's weights (version 3 of the dead learner).
  ASSERT_TRUE(crc_before.count(3));
  EXPECT_EQ(l2.store->Get(high + 1)->version_crc32c, crc_before[3]);
  EXPECT_EQ(*ReadFile(dir + "/published_version"), absl::StrCat(high + 1, "\n"));

  // The held lease survived; its group, generated with the dead learner's
  // version `high`, is refused.
  v1::SubmitGroupResponse refused;
  std::thread submitter([&] {
    auto stub = v1::Learner::NewStub(*MakeChannel(l2.server->address(), ChannelOptions()));
    v1::JoinResponse joined;
    ASSERT_TRUE(JoinAs(*stub, "holder", 1, &joined).ok());
    for (int i = 0; i < 5000; ++i) {
      v1::SubmitGroupRequest sub;
      sub.set_actor_id(joined.actor_id());
      v1::ScoredGroup* g = sub.mutable_group();
      g->set_prompt_id(held.prompt_id());
      g->set_epoch(held.epoch());
      g->set_lease_id(held.lease_id());
      for (int k = 0; k < held.group_size(); ++k) {
        v1::Completion* c = g->add_completions();
        c->add_token_ids(k + 1);
        c->add_logprobs(-1.0f);
        c->add_policy_versions(high);
        c->mutable_reward()->set_status(v1::REWARD_STATUS_OK);
        c->mutable_reward()->set_reward(k % 2);
      }
      grpc::ClientContext ctx;
      refused.Clear();
      grpc::Status s = stub->SubmitGroup(&ctx, sub, &refused);
      ASSERT_TRUE(s.ok()) << s.error_message();
      if (refused.reason_code() != "stage_over") return;  // the stage is running
      absl::SleepFor(absl::Milliseconds(2));
    }
  });
  absl::StatusOr<LedgerCounts> c = RunStage(l2, spec, 2, 0.0);
  submitter.join();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(refused.accepted());
  EXPECT_EQ(refused.reason_code(), "retired_version") << refused.reason();
  v1::RunStatus status;
  l2.service->FillStatus(&status);
  EXPECT_GE(
      status.refusals().count("retired_version") ? status.refusals().at("retired_version") : 0, 1);
  EXPECT_EQ(c->trained + c->filtered + c->failed, 12);
  ExpectExactlyOnce(dir, 12, 1);
  // No trained group has a token of a retired version (4..high), and every
  // version the resumed learner published is new.
  absl::StatusOr<std::string> trained = ReadFile(dir + "/trained.jsonl");
  ASSERT_TRUE(trained.ok());
  for (absl::string_view line : absl::StrSplit(*trained, '\n', absl::SkipEmpty())) {
    for (int64_t v : nlohmann::json::parse(line)["policy_versions"].get<std::vector<int64_t>>()) {
      EXPECT_TRUE(v <= 3 || v > high) << line;
    }
  }
  ASSERT_TRUE(l2.store->WaitPublished(l2.loop->version(), absl::Seconds(10)));
  for (int64_t v : l2.store->kept_versions()) EXPECT_GT(v, high);
  EXPECT_EQ(l2.loop->version(), high + 1 + (l2.loop->step() - 3));
  RemoveAll(dir).IgnoreError();
}

// A pipeline: the loop is made without a trainer; each lease-driven stage
// brings its own (UseTrainer), whose weights are published as the next
// version, and a stage interrupted after a checkpoint resumes into a new
// trainer (the checkpoint's trainer state is loaded into it).
TEST(LearnerLoopTest, TrainerPerStageVersionsIncreaseAndResumeIntoANewTrainer) {
  std::string dir = TempDir();
  auto make = [&](int checkpoint_every) {
    auto l = std::make_unique<Learner>(dir, false, checkpoint_every);
    LoopOptions lo;
    lo.run_dir = dir;
    lo.checkpoint_every = checkpoint_every;
    lo.run_id = "test-run";
    lo.metrics = &l->registry;
    lo.poll = absl::Milliseconds(20);
    l->loop = std::make_unique<LearnerLoop>(lo, nullptr, l->store.get(), l->service.get());
    return l;
  };
  LeaseStageSpec first = Spec(6, 1), second = Spec(8, 1);
  first.name = "rl1";
  first.index = 0;
  second.name = "rl2";
  second.index = 2;
  int64_t stopped_at;
  {
    std::unique_ptr<Learner> l = make(2);
    ASSERT_TRUE(l->loop->Start().ok());
    EXPECT_FALSE(l->loop->WriteCheckpointNow().ok()) << "no trainer: nothing to checkpoint";
    EXPECT_EQ(l->store->latest_version(), -1) << "nothing published before a stage";
    FakePolicyTrainer t1;
    ASSERT_TRUE(l->loop->UseTrainer(&t1, first.index).ok());
    EXPECT_TRUE(l->store->WaitPublished(0, absl::Seconds(10)));  // Publish is asynchronous
    EXPECT_EQ(l->store->latest_version(), 0);
    absl::StatusOr<LedgerCounts> c = RunStage(*l, first, 2, 0.0);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(l->loop->WriteCheckpointNow().ok());
    l->loop->ReleaseTrainer();
    EXPECT_TRUE(l->store->WaitPublished(l->loop->version(), absl::Seconds(10)));
    const int64_t after_first = l->store->latest_version();
    EXPECT_EQ(after_first, l->loop->step());
    FakePolicyTrainer t2(2048);  // another model shape
    ASSERT_TRUE(l->loop->UseTrainer(&t2, second.index).ok());
    EXPECT_TRUE(l->store->WaitPublished(after_first + 1, absl::Seconds(10)));
    EXPECT_EQ(l->store->latest_version(), after_first + 1) << "the new weights are a new version";
    c = RunStage(*l, second, 2, 0.0, after_first + 2);
    EXPECT_TRUE(absl::IsCancelled(c.status())) << c.status();
    stopped_at = l->loop->step();
  }
  std::unique_ptr<Learner> l = make(2);
  ASSERT_TRUE(l->loop->Start().ok());
  EXPECT_EQ(l->loop->resumed_stage_index(), second.index);
  EXPECT_LE(l->loop->step(), stopped_at);
  FakePolicyTrainer t2(2048);
  ASSERT_TRUE(l->loop->UseTrainer(&t2, second.index).ok());
  absl::StatusOr<LedgerCounts> c = RunStage(*l, second, 2, 0.0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->trained + c->filtered + c->failed, 8);
  // Each stage's prompts settled exactly once.
  std::map<std::string, std::set<int64_t>> seen;
  int64_t lines = 0;
  for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
    absl::StatusOr<std::string> text = ReadFile(dir + "/" + f);
    if (!text.ok()) continue;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      nlohmann::json j = nlohmann::json::parse(line);
      seen[j["stage"].get<std::string>()].insert(j["prompt_id"].get<int64_t>());
      ++lines;
    }
  }
  EXPECT_EQ(seen["rl1"].size(), 6u);
  EXPECT_EQ(seen["rl2"].size(), 8u);
  EXPECT_EQ(lines, 14);
  RemoveAll(dir).IgnoreError();
}

// Deterministic mode: the final weights do not depend on how many actors
// run, nor on an interruption and resume.
TEST(LearnerLoopTest, DeterministicWeightsIndependentOfActorsAndRestarts) {
  std::vector<std::vector<uint8_t>> finals;
  for (int variant = 0; variant < 3; ++variant) {
    std::string dir = TempDir();
    LeaseStageSpec spec = Spec(9, 2);
    if (variant < 2) {
      Learner l(dir, true, 0);
      ASSERT_TRUE(l.loop->Start().ok());
      absl::StatusOr<LedgerCounts> c = RunStage(l, spec, variant == 0 ? 1 : 3, 0.2);
      ASSERT_TRUE(c.ok()) << c.status();
      finals.push_back(l.trainer.weights());
    } else {
      {
        Learner l(dir, true, 1);
        ASSERT_TRUE(l.loop->Start().ok());
        EXPECT_TRUE(absl::IsCancelled(RunStage(l, spec, 2, 0.2, 2).status()));
        ASSERT_TRUE(l.loop->WriteCheckpointNow().ok());
      }
      Learner l(dir, true, 1);
      ASSERT_TRUE(l.loop->Start().ok());
      absl::StatusOr<LedgerCounts> c = RunStage(l, spec, 2, 0.2);
      ASSERT_TRUE(c.ok()) << c.status();
      finals.push_back(l.trainer.weights());
      ExpectExactlyOnce(dir, 9, 2);
    }
    RemoveAll(dir).IgnoreError();
  }
  EXPECT_EQ(finals[0], finals[1]) << "1 actor vs 3 actors";
  EXPECT_EQ(finals[0], finals[2]) << "uninterrupted vs interrupted and resumed";
}

// What Admin/GetStatus shows: the loop's fields, then the service's.
v1::RunStatus Status(Learner& l) {
  v1::RunStatus s;
  l.loop->FillStatus(&s);
  l.service->FillStatus(&s);
  return s;
}

const v1::ActorInfo* FindActor(const v1::RunStatus& s, const std::string& name) {
  for (const auto& a : s.actors()) {
    if (a.actor_name() == name) return &a;
  }
  return nullptr;
}

// After the run is done, GetStatus keeps its ledger (leases_* included) and
// last epoch; the trainer's metrics are cohort_learner_trainer_<name>, apart
// from the loop's own; after a restart from the final checkpoint the
// finished stage and every actor's totals are still there, and an actor
// that joins again continues from its totals.
TEST(LearnerLoopTest, DoneRunKeepsLedgerStagesAndActorTotalsAcrossARestart) {
  std::string dir = TempDir();
  std::map<std::string, std::pair<int64_t, int64_t>> totals;  // name -> groups, tokens
  v1::LedgerCounts final_ledger;
  {
    Learner l(dir, false, 0);
    ASSERT_TRUE(l.loop->Start().ok());
    absl::StatusOr<LedgerCounts> c = RunStage(l, Spec(6, 2), 2, 0.2);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(l.loop->WriteCheckpointNow().ok());
    l.loop->SetDone();
    v1::RunStatus s = Status(l);
    EXPECT_TRUE(s.done());
    EXPECT_EQ(s.failure(), "");
    EXPECT_EQ(s.ledger().prompts_total(), 12);
    EXPECT_EQ(s.ledger().trained() + s.ledger().filtered() + s.ledger().failed(), 12);
    EXPECT_EQ(s.ledger().duplicates() + s.ledger().lost(), 0);
    EXPECT_EQ(s.ledger().queued() + s.ledger().leased() + s.ledger().buffered(), 0);
    EXPECT_GE(s.ledger().leases_granted(), 12);
    EXPECT_EQ(s.ledger().leases_granted(), c->leases_granted);
    EXPECT_EQ(s.ledger().leases_expired(), c->leases_expired);
    EXPECT_EQ(s.epoch(), 1);
    ASSERT_EQ(s.stages_size(), 1);
    EXPECT_EQ(s.stages(0).state(), "done");
    EXPECT_EQ(s.stages(0).ledger().leases_granted(), c->leases_granted);
    EXPECT_EQ(s.stages(0).ledger().trained(), c->trained);
    final_ledger = s.ledger();
    int64_t groups = 0;
    for (const auto& a : s.actors()) {
      totals[a.actor_name()] = {a.groups_submitted(), a.tokens_generated()};
      groups += a.groups_submitted();
    }
    EXPECT_GE(groups, c->trained + c->filtered);
    // Trainer metrics under their own prefix; the loop's step_seconds is
    // the loop's.
    const std::string metrics = l.registry.Render();
    EXPECT_NE(metrics.find("cohort_learner_trainer_loss "), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("cohort_learner_trainer_reward_mean "), std::string::npos);
    EXPECT_EQ(metrics.find("cohort_learner_loss "), std::string::npos);
    EXPECT_NE(metrics.find("cohort_learner_step_seconds "), std::string::npos);
  }
  ASSERT_FALSE(totals.empty());
  const std::string rejoining = totals.begin()->first;

  Learner l2(dir, false, 0);
  ASSERT_TRUE(l2.loop->Start().ok());
  EXPECT_EQ(l2.loop->resumed_stage_index(), 1);  // the run is complete
  l2.loop->SetDone();
  v1::RunStatus s = Status(l2);
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.ledger().SerializeAsString(), final_ledger.SerializeAsString());
  EXPECT_EQ(s.epoch(), 1);
  ASSERT_EQ(s.stages_size(), 1);
  EXPECT_EQ(s.stages(0).name(), "grpo");
  EXPECT_EQ(s.stages(0).state(), "done");
  for (const auto& [name, t] : totals) {
    const v1::ActorInfo* a = FindActor(s, name);
    ASSERT_NE(a, nullptr) << name;
    EXPECT_EQ(a->groups_submitted(), t.first) << name;
    EXPECT_EQ(a->tokens_generated(), t.second) << name;
    EXPECT_TRUE(a->gone()) << name;
    EXPECT_EQ(a->actor_id(), "");
  }
  // It joins again: one entry, its totals carried on, joins counted.
  auto stub = v1::Learner::NewStub(*MakeChannel(l2.server->address(), ChannelOptions()));
  grpc::ClientContext ctx;
  v1::JoinRequest req;
  req.set_actor_name(rejoining);
  req.set_slots(2);
  req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  v1::JoinResponse resp;
  ASSERT_TRUE(stub->Join(&ctx, req, &resp).ok());
  s = Status(l2);
  EXPECT_EQ(s.actors_size(), static_cast<int>(totals.size()));
  const v1::ActorInfo* a = FindActor(s, rejoining);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->actor_id(), resp.actor_id());
  EXPECT_EQ(a->groups_submitted(), totals[rejoining].first);
  EXPECT_FALSE(a->gone());
  EXPECT_GE(a->joins(), 2);
  RemoveAll(dir).IgnoreError();
}

}  // namespace
}  // namespace cohort::learner
