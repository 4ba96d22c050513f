#include "learner/ledger.h"

#include <unistd.h>

#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file.h"

namespace cohort::learner {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

LedgerOptions Small(int64_t n, int64_t p, int k) {
  LedgerOptions o;
  o.num_prompts = n;
  o.prompts_per_step = p;
  o.max_staleness = k;
  o.lease_ttl = absl::Seconds(10);
  return o;
}

GroupVerdict Good(int64_t version = 0) { return {4, false, version}; }

std::shared_ptr<const TrainGroup> G(const LeaseGrant& g) {
  auto group = std::make_shared<TrainGroup>();
  group->prompt_id = g.prompt_id;
  group->epoch = g.epoch;
  group->lease_id = g.lease_id;
  return group;
}

std::string TempDir() {
  char tmpl[] = "/tmp/ledger_test.XXXXXX";
  return ::mkdtemp(tmpl);
}

TEST(LedgerTest, RejectsBadOptions) {
  EXPECT_FALSE(Ledger::Create(Small(0, 1, 1)).ok());
  LedgerOptions o = Small(3, 1, 1);
  o.epoch_orders = {{0, 1, 1}};
  absl::StatusOr<std::unique_ptr<Ledger>> l = Ledger::Create(o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("epoch_orders[0]"), std::string::npos);
}

TEST(LedgerTest, LeasesByActorAndCurrentEpoch) {
  LedgerOptions o = Small(2, 2, 1);
  o.epochs = 2;
  auto ledger = *Ledger::Create(o);
  EXPECT_EQ(ledger->CurrentEpoch(), 0);
  std::vector<LeaseGrant> a = ledger->Lease(1, 0, "a", kT0);
  std::vector<LeaseGrant> b = ledger->Lease(1, 0, "b", kT0);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(ledger->LeasesByActor(), (std::map<std::string, int64_t>{{"a", 1}, {"b", 1}}));
  ASSERT_TRUE(ledger->Submit(a[0].lease_id, Good(), G(a[0]), kT0)->accepted);
  ledger->Release({b[0].lease_id}, kT0);
  EXPECT_TRUE(ledger->LeasesByActor().empty());
  b = ledger->Lease(1, 0, "b", kT0);
  ASSERT_TRUE(ledger->Submit(b[0].lease_id, Good(), G(b[0]), kT0)->accepted);
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch.has_value());
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
  EXPECT_EQ(ledger->CurrentEpoch(), 1);  // epoch 0 is settled
  std::vector<LeaseGrant> c = ledger->Lease(2, 1, "c", kT0);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(ledger->LeasesByActor().at("c"), 2);
  for (const LeaseGrant& g : c)
    ASSERT_TRUE(ledger->Submit(g.lease_id, Good(1), G(g), kT0)->accepted);
  batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch.has_value());
  ASSERT_TRUE(ledger->CommitBatch(*batch, 2, true).ok());
  EXPECT_TRUE(ledger->Done());
  EXPECT_EQ(ledger->CurrentEpoch(), 1);  // the last epoch once all are settled
}

// A resumed learner numbers past the versions a dead one published after
// the checkpoint: the restored ledger continues from the shifted base, and a
// group with a token of a retired version is refused and queued again.
TEST(LedgerTest, StepsBetweenSkipsWhatARestartRenumbered) {
  EXPECT_EQ(StepsBetween(3, 7, {}), 4);
  EXPECT_EQ(StepsBetween(7, 3, {}), -4);
  EXPECT_EQ(StepsBetween(5, 5, {}), 0);
  // Checkpoint of 2, the dead learner published 3..5, 6 = the weights of 2.
  const std::vector<std::pair<int64_t, int64_t>> once = {{3, 5}};
  EXPECT_EQ(StepsBetween(2, 6, once), 0);
  EXPECT_EQ(StepsBetween(1, 6, once), 1);
  EXPECT_EQ(StepsBetween(1, 8, once), 3);
  EXPECT_EQ(StepsBetween(6, 8, once), 2);
  EXPECT_EQ(StepsBetween(8, 1, once), -3);
  EXPECT_EQ(StepsBetween(0, 2, once), 2);
  // Twice: then a checkpoint of 7, the dead one published 8..9, 10 = 7.
  const std::vector<std::pair<int64_t, int64_t>> twice = {{3, 5}, {8, 9}};
  EXPECT_EQ(StepsBetween(1, 11, twice), 1 + 1 + 1);  // 1->2, 6->7, 10->11
  // A start without a checkpoint after versions 0..4: 5 is the fresh
  // initial weights again.
  EXPECT_EQ(StepsBetween(5, 7, {{0, 4}}), 2);
}

TEST(LedgerTest, RestoreWithVersionShiftRefusesRetiredVersions) {
  LedgerOptions o = Small(4, 2, 1);
  o.start_version = 2;
  auto ledger = *Ledger::Create(o);
  std::vector<LeaseGrant> a = ledger->Lease(2, 2, "a", kT0);
  ASSERT_EQ(a.size(), 2u);
  std::string state = *ledger->Serialize();  // the checkpoint: version 2
  // The dead learner went on to publish 3..5; the new one publishes 6.
  LedgerOptions resumed = o;
  resumed.start_version = 6;
  resumed.retired_versions = {{3, 5}};
  auto bad_shift = *Ledger::Create(resumed);
  EXPECT_FALSE(bad_shift->Restore(state, kT0, 3).ok()) << "2 + 3 != 6";
  auto r = *Ledger::Create(resumed);
  ASSERT_TRUE(r->Restore(state, kT0, 4).ok());
  EXPECT_EQ(r->version(), 6);
  auto group = [](const LeaseGrant& g, std::vector<int64_t> versions) {
    auto t = std::make_shared<TrainGroup>();
    t->prompt_id = g.prompt_id;
    t->epoch = g.epoch;
    t->lease_id = g.lease_id;
    TrainSample s;
    s.tokens.assign(versions.size(), 1);
    s.versions = versions;
    t->samples = {s, s};
    return t;
  };
  // Tokens of 6 and of retired 4: refused, the prompt queued again.
  absl::StatusOr<SubmitOutcome> out = r->Submit(a[0].lease_id, Good(4), group(a[0], {6, 4}), kT0);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->accepted);
  EXPECT_EQ(out->reason_code, "retired_version");
  EXPECT_NE(out->reason.find("3..5"), std::string::npos) << out->reason;
  EXPECT_EQ(r->Counts().queued, 3);
  // The same lease again: refused (its prompt is queued, not held by it).
  EXPECT_EQ(r->Submit(a[0].lease_id, Good(6), group(a[0], {6}), kT0)->reason_code, "re_leased");
  // Version 1 is one step behind 6 (= the weights of 2; 3..5 and 6 carry
  // no step): accepted with K = 1, as it was before the restart.
  EXPECT_TRUE(r->Submit(a[1].lease_id, Good(1), group(a[1], {1, 6}), kT0)->accepted);
  // Version 0 is two steps behind: stale. Its prompt is queued again.
  std::vector<LeaseGrant> b = r->Lease(1, 6, "a", kT0);
  ASSERT_EQ(b.size(), 1u);
  out = r->Submit(b[0].lease_id, Good(0), group(b[0], {0}), kT0);
  EXPECT_EQ(out->reason_code, "stale");
  EXPECT_NE(out->reason.find("more than 1 training steps older than version 6"), std::string::npos)
      << out->reason;
  // Deterministic mode keeps its numbering (pins are version numbers).
  LedgerOptions det = Small(4, 2, 1);
  det.deterministic = true;
  std::string det_state = *(*Ledger::Create(det))->Serialize();
  det.start_version = 1;
  EXPECT_FALSE((*Ledger::Create(det))->Restore(det_state, kT0, 1).ok());
}

// Buffered groups of version 0 still need version 0: a restore queues them
// again and their new leases pin it (a checkpoint must keep that version).
TEST(LedgerTest, DeterministicMinPinnedVersionCountsBufferedGroups) {
  LedgerOptions o = Small(8, 2, 1);
  o.deterministic = true;
  auto ledger = *Ledger::Create(o);
  std::vector<LeaseGrant> a = ledger->Lease(4, 0, "a", kT0);
  ASSERT_EQ(a.size(), 4u);  // (K + 1) * P, all pinned to version 0
  for (const LeaseGrant& g : a) {
    EXPECT_EQ(g.pinned_version, 0);
    ASSERT_TRUE(ledger->Submit(g.lease_id, Good(), G(g), kT0)->accepted);
  }
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch.has_value());
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
  EXPECT_EQ(ledger->MinPinnedVersion(), 0);  // items 2 and 3 are buffered
  std::string state = *ledger->Serialize();
  auto restored = *Ledger::Create(o);
  ASSERT_TRUE(restored->Restore(state, kT0).ok());
  EXPECT_EQ(restored->MinPinnedVersion(), 0);
  std::vector<LeaseGrant> again = restored->Lease(2, 1, "b", kT0);
  ASSERT_EQ(again.size(), 2u);
  for (const LeaseGrant& g : again) EXPECT_EQ(g.pinned_version, 0) << g.prompt_id;
}

TEST(LedgerTest, LeaseSubmitTrain) {
  auto ledger = *Ledger::Create(Small(4, 2, 1));
  std::vector<LeaseGrant> a = ledger->Lease(10, 0, "a", kT0);
  ASSERT_EQ(a.size(), 4u);  // (K + 1) * P
  EXPECT_EQ(a[0].prompt_id, 0);
  EXPECT_EQ(a[0].attempt, 1);
  EXPECT_EQ(a[0].deadline, kT0 + absl::Seconds(10));
  EXPECT_FALSE(ledger->TakeBatch(kT0).has_value());
  for (int i = 0; i < 2; ++i) {
    SubmitOutcome out = *ledger->Submit(a[i].lease_id, Good(), G(a[i]), kT0);
    EXPECT_TRUE(out.accepted);
    EXPECT_FALSE(out.duplicate);
  }
  SubmitOutcome dup = *ledger->Submit(a[0].lease_id, Good(), G(a[0]), kT0);
  EXPECT_TRUE(dup.accepted);
  EXPECT_TRUE(dup.duplicate);
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->groups.size(), 2u);
  EXPECT_EQ(ledger->Counts().buffered, 2);
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
  EXPECT_EQ(ledger->version(), 1);
  LedgerCounts c = ledger->Counts();
  EXPECT_EQ(c.trained, 2);
  EXPECT_EQ(c.leased, 2);
  EXPECT_FALSE(c.done);
  absl::StatusOr<SubmitOutcome> unknown = ledger->Submit("nope", Good(), nullptr, kT0);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LedgerTest, LateSubmitAcceptedUnlessReleased) {
  auto ledger = *Ledger::Create(Small(2, 1, 0));
  LeaseGrant a = ledger->Lease(1, 0, "a", kT0)[0];
  // Expired but not re-leased: accepted.
  EXPECT_EQ(ledger->ExpireLeases(kT0 + absl::Seconds(11)), 1);
  EXPECT_EQ(ledger->Counts().queued, 2);
  EXPECT_TRUE(ledger->Submit(a.lease_id, Good(), G(a), kT0 + absl::Seconds(12))->accepted);
  // Expired and re-leased: refused with a reason.
  auto l2 = *Ledger::Create(Small(2, 1, 0));
  LeaseGrant b = l2->Lease(1, 0, "a", kT0)[0];
  std::vector<LeaseGrant> again = l2->Lease(1, 0, "b", kT0 + absl::Seconds(11));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].prompt_id, b.prompt_id);
  EXPECT_EQ(again[0].attempt, 2);
  SubmitOutcome late = *l2->Submit(b.lease_id, Good(), G(b), kT0 + absl::Seconds(12));
  EXPECT_FALSE(late.accepted);
  EXPECT_EQ(late.reason_code, "re_leased");
  // Renew reports the old lease as gone, the new one as live.
  std::vector<std::string> gone =
      l2->Renew({b.lease_id, again[0].lease_id}, kT0 + absl::Seconds(13));
  EXPECT_EQ(gone, std::vector<std::string>{b.lease_id});
}

TEST(LedgerTest, ReleaseReturnsToQueueWithoutAttempt) {
  auto ledger = *Ledger::Create(Small(1, 1, 0));
  LeaseGrant a = ledger->Lease(1, 0, "a", kT0)[0];
  ledger->Release({a.lease_id}, kT0);
  EXPECT_EQ(ledger->Counts().queued, 1);
  EXPECT_EQ(ledger->Counts().leases_released, 1);
  LeaseGrant b = ledger->Lease(1, 0, "b", kT0)[0];
  EXPECT_EQ(b.prompt_id, 0);
  EXPECT_NE(b.lease_id, a.lease_id);
}

TEST(LedgerTest, FewOkSamplesRetriedThenFailed) {
  std::string dir = TempDir();
  LedgerOptions o = Small(1, 1, 0);
  o.max_lease_attempts = 2;
  o.journal_dir = dir;
  auto ledger = *Ledger::Create(o);
  LeaseGrant a = ledger->Lease(1, 0, "a", kT0)[0];
  SubmitOutcome r1 = *ledger->Submit(a.lease_id, {1, false, 0}, G(a), kT0);
  EXPECT_TRUE(r1.accepted);
  EXPECT_TRUE(r1.retry);
  EXPECT_EQ(ledger->Counts().queued, 1);
  LeaseGrant b = ledger->Lease(1, 0, "a", kT0)[0];
  SubmitOutcome r2 = *ledger->Submit(b.lease_id, {0, false, 0}, G(b), kT0);
  EXPECT_EQ(r2.settled, "failed");
  LedgerCounts c = ledger->Counts();
  EXPECT_EQ(c.failed, 1);
  EXPECT_TRUE(c.done);
  std::string failed = *ReadFile(dir + "/failed.jsonl");
  nlohmann::json line = nlohmann::json::parse(failed);
  EXPECT_EQ(line["prompt_id"], 0);
  EXPECT_EQ(line["attempts"], 2);
  EXPECT_EQ(line["lease_id"], b.lease_id);
  RemoveAll(dir).IgnoreError();
}

TEST(LedgerTest, DynamicSamplingFilters) {
  LedgerOptions o = Small(2, 1, 0);
  o.dynamic_sampling = true;
  auto ledger = *Ledger::Create(o);
  LeaseGrant a = ledger->Lease(1, 0, "a", kT0)[0];
  EXPECT_EQ(ledger->Submit(a.lease_id, {4, true, 0}, G(a), kT0)->settled, "filtered");
  // Pacing freed the slot: the next prompt can be leased.
  EXPECT_EQ(ledger->Lease(1, 0, "a", kT0).size(), 1u);
}

TEST(LedgerTest, PacingBoundsStaleness) {
  // K = 0: synchronous: at most P groups in flight, none while training.
  auto ledger = *Ledger::Create(Small(10, 2, 0));
  std::vector<LeaseGrant> a = ledger->Lease(10, 0, "a", kT0);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_TRUE(ledger->Lease(10, 0, "a", kT0).empty());
  for (auto& g : a) ASSERT_TRUE(ledger->Submit(g.lease_id, Good(0), G(g), kT0)->accepted);
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch);
  EXPECT_TRUE(ledger->Lease(10, 1, "a", kT0).empty());  // training in progress
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
  // An actor still on version 0 gets nothing; one on version 1 gets P (once
  // the first one's wait for its fair share has lapsed).
  EXPECT_TRUE(ledger->Lease(10, 0, "a", kT0).empty());
  std::vector<LeaseGrant> b = ledger->Lease(10, 1, "b", kT0 + absl::Seconds(2));
  ASSERT_EQ(b.size(), 2u);
  // A group generated with version 0 is now too stale: refused, requeued.
  SubmitOutcome stale = *ledger->Submit(b[0].lease_id, Good(0), G(b[0]), kT0);
  EXPECT_FALSE(stale.accepted);
  EXPECT_EQ(stale.reason_code, "stale");
  EXPECT_EQ(ledger->Counts().stale, 1);
  EXPECT_EQ(ledger->Counts().queued, 7);  // 10 - 2 trained - 1 leased
}

// Fair shares. Two actors take turns, each asking for the whole window;
// "a" always asks first after the learner trained (FCFS would give it
// every lease). Returns the leases granted to each.
std::map<std::string, int64_t> TakeTurns(LedgerOptions o) {
  auto ledger = *Ledger::Create(o);
  const int window = static_cast<int>((o.max_staleness + 1) * o.prompts_per_step);
  std::map<std::string, int64_t> granted;
  std::map<std::string, std::vector<LeaseGrant>> held;
  absl::Time now = kT0;
  int64_t step = 0;
  for (int round = 0; round < 1000 && !ledger->Done(); ++round) {
    for (const char* actor : {"a", "b"}) {
      for (const LeaseGrant& g : ledger->Lease(window, ledger->version(), actor, now)) {
        held[actor].push_back(g);
        ++granted[actor];
      }
    }
    for (auto& [actor, leases] : held) {
      for (const LeaseGrant& g : leases) {
        EXPECT_TRUE(ledger->Submit(g.lease_id, Good(ledger->version()), G(g), now)->accepted);
      }
      leases.clear();
    }
    while (std::optional<LedgerBatch> batch = ledger->TakeBatch(now)) {
      EXPECT_TRUE(ledger->CommitBatch(*batch, ++step, true).ok());
    }
    now += absl::Milliseconds(100);
  }
  EXPECT_TRUE(ledger->Done());
  return granted;
}

TEST(LedgerTest, FairSharesTwoActorsAskingInTurnGetNearEqualShares) {
  for (bool deterministic : {false, true}) {
    LedgerOptions o = Small(64, 4, 1);
    o.deterministic = deterministic;
    std::map<std::string, int64_t> granted = TakeTurns(o);
    std::printf("deterministic %d: a %lld, b %lld of 64 leases\n", deterministic,
                static_cast<long long>(granted["a"]), static_cast<long long>(granted["b"]));
    EXPECT_EQ(granted["a"] + granted["b"], 64);
    // "a" is alone in its first ask (the whole window, 8), then each holds
    // its share of 4: 36 and 28.
    EXPECT_GE(granted["a"], 64 * 4 / 10) << "deterministic " << deterministic;
    EXPECT_GE(granted["b"], 64 * 4 / 10) << "deterministic " << deterministic;
    // First come, first served: "a" takes every lease.
    o.share_hold = absl::ZeroDuration();
    granted = TakeTurns(o);
    EXPECT_EQ(granted["a"], 64) << "deterministic " << deterministic;
    EXPECT_EQ(granted["b"], 0);
  }
}

TEST(LedgerTest, FairSharesSingleActorGetsTheWholeWindow) {
  auto alone = *Ledger::Create(Small(64, 4, 1));
  EXPECT_EQ(alone->Lease(100, 0, "a", kT0).size(), 8u);  // (K + 1) * P
  // "b" asked for more than the window, kept 2 leases and went quiet for
  // longer than share_hold: "a" is alone again.
  auto ledger = *Ledger::Create(Small(64, 4, 1));
  std::vector<LeaseGrant> b = ledger->Lease(100, 0, "b", kT0);
  ASSERT_EQ(b.size(), 8u);
  std::vector<std::string> release;
  for (size_t i = 2; i < b.size(); ++i) release.push_back(b[i].lease_id);
  ledger->Release(release, kT0);
  EXPECT_EQ(ledger->Lease(100, 0, "a", kT0 + absl::Seconds(2)).size(), 6u);
}

TEST(LedgerTest, FairSharesADeadActorsShareReturns) {
  for (bool forget : {false, true}) {
    auto ledger = *Ledger::Create(Small(64, 4, 1));
    std::vector<LeaseGrant> a = ledger->Lease(6, 0, "a", kT0);
    ASSERT_EQ(a.size(), 6u);  // alone
    // "b" gets the rest (2 of the 6 it asks for) and waits for its share.
    ASSERT_EQ(ledger->Lease(6, 0, "b", kT0).size(), 2u);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(ledger->Submit(a[i].lease_id, Good(), G(a[i]), kT0)->accepted);
    }
    std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
    ASSERT_TRUE(batch);
    ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
    // 4 free in the window: "a" holds 2 of its share of 4, "b" 2 of 4.
    const absl::Time t1 = kT0 + absl::Milliseconds(500);
    if (forget) ledger->ForgetActor("b");  // it left (or joined again)
    std::vector<LeaseGrant> more = ledger->Lease(10, 1, "a", t1);
    if (forget) {
      EXPECT_EQ(more.size(), 4u) << "the share of an actor that left returns at once";
      continue;
    }
    EXPECT_EQ(more.size(), 2u) << "b waits: a is capped at its share";
    // "b" died: once it has not asked for share_hold, "a" takes the rest.
    EXPECT_EQ(ledger->Lease(10, 1, "a", t1 + absl::Milliseconds(400)).size(), 0u);
    EXPECT_EQ(ledger->Lease(10, 1, "a", kT0 + absl::Milliseconds(1100)).size(), 2u);
  }
}

TEST(LedgerTest, FairSharesOnlyAnActorOnTheLatestVersionWaits) {
  for (int64_t b_version : {1, 0}) {
    auto ledger = *Ledger::Create(Small(64, 2, 2));  // window 6
    std::vector<LeaseGrant> a = ledger->Lease(4, 0, "a", kT0);
    ASSERT_EQ(a.size(), 4u);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(ledger->Submit(a[i].lease_id, Good(), G(a[i]), kT0)->accepted);
    }
    std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
    ASSERT_TRUE(batch);
    ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
    ASSERT_EQ(ledger->Lease(2, 1, "a", kT0).size(), 2u);  // "a" holds 4
    // On version 1, "b" gets the 2 left and waits for its share of 3; on
    // version 0 it gets nothing (pacing) and waits for weights, not leases.
    EXPECT_EQ(ledger->Lease(10, b_version, "b", kT0).size(), b_version == 1 ? 2u : 0u);
    ledger->Release({a[2].lease_id, a[3].lease_id}, kT0);  // "a" holds 2
    EXPECT_EQ(ledger->Lease(10, 1, "a", kT0).size(), b_version == 1 ? 1u : 4u)
        << "b on version " << b_version;
  }
  // A wait started on the latest version outlasts asks from an old one (the
  // actor fetches the new version) for share_hold, not longer.
  auto ledger = *Ledger::Create(Small(64, 2, 1));  // window 4
  std::vector<LeaseGrant> held = ledger->Lease(4, 0, "a", kT0);
  ASSERT_EQ(held.size(), 4u);
  EXPECT_TRUE(ledger->Lease(4, 0, "b", kT0).empty());  // waits, on the latest version
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ledger->Submit(held[i].lease_id, Good(), G(held[i]), kT0)->accepted);
  }
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch);
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());  // version 1
  const absl::Time t = kT0 + absl::Milliseconds(500);
  EXPECT_TRUE(ledger->Lease(4, 0, "b", t).empty());  // behind: nothing (pacing)
  EXPECT_EQ(ledger->Lease(4, 1, "a", t).size(), 0u) << "a holds its share of 2; b still waits";
  EXPECT_TRUE(ledger->Lease(4, 0, "b", kT0 + absl::Milliseconds(900)).empty());
  EXPECT_EQ(ledger->Lease(4, 1, "a", kT0 + absl::Milliseconds(1100)).size(), 2u)
      << "b's wait lapsed share_hold after its last ask on the latest version";
}

TEST(LedgerTest, RestoreRejectsOtherDataset) {
  auto a = *Ledger::Create(Small(3, 1, 0));
  std::string state = *a->Serialize();
  auto b = *Ledger::Create(Small(4, 1, 0));
  absl::Status s = b->Restore(state, kT0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dataset or config changed"), std::string::npos) << s;
}

TEST(LedgerTest, DeterministicPinsAndSeeds) {
  LedgerOptions o = Small(6, 2, 1);
  o.deterministic = true;
  auto ledger = *Ledger::Create(o);
  std::vector<LeaseGrant> a = ledger->Lease(10, 0, "a", kT0);
  ASSERT_EQ(a.size(), 4u);  // window (K + 1) * P
  for (const auto& g : a) {
    EXPECT_EQ(g.pinned_version, 0);
    EXPECT_EQ(g.seed, LeaseSeed(1, g.prompt_id, 0, 0));
  }
  // Out-of-order completion: the batch waits for the first P in order.
  ASSERT_TRUE(ledger->Submit(a[1].lease_id, Good(), G(a[1]), kT0)->accepted);
  ASSERT_TRUE(ledger->Submit(a[2].lease_id, Good(), G(a[2]), kT0)->accepted);
  EXPECT_FALSE(ledger->TakeBatch(kT0));
  ASSERT_TRUE(ledger->Submit(a[0].lease_id, Good(), G(a[0]), kT0)->accepted);
  std::optional<LedgerBatch> batch = ledger->TakeBatch(kT0);
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->seqs, (std::vector<int64_t>{0, 1}));
  ASSERT_TRUE(ledger->CommitBatch(*batch, 1, true).ok());
  std::vector<LeaseGrant> b = ledger->Lease(10, 0, "a", kT0);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].seq, 4);
  EXPECT_EQ(b[0].pinned_version, 1);
}

// ---------------------------------------------------------------------------
// The property test: random interleavings of lease, renew, expire, submit,
// duplicate submit, release, train and restart-from-checkpoint, checking the
// account after every operation and auditing the journals at the end.

struct Sim {
  LedgerOptions options;
  std::unique_ptr<Ledger> ledger;
  std::string checkpoint;  // last Serialize()
  absl::Time now = kT0;
  std::mt19937_64 rng;
  std::vector<LeaseGrant> held;       // leases actors work on
  std::vector<LeaseGrant> submitted;  // for duplicate submissions
  int64_t step = 0;
  std::string failure;

  int64_t Rand(int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); }

  // The outcome of generating a lease: in deterministic mode a function of
  // the item and its seed only, so schedules cannot change it.
  GroupVerdict Generate(const LeaseGrant& g, int64_t actor_version) {
    uint64_t h = options.deterministic ? g.seed ^ static_cast<uint64_t>(g.seq) * 7919 : rng();
    GroupVerdict v;
    v.ok_samples = static_cast<int>(h % 5) == 0 ? 1 : 4;
    v.all_rewards_equal = (h >> 8) % 4 == 0;
    v.min_version = g.pinned_version >= 0 ? g.pinned_version : actor_version;
    return v;
  }

  bool Check(const char* after) {
    LedgerCounts c = ledger->Counts();
    int64_t sum = c.queued + c.leased + c.buffered + c.trained + c.filtered + c.failed;
    if (sum != c.prompts_total || c.duplicates != 0 || c.lost != 0) {
      failure = absl::StrCat("after ", after, ": total ", c.prompts_total, " sum ", sum,
                             " duplicates ", c.duplicates, " lost ", c.lost);
      return false;
    }
    return true;
  }

  bool Train() {
    std::optional<LedgerBatch> batch = ledger->TakeBatch(now);
    if (!batch) return true;
    int64_t v = ledger->version();
    for (const auto& group : batch->groups) {
      for (const auto& sample : group->samples) {
        for (int64_t tv : sample.versions) {
          if (tv > v || tv < v - options.max_staleness) {
            failure = absl::StrCat("token version ", tv, " trained at version ", v);
            return false;
          }
        }
      }
    }
    if (static_cast<int64_t>(batch->groups.size()) > options.prompts_per_step) {
      failure = "batch too large";
      return false;
    }
    ++step;
    absl::Status s = ledger->CommitBatch(*batch, step, true);
    if (!s.ok()) failure = std::string(s.message());
    return s.ok();
  }

  bool Submit(const LeaseGrant& g, int64_t actor_version) {
    GroupVerdict v = Generate(g, actor_version);
    auto group = std::make_shared<TrainGroup>();
    group->prompt_id = g.prompt_id;
    group->epoch = g.epoch;
    group->lease_id = g.lease_id;
    group->samples.resize(1);
    group->samples[0].versions = {v.min_version};
    absl::StatusOr<SubmitOutcome> out = ledger->Submit(g.lease_id, v, group, now);
    if (!out.ok() && out.status().code() != absl::StatusCode::kFailedPrecondition) {
      failure = std::string(out.status().message());
      return false;
    }
    submitted.push_back(g);
    return true;
  }

  bool Restart() {
    auto fresh = Ledger::Create(options);
    if (!fresh.ok()) return false;
    if (!checkpoint.empty()) {
      absl::Status s = (*fresh)->Restore(checkpoint, now);
      if (!s.ok()) {
        failure = absl::StrCat("restore: ", s.message());
        return false;
      }
    } else if (!options.journal_dir.empty()) {
      for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
        RemoveAll(options.journal_dir + "/" + f).IgnoreError();
      }
      fresh = Ledger::Create(options);
    }
    ledger = *std::move(fresh);
    step = ledger->Counts().batches;
    return true;
  }

  // One random operation.
  bool Op() {
    int64_t v = ledger->version();
    switch (Rand(12)) {
      case 0:
      case 1:
      case 2: {  // an actor (maybe one version behind) leases
        int64_t actor_version = std::max<int64_t>(0, v - Rand(2));
        const std::string actor(1, static_cast<char>('a' + Rand(3)));
        for (LeaseGrant& g :
             ledger->Lease(static_cast<int>(1 + Rand(4)), actor_version, actor, now)) {
          g.pinned_version = g.pinned_version;  // kept as granted
          held.push_back(g);
          held.back().seed = g.seed;
        }
        return Check("lease");
      }
      case 3:
      case 4:
      case 5: {  // submit a held lease
        if (held.empty()) return true;
        size_t i = Rand(held.size());
        LeaseGrant g = held[i];
        held.erase(held.begin() + i);
        return Submit(g, std::max<int64_t>(0, v - Rand(2))) && Check("submit");
      }
      case 6: {  // duplicate submission
        if (submitted.empty()) return true;
        return Submit(submitted[Rand(submitted.size())], v) && Check("duplicate");
      }
      case 7: {  // renew everything held
        std::vector<std::string> ids;
        for (const auto& g : held) ids.push_back(g.lease_id);
        ledger->Renew(ids, now);
        return Check("renew");
      }
      case 8:  // time passes (maybe past the TTL)
        now += absl::Seconds(Rand(13));
        ledger->ExpireLeases(now);
        return Check("expire");
      case 9:  // an actor dies or drains
        if (!held.empty() && Rand(2) == 0) {
          ledger->Release({held.back().lease_id}, now);
        }
        if (!held.empty()) held.pop_back();
        return Check("release");
      case 10:
        return Train() && Check("train");
      default: {  // checkpoint, and sometimes crash and restart from it
        if (Rand(2) == 0) {
          absl::StatusOr<std::string> state = ledger->Serialize();
          if (!state.ok()) return false;
          checkpoint = *state;
          return true;
        }
        return Restart() && Check("restart");
      }
    }
  }

  // Drives the stage to its end with a well-behaved actor.
  bool Finish() {
    for (int round = 0; round < 10000 && !ledger->Done(); ++round) {
      int64_t v = ledger->version();
      for (const LeaseGrant& g : held) {
        if (!Submit(g, v)) return false;
      }
      held.clear();
      held = ledger->Lease(1000, v, "z", now);
      if (!Train()) return false;
      if (held.empty()) now += absl::Seconds(11);  // let orphaned leases expire
      if (!Check("finish")) return false;
    }
    if (!ledger->Done()) {
      failure = "stage did not finish";
      return false;
    }
    return true;
  }
};

std::string AuditJournals(const std::string& dir, const LedgerOptions& o) {
  std::map<std::pair<int64_t, int64_t>, int> seen;
  for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
    absl::StatusOr<std::string> text = ReadFile(dir + "/" + f);
    if (!text.ok()) continue;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) return absl::StrCat(f, ": bad line ", line);
      ++seen[{j["prompt_id"].get<int64_t>(), j["epoch"].get<int64_t>()}];
    }
  }
  if (static_cast<int64_t>(seen.size()) != o.num_prompts * o.epochs) {
    return absl::StrCat("journals name ", seen.size(), " items, expected ",
                        o.num_prompts * o.epochs);
  }
  for (const auto& [item, n] : seen) {
    if (n != 1)
      return absl::StrCat("item ", item.first, "/", item.second, " appears ", n, " times");
  }
  return "";
}

LedgerOptions RandomOptions(std::mt19937_64& rng, bool deterministic) {
  LedgerOptions o;
  o.num_prompts = 1 + rng() % 12;
  o.epochs = 1 + rng() % 3;
  o.prompts_per_step = 1 + rng() % 4;
  o.max_staleness = rng() % 3;
  o.max_lease_attempts = 1 + rng() % 3;
  o.dynamic_sampling = rng() % 2 == 0;
  o.deterministic = deterministic;
  o.lease_ttl = absl::Seconds(10);
  o.seed = rng();
  o.epoch_orders.resize(o.epochs);
  for (auto& order : o.epoch_orders) {
    for (int64_t i = 0; i < o.num_prompts; ++i) order.push_back(i);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return o;
}

TEST(LedgerPropertyTest, ExactlyOnceUnderRandomInterleavings) {
  std::string dir = TempDir();
  int journaled = 0;
  for (uint64_t seed = 1; seed <= 3000; ++seed) {
    Sim sim;
    sim.rng.seed(seed);
    sim.options = RandomOptions(sim.rng, seed % 3 == 0);
    // Every fourth seed also writes and audits the journals.
    if (seed % 4 == 0) {
      sim.options.journal_dir = absl::StrCat(dir, "/", seed);
      sim.options.sync_journals = false;
      ++journaled;
    }
    sim.ledger = *Ledger::Create(sim.options);
    int ops = 20 + static_cast<int>(sim.rng() % 200);
    bool ok = true;
    for (int i = 0; ok && i < ops; ++i) ok = sim.Op();
    ok = ok && sim.Finish();
    ASSERT_TRUE(ok) << "seed " << seed << ": " << sim.failure;
    LedgerCounts c = sim.ledger->Counts();
    ASSERT_EQ(c.trained + c.filtered + c.failed, c.prompts_total) << "seed " << seed;
    if (!sim.options.journal_dir.empty()) {
      std::string audit = AuditJournals(sim.options.journal_dir, sim.options);
      ASSERT_EQ(audit, "") << "seed " << seed;
      RemoveAll(sim.options.journal_dir).IgnoreError();
    }
  }
  EXPECT_GT(journaled, 100);
  RemoveAll(dir).IgnoreError();
}

// Deterministic mode: the sequence of batches does not depend on the
// schedule (how many actors, in which order they submit, expiries,
// restarts).
TEST(LedgerPropertyTest, DeterministicBatchesIndependentOfSchedule) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    std::mt19937_64 orng(seed);
    LedgerOptions options = RandomOptions(orng, true);
    std::vector<std::vector<int64_t>> reference;
    for (int schedule = 0; schedule < 3; ++schedule) {
      Sim sim;
      sim.rng.seed(seed * 1000 + schedule);
      sim.options = options;
      sim.ledger = *Ledger::Create(options);
      std::vector<std::vector<int64_t>> batches;
      // Record batches by wrapping Train.
      for (int round = 0; round < 20000 && !sim.ledger->Done(); ++round) {
        int64_t r = sim.Rand(10);
        if (r < 3) {
          const std::string actor(1, static_cast<char>('a' + sim.Rand(3)));
          for (auto& g : sim.ledger->Lease(1 + sim.Rand(3), 0, actor, sim.now)) {
            sim.held.push_back(g);
          }
        } else if (r < 7 && !sim.held.empty()) {
          size_t i = sim.Rand(sim.held.size());
          LeaseGrant g = sim.held[i];
          sim.held.erase(sim.held.begin() + i);
          ASSERT_TRUE(sim.Submit(g, 0)) << sim.failure;
        } else if (r < 8) {
          sim.now += absl::Seconds(sim.Rand(12));
          sim.ledger->ExpireLeases(sim.now);
        } else if (r < 9) {
          std::optional<LedgerBatch> b = sim.ledger->TakeBatch(sim.now);
          if (b) {
            batches.push_back(b->seqs);
            ASSERT_TRUE(sim.ledger->CommitBatch(*b, ++sim.step, true).ok());
          }
        } else if (!sim.held.empty()) {
          sim.held.pop_back();  // an actor dies
        }
      }
      ASSERT_TRUE(sim.ledger->Done()) << "seed " << seed << " schedule " << schedule;
      if (schedule == 0) {
        reference = batches;
      } else {
        ASSERT_EQ(batches, reference) << "seed " << seed << " schedule " << schedule;
      }
    }
  }
}

}  // namespace
}  // namespace cohort::learner
