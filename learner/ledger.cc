#include "learner/ledger.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/status.h"

namespace cohort::learner {
namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

const char* kTrained = "trained.jsonl";
const char* kFiltered = "filtered.jsonl";
const char* kFailed = "failed.jsonl";

std::string NewIncarnation() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
               static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  return absl::StrFormat("%08x", static_cast<uint32_t>(SplitMix(v)));
}

int64_t FileSize(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? static_cast<int64_t>(text->size()) : 0;
}

}  // namespace

uint64_t LeaseSeed(uint64_t seed, int64_t prompt_id, int32_t epoch, int32_t attempt) {
  uint64_t h = SplitMix(seed);
  h = SplitMix(h ^ static_cast<uint64_t>(prompt_id));
  h = SplitMix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(epoch)) << 1));
  h = SplitMix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(attempt)) << 33));
  // Leave room for + sample index without wrapping into 0.
  return (h >> 1) | 1;
}

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Create(LedgerOptions o) {
  if (o.num_prompts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ledger num_prompts: expected >= 1, got ", o.num_prompts));
  }
  if (o.epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("ledger epochs: expected >= 1, got ", o.epochs));
  }
  if (o.prompts_per_step < 1 || o.max_staleness < 0 || o.max_lease_attempts < 1 ||
      o.lease_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ledger: expected prompts_per_step >= 1, max_staleness >= 0, max_lease_attempts >= 1, "
        "lease_ttl > 0; got ",
        o.prompts_per_step, ", ", o.max_staleness, ", ", o.max_lease_attempts, ", ",
        absl::FormatDuration(o.lease_ttl)));
  }
  if (!o.epoch_orders.empty()) {
    if (static_cast<int64_t>(o.epoch_orders.size()) != o.epochs) {
      return absl::InvalidArgumentError(absl::StrCat("ledger epoch_orders: expected ", o.epochs,
                                                     " orders, got ", o.epoch_orders.size()));
    }
    for (size_t e = 0; e < o.epoch_orders.size(); ++e) {
      std::vector<int64_t> sorted = o.epoch_orders[e];
      std::sort(sorted.begin(), sorted.end());
      bool perm = static_cast<int64_t>(sorted.size()) == o.num_prompts;
      for (int64_t i = 0; perm && i < o.num_prompts; ++i) perm = sorted[i] == i;
      if (!perm) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ledger epoch_orders[", e, "]: not a permutation of [0, ", o.num_prompts, ")"));
      }
    }
  }
  if (!o.prompt_uids.empty() && static_cast<int64_t>(o.prompt_uids.size()) != o.num_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("ledger prompt_uids: expected ", o.num_prompts,
                                                   " ids, got ", o.prompt_uids.size()));
  }
  if (!o.journal_dir.empty()) RETURN_IF_ERROR(MakeDirs(o.journal_dir));
  return std::unique_ptr<Ledger>(new Ledger(std::move(o)));
}

Ledger::Ledger(LedgerOptions options)
    : options_(std::move(options)),
      total_(options_.num_prompts * options_.epochs),
      incarnation_(NewIncarnation()) {
  absl::MutexLock lock(&mu_);
  items_.resize(total_);
  state_count_.assign(7, 0);
  state_count_[static_cast<int>(State::kQueued)] = total_;
  for (int64_t s = 0; s < total_; ++s) queue_.insert(queue_.end(), s);
  cap_ = std::min<int64_t>(total_, (options_.max_staleness + 1) * options_.prompts_per_step);
  if (!options_.journal_dir.empty()) {
    for (const char* f : {kTrained, kFiltered, kFailed}) {
      journal_bytes_[f] = FileSize(absl::StrCat(options_.journal_dir, "/", f));
    }
  }
}

int64_t Ledger::PromptOf(int64_t seq) const {
  int64_t e = seq / options_.num_prompts, pos = seq % options_.num_prompts;
  return options_.epoch_orders.empty() ? pos : options_.epoch_orders[e][pos];
}

int32_t Ledger::EpochOf(int64_t seq) const {
  return static_cast<int32_t>(seq / options_.num_prompts);
}

uint64_t Ledger::SeedFor(int64_t seq, int32_t bad_groups) const {
  return LeaseSeed(options_.seed, PromptOf(seq), EpochOf(seq), bad_groups);
}

void Ledger::SetState(int64_t seq, State s) {
  Item& it = items_[seq];
  --state_count_[static_cast<int>(it.state)];
  ++state_count_[static_cast<int>(s)];
  if (it.state == State::kQueued) queue_.erase(seq);
  if (it.state == State::kBuffered) buffered_.erase(seq);
  if (it.state == State::kLeased) leased_.erase(seq);
  it.state = s;
  if (s == State::kQueued) queue_.insert(seq);
  if (s == State::kBuffered) buffered_.insert(seq);
  if (s == State::kLeased) leased_.insert(seq);
  if (s == State::kTrained || s == State::kFiltered || s == State::kFailed) ++it.settles;
}

int64_t StepsBetween(int64_t from, int64_t to,
                     const std::vector<std::pair<int64_t, int64_t>>& retired) {
  if (from > to) return -StepsBetween(to, from, retired);
  int64_t steps = to - from;
  for (const auto& [first, last] : retired) {
    // The numbers first..last + 1 that lie in (from, to] carry no step.
    const int64_t lo = std::max(first, from + 1), hi = std::min(last + 1, to);
    if (hi >= lo) steps -= hi - lo + 1;
  }
  return steps;
}

void Ledger::Requeue(int64_t seq) {
  Item& it = items_[seq];
  it.lease_live = false;
  it.group.reset();
  SetState(seq, State::kQueued);
}

int Ledger::ExpireLocked(absl::Time now) {
  int n = 0;
  std::vector<int64_t> expired;
  for (int64_t s : leased_) {
    if (items_[s].lease_live && items_[s].deadline <= now) expired.push_back(s);
  }
  for (int64_t s : expired) {
    Requeue(s);  // lease_id stays: a late submission is accepted until re-leased
    ++n;
  }
  events_.leases_expired += n;
  return n;
}

int Ledger::ExpireLeases(absl::Time now) {
  absl::MutexLock lock(&mu_);
  return ExpireLocked(now);
}

LeaseGrant Ledger::GrantOf(int64_t seq) const {
  const Item& it = items_[seq];
  LeaseGrant g;
  g.lease_id = it.lease_id;
  g.prompt_id = PromptOf(seq);
  g.epoch = EpochOf(seq);
  g.seq = seq;
  g.attempt = it.grants;
  g.deadline = it.deadline;
  g.pinned_version = it.pinned;
  g.seed = options_.deterministic
               ? SeedFor(seq, it.bad_groups)
               : SplitMix(std::hash<std::string>()(it.lease_id) ^ options_.seed) | 1;
  return g;
}

int64_t Ledger::PinFor(int64_t seq) const {
  // Smallest local version b with seq < cap(b); caps_ is non-decreasing.
  auto it = std::upper_bound(caps_.begin(), caps_.end(), seq);
  int64_t b = it - caps_.begin();
  return options_.start_version + b;
}

int64_t Ledger::CapLocked() {
  // Extend the window when every item in it is settled or buffered and the
  // buffered ones after the boundary cannot fill a batch: deterministic,
  // since it depends only on outcomes of items below the cap.
  while (cap_ < total_ && !training_) {
    int64_t good = 0;
    bool open = false;
    for (int64_t s = boundary_; s < cap_; ++s) {
      State st = items_[s].state;
      if (st == State::kBuffered) {
        ++good;
      } else if (st == State::kQueued || st == State::kLeased) {
        open = true;
        break;
      }
    }
    if (open || good >= options_.prompts_per_step) break;
    cap_ = std::min(total_, cap_ + options_.prompts_per_step - good);
  }
  return cap_;
}

int64_t Ledger::ShareLimitLocked(const std::string& actor_id, absl::Time now) {
  constexpr int64_t kUncapped = std::numeric_limits<int64_t>::max();
  if (options_.share_hold <= absl::ZeroDuration()) return kUncapped;
  askers_[actor_id].last_ask = now;
  const absl::Time since = now - options_.share_hold;
  // Actors that have not asked within share_hold neither count nor wait.
  for (auto it = askers_.begin(); it != askers_.end();) {
    it = it->second.last_ask < since ? askers_.erase(it) : std::next(it);
  }
  const int64_t n = static_cast<int64_t>(askers_.size());
  if (n <= 1) return kUncapped;
  const int64_t window = (options_.max_staleness + 1) * options_.prompts_per_step;
  const int64_t share = (window + n - 1) / n;
  std::map<std::string, int64_t> held;
  for (int64_t s : leased_) ++held[items_[s].holder];
  for (int64_t s : buffered_) ++held[items_[s].holder];
  for (const auto& [id, a] : askers_) {
    if (id != actor_id && a.last_short >= since && held[id] < share) {
      return std::max<int64_t>(0, share - held[actor_id]);
    }
  }
  return kUncapped;
}

void Ledger::ForgetActor(const std::string& actor_id) {
  absl::MutexLock lock(&mu_);
  askers_.erase(actor_id);
}

std::vector<LeaseGrant> Ledger::Lease(int max, int64_t actor_version, const std::string& actor_id,
                                      absl::Time now) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(now);
  std::vector<LeaseGrant> out;
  if (max <= 0) return out;
  const int64_t limit = std::min<int64_t>(max, ShareLimitLocked(actor_id, now));
  std::vector<int64_t> picked;
  const int64_t P = options_.prompts_per_step, K = options_.max_staleness;
  if (options_.deterministic) {
    int64_t cap = CapLocked();
    for (auto it = queue_.begin();
         it != queue_.end() && static_cast<int64_t>(picked.size()) < limit; ++it) {
      if (*it >= cap) break;
      picked.push_back(*it);
    }
  } else {
    int64_t v_eff = VersionLocked() + (training_ ? 1 : 0);
    int64_t lag = std::max<int64_t>(
        0, StepsBetween(std::min(actor_version, VersionLocked()), v_eff, options_.retired_versions));
    int64_t in_flight =
        state_count_[static_cast<int>(State::kLeased)] + static_cast<int64_t>(buffered_.size());
    int64_t capacity = (K + 1 - lag) * P - in_flight;
    for (auto it = queue_.begin(); it != queue_.end() && static_cast<int64_t>(picked.size()) <
                                                             std::min<int64_t>(limit, capacity);
         ++it) {
      picked.push_back(*it);
    }
  }
  auto asker = askers_.find(actor_id);
  if (asker != askers_.end()) {
    // Waiting for a share: the ask was not filled while items are queued.
    // An actor behind on versions (it fetches the latest first) neither
    // starts waiting nor stops: a wait from when it was current lapses
    // after share_hold.
    if (static_cast<int64_t>(picked.size()) >= max || queue_.size() <= picked.size()) {
      asker->second.last_short = absl::InfinitePast();
    } else if (options_.deterministic || actor_version >= VersionLocked()) {
      asker->second.last_short = now;
    }
  }
  for (int64_t s : picked) {
    Item& it = items_[s];
    it.lease_id = absl::StrCat("L", incarnation_, "-", next_lease_++);
    it.lease_live = true;
    it.holder = actor_id;
    it.deadline = now + options_.lease_ttl;
    ++it.grants;
    it.pinned = options_.deterministic ? PinFor(s) : -1;
    lease_seq_[it.lease_id] = s;
    SetState(s, State::kLeased);
    ++events_.leases_granted;
    out.push_back(GrantOf(s));
  }
  return out;
}

absl::StatusOr<LeaseGrant> Ledger::FindLease(const std::string& lease_id) const {
  absl::MutexLock lock(&mu_);
  auto f = lease_seq_.find(lease_id);
  if (f == lease_seq_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown lease_id \"", lease_id, "\""));
  }
  LeaseGrant g = GrantOf(f->second);
  g.lease_id = lease_id;
  return g;
}

std::vector<std::string> Ledger::Renew(const std::vector<std::string>& lease_ids, absl::Time now) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(now);
  std::vector<std::string> gone;
  for (const std::string& id : lease_ids) {
    auto f = lease_seq_.find(id);
    Item* it = f == lease_seq_.end() ? nullptr : &items_[f->second];
    if (it == nullptr || it->lease_id != id || it->state != State::kLeased || !it->lease_live) {
      gone.push_back(id);
      continue;
    }
    it->deadline = now + options_.lease_ttl;
  }
  return gone;
}

void Ledger::Release(const std::vector<std::string>& lease_ids, absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (const std::string& id : lease_ids) {
    auto f = lease_seq_.find(id);
    if (f == lease_seq_.end()) continue;
    Item& it = items_[f->second];
    if (it.lease_id != id || it.state != State::kLeased || !it.lease_live) continue;
    Requeue(f->second);
    ++events_.leases_released;
  }
  (void)now;
}

absl::Status Ledger::Journal(const char* file, int64_t seq, const std::string& lease_id,
                             const std::string& extra) {
  if (options_.journal_dir.empty()) return absl::OkStatus();
  int64_t prompt = PromptOf(seq);
  nlohmann::json j = {{"stage", options_.stage},
                      {"prompt_id", prompt},
                      {"prompt_uid", options_.prompt_uids.empty() ? std::to_string(prompt)
                                                                  : options_.prompt_uids[prompt]},
                      {"epoch", EpochOf(seq)},
                      {"lease_id", lease_id}};
  if (!extra.empty()) j.update(nlohmann::json::parse(extra));
  std::string line = j.dump() + "\n";
  RETURN_IF_ERROR(AppendToFile(absl::StrCat(options_.journal_dir, "/", file), line));
  journal_bytes_[file] += static_cast<int64_t>(line.size());
  return absl::OkStatus();
}

absl::StatusOr<SubmitOutcome> Ledger::Submit(const std::string& lease_id,
                                             const GroupVerdict& verdict,
                                             std::shared_ptr<const TrainGroup> group,
                                             absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto f = lease_seq_.find(lease_id);
  if (f == lease_seq_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("group.lease_id: unknown lease \"", lease_id,
                                                      "\" (not granted by this run's learner)"));
  }
  const int64_t s = f->second;
  Item& it = items_[s];
  SubmitOutcome out;
  if (it.accepted_lease == lease_id) {
    out.accepted = true;
    out.duplicate = true;
    return out;
  }
  bool settled =
      it.state == State::kTrained || it.state == State::kFiltered || it.state == State::kFailed;
  if (settled || it.state == State::kBuffered || it.state == State::kTraining) {
    out.reason_code = "settled";
    out.reason = "the prompt's group was already recorded under another lease";
    return out;
  }
  if (it.lease_id != lease_id) {
    out.reason_code = "re_leased";
    out.reason = "the lease expired or was released and its prompt was leased again";
    return out;
  }
  // Live, or expired/released but not leased again: accept, unless a token
  // is of a version only a dead learner published (its weights are not this
  // run's) or too stale.
  if (!options_.retired_versions.empty() && group != nullptr) {
    for (const TrainSample& sample : group->samples) {
      for (int64_t v : sample.versions) {
        for (const auto& [first, last] : options_.retired_versions) {
          if (v < first || v > last) continue;
          if (it.state == State::kLeased) Requeue(s);
          it.lease_id.clear();  // a resubmission of this lease is refused (re_leased)
          out.reason_code = "retired_version";
          out.reason = absl::StrCat("tokens of version ", v,
                                    ", which a learner that died after its last checkpoint "
                                    "published (versions ",
                                    first, "..", last,
                                    " are retired; fetch the latest version and generate again)");
          return out;
        }
      }
    }
  }
  if (!options_.deterministic &&
      StepsBetween(verdict.min_version, VersionLocked(), options_.retired_versions) >
          options_.max_staleness) {
    if (it.state == State::kLeased) Requeue(s);
    it.lease_id.clear();  // a resubmission of this lease is refused (re_leased)
    ++events_.stale;
    out.reason_code = "stale";
    out.reason = absl::StrCat("tokens of version ", verdict.min_version, " are more than ",
                              options_.max_staleness, " training steps older than version ",
                              VersionLocked());
    return out;
  }
  out.accepted = true;
  it.accepted_lease = lease_id;
  it.lease_live = false;
  if (verdict.ok_samples < 2) {
    ++it.bad_groups;
    out.retry = true;
    if (it.bad_groups >= options_.max_lease_attempts) {
      SetState(s, State::kFailed);
      out.settled = "failed";
      RETURN_IF_ERROR(Journal(kFailed, s, lease_id,
                              absl::StrCat("{\"reason\":\"fewer than 2 OK samples\",\"attempts\":",
                                           it.bad_groups, "}")));
    } else {
      Requeue(s);
      ++events_.leases_retried;
    }
    return out;
  }
  if (options_.dynamic_sampling && verdict.all_rewards_equal) {
    SetState(s, State::kFiltered);
    out.settled = "filtered";
    RETURN_IF_ERROR(Journal(kFiltered, s, lease_id, "{\"reason\":\"all rewards equal\"}"));
    return out;
  }
  it.group = std::move(group);
  it.min_version = verdict.min_version;
  SetState(s, State::kBuffered);
  (void)now;
  return out;
}

bool Ledger::BatchReadyLocked() {
  if (training_) return false;
  const int64_t P = options_.prompts_per_step;
  if (options_.deterministic) {
    int64_t good = 0;
    for (int64_t s = boundary_; s < total_; ++s) {
      State st = items_[s].state;
      if (st == State::kBuffered) {
        if (++good == P) return true;
      } else if (st != State::kFiltered && st != State::kFailed) {
        return false;
      }
    }
    return good > 0;
  }
  if (static_cast<int64_t>(buffered_.size()) >= P) return true;
  return !buffered_.empty() && queue_.empty() &&
         state_count_[static_cast<int>(State::kLeased)] == 0;
}

std::optional<LedgerBatch> Ledger::TakeBatchLocked() {
  if (!options_.deterministic) {
    // Staleness at assembly: the batch trains at version().
    for (auto it = buffered_.begin(); it != buffered_.end();) {
      int64_t s = *it++;
      if (StepsBetween(items_[s].min_version, VersionLocked(), options_.retired_versions) >
          options_.max_staleness) {
        items_[s].lease_id.clear();
        items_[s].accepted_lease.clear();
        Requeue(s);
        ++events_.stale;
      }
    }
  }
  if (!BatchReadyLocked()) return std::nullopt;
  LedgerBatch batch;
  batch.index = batches_;
  const int64_t P = options_.prompts_per_step;
  if (options_.deterministic) {
    int64_t s = boundary_;
    for (; s < total_ && static_cast<int64_t>(batch.seqs.size()) < P; ++s) {
      if (items_[s].state == State::kBuffered) batch.seqs.push_back(s);
    }
    pending_boundary_ = batch.seqs.back() + 1;
  } else {
    for (auto it = buffered_.begin();
         it != buffered_.end() && static_cast<int64_t>(batch.seqs.size()) < P; ++it) {
      batch.seqs.push_back(*it);
    }
  }
  for (int64_t s : batch.seqs) {
    batch.groups.push_back(items_[s].group);
    SetState(s, State::kTraining);
  }
  training_ = true;
  return batch;
}

std::optional<LedgerBatch> Ledger::TakeBatch(absl::Time now) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(now);
  return TakeBatchLocked();
}

std::optional<LedgerBatch> Ledger::WaitForBatch(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  interrupted_ = false;
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return interrupted_ || BatchReadyLocked() ||
           state_count_[static_cast<int>(State::kTrained)] +
                   state_count_[static_cast<int>(State::kFiltered)] +
                   state_count_[static_cast<int>(State::kFailed)] ==
               total_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  ExpireLocked(absl::Now());
  return TakeBatchLocked();
}

void Ledger::Interrupt() {
  absl::MutexLock lock(&mu_);
  interrupted_ = true;
}

absl::Status Ledger::CommitBatch(const LedgerBatch& batch, int64_t step, bool advance_version) {
  absl::MutexLock lock(&mu_);
  if (!training_ || batch.index != batches_) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger: batch ", batch.index, " is not the batch in training"));
  }
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    int64_t s = batch.seqs[i];
    Item& it = items_[s];
    std::set<int64_t> versions;
    if (it.group != nullptr) {
      for (const TrainSample& sample : it.group->samples) {
        versions.insert(sample.versions.begin(), sample.versions.end());
      }
    }
    nlohmann::json extra = {
        {"step", step},
        {"batch", batch.index},
        {"policy_versions", std::vector<int64_t>(versions.begin(), versions.end())}};
    it.group.reset();
    SetState(s, State::kTrained);
    RETURN_IF_ERROR(Journal(kTrained, s, it.accepted_lease, extra.dump()));
  }
  training_ = false;
  ++events_.batches;
  if (options_.deterministic) boundary_ = pending_boundary_;
  // caps_ gets one entry per batch that advanced the version (a generate
  // stage does not): its final cap.
  if (advance_version) caps_.push_back(cap_);
  ++batches_;
  cap_ = std::min(
      total_, std::max(cap_, boundary_ + (options_.max_staleness + 1) * options_.prompts_per_step));
  return absl::OkStatus();
}

int64_t Ledger::VersionLocked() const {
  return options_.start_version + static_cast<int64_t>(caps_.size());
}

int64_t Ledger::version() const {
  absl::MutexLock lock(&mu_);
  return VersionLocked();
}

LedgerCounts Ledger::Counts() const {
  absl::MutexLock lock(&mu_);
  LedgerCounts c = events_;
  c.prompts_total = total_;
  c.queued = state_count_[static_cast<int>(State::kQueued)];
  c.leased = state_count_[static_cast<int>(State::kLeased)];
  c.buffered = state_count_[static_cast<int>(State::kBuffered)] +
               state_count_[static_cast<int>(State::kTraining)];
  c.trained = state_count_[static_cast<int>(State::kTrained)];
  c.filtered = state_count_[static_cast<int>(State::kFiltered)];
  c.failed = state_count_[static_cast<int>(State::kFailed)];
  int64_t sum = 0;
  for (int64_t n : state_count_) sum += n;
  c.lost = total_ - sum;
  c.duplicates = 0;
  for (const Item& it : items_) c.duplicates += it.settles > 1 ? 1 : 0;
  c.done = c.trained + c.filtered + c.failed == total_;
  return c;
}

bool Ledger::Done() const { return Counts().done; }

std::map<std::string, int64_t> Ledger::LeasesByActor() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, int64_t> out;
  for (int64_t s : leased_) {
    if (items_[s].lease_live) ++out[items_[s].holder];
  }
  return out;
}

int32_t Ledger::CurrentEpoch() const {
  absl::MutexLock lock(&mu_);
  for (int64_t s = 0; s < total_; ++s) {
    State st = items_[s].state;
    if (st != State::kTrained && st != State::kFiltered && st != State::kFailed) return EpochOf(s);
  }
  return options_.epochs - 1;
}

int64_t Ledger::MinPinnedVersion() const {
  absl::MutexLock lock(&mu_);
  // Every item not settled may still be generated: a buffered group goes
  // back to the queue on Restore and is leased again with its pin, and a
  // queued item below the cap is pinned (PinFor) when it is leased.
  int64_t v = -1;
  for (int64_t s = 0; s < total_; ++s) {
    const Item& it = items_[s];
    if (it.state == State::kTrained || it.state == State::kFiltered || it.state == State::kFailed) {
      continue;
    }
    int64_t p = it.pinned;
    if (p < 0 && options_.deterministic && s < cap_) p = PinFor(s);
    if (p >= 0 && (v < 0 || p < v)) v = p;
  }
  return v;
}

// ---------------------------------------------------------------------------
// Checkpoint state.

namespace {
constexpr int kStateFormat = 1;
}  // namespace

absl::StatusOr<std::string> Ledger::Serialize() const {
  absl::MutexLock lock(&mu_);
  nlohmann::json j;
  j["format"] = kStateFormat;
  j["stage"] = options_.stage;
  j["num_prompts"] = options_.num_prompts;
  j["epochs"] = options_.epochs;
  j["prompts_per_step"] = options_.prompts_per_step;
  j["max_staleness"] = options_.max_staleness;
  j["deterministic"] = options_.deterministic;
  j["start_version"] = options_.start_version;
  nlohmann::json items = nlohmann::json::array();
  for (const Item& it : items_) {
    int st = static_cast<int>(it.state);
    // Buffered and training groups are not saved: they are generated again.
    if (it.state == State::kBuffered || it.state == State::kTraining) st = 0;
    items.push_back({st, it.grants, it.bad_groups, it.settles, it.lease_id,
                     it.state == State::kLeased && it.lease_live, it.pinned, it.accepted_lease});
  }
  j["items"] = std::move(items);
  j["next_lease"] = next_lease_;
  j["batches"] = batches_;
  j["boundary"] = boundary_;
  j["caps"] = caps_;
  j["cap"] = cap_;
  j["events"] = {events_.leases_granted, events_.leases_expired, events_.leases_released,
                 events_.leases_retried, events_.stale,          events_.batches};
  j["journal_bytes"] = journal_bytes_;
  if (!options_.journal_dir.empty()) {
    for (const auto& [file, bytes] : journal_bytes_) {
      std::string path = absl::StrCat(options_.journal_dir, "/", file);
      if (bytes > 0 && options_.sync_journals) {
        RETURN_IF_ERROR(AppendToFile(path, "", /*sync=*/true));
      }
    }
  }
  return j.dump();
}

absl::Status Ledger::Restore(const std::string& state, absl::Time now, int64_t version_shift) {
  nlohmann::json j = nlohmann::json::parse(state, nullptr, /*allow_exceptions=*/false);
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("ledger state: ", what));
  };
  if (!j.is_object() || j.value("format", 0) != kStateFormat) return bad("not a ledger state");
  if (version_shift != 0 && options_.deterministic) {
    return bad("a version shift in deterministic mode (its pins are version numbers)");
  }
  try {
    if (j["num_prompts"].get<int64_t>() != options_.num_prompts ||
        j["epochs"].get<int32_t>() != options_.epochs ||
        j["prompts_per_step"].get<int64_t>() != options_.prompts_per_step ||
        j["deterministic"].get<bool>() != options_.deterministic ||
        j["start_version"].get<int64_t>() + version_shift != options_.start_version) {
      return bad(absl::StrCat("saved for ", j["num_prompts"].dump(), " prompts x ",
                              j["epochs"].dump(), " epochs, prompts_per_step ",
                              j["prompts_per_step"].dump(), ", deterministic ",
                              j["deterministic"].dump(), "; this stage has ", options_.num_prompts,
                              " x ", options_.epochs, ", ", options_.prompts_per_step, ", ",
                              options_.deterministic ? "true" : "false",
                              " (the dataset or config changed since the checkpoint)"));
    }
    const nlohmann::json& items = j["items"];
    if (!items.is_array() || static_cast<int64_t>(items.size()) != total_) {
      return bad("item count differs");
    }
    absl::MutexLock lock(&mu_);
    for (int64_t s = 0; s < total_; ++s) {
      const nlohmann::json& a = items[s];
      Item it;
      int st = a[0].get<int>();
      if (st < 0 || st > static_cast<int>(State::kFailed)) return bad("bad item state");
      it.state = static_cast<State>(st);
      it.grants = a[1].get<int32_t>();
      it.bad_groups = a[2].get<int32_t>();
      it.settles = a[3].get<int32_t>();
      it.lease_id = a[4].get<std::string>();
      it.lease_live = a[5].get<bool>();
      it.pinned = a[6].get<int64_t>();
      it.accepted_lease = a[7].get<std::string>();
      if (it.state == State::kLeased) {
        if (it.lease_live) {
          it.deadline = now + options_.lease_ttl;
        } else {
          it.state = State::kQueued;
        }
      }
      items_[s] = std::move(it);
    }
    next_lease_ = j["next_lease"].get<int64_t>();
    batches_ = j["batches"].get<int64_t>();
    boundary_ = j["boundary"].get<int64_t>();
    caps_ = j["caps"].get<std::vector<int64_t>>();
    cap_ = j["cap"].get<int64_t>();
    std::vector<int64_t> ev = j["events"].get<std::vector<int64_t>>();
    if (ev.size() != 6) return bad("events");
    events_ = LedgerCounts();
    events_.leases_granted = ev[0];
    events_.leases_expired = ev[1];
    events_.leases_released = ev[2];
    events_.leases_retried = ev[3];
    events_.stale = ev[4];
    events_.batches = ev[5];
    training_ = false;
    askers_.clear();
    auto saved_bytes = j["journal_bytes"].get<std::map<std::string, int64_t>>();
    if (!options_.journal_dir.empty()) {
      for (const char* f : {kTrained, kFiltered, kFailed}) {
        std::string path = absl::StrCat(options_.journal_dir, "/", f);
        int64_t keep = saved_bytes.count(f) ? saved_bytes[f] : 0;
        int64_t have = FileSize(path);
        if (have < keep) {
          return absl::FailedPreconditionError(
              absl::StrCat(path, ": ", have, " bytes, but the checkpoint recorded ", keep,
                           " (the journal lost lines the checkpoint counts)"));
        }
        if (have > keep) {
          if (::truncate(path.c_str(), keep) != 0) {
            return absl::FailedPreconditionError(
                absl::StrCat("cannot truncate ", path, ": ", std::strerror(errno)));
          }
          if (options_.sync_journals) RETURN_IF_ERROR(AppendToFile(path, "", /*sync=*/true));
        }
        journal_bytes_[f] = keep;
      }
    }
    RebuildIndexesLocked();
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return absl::OkStatus();
}

void Ledger::RebuildIndexesLocked() {
  state_count_.assign(7, 0);
  queue_.clear();
  buffered_.clear();
  leased_.clear();
  lease_seq_.clear();
  for (int64_t s = 0; s < total_; ++s) {
    const Item& it = items_[s];
    ++state_count_[static_cast<int>(it.state)];
    if (it.state == State::kQueued) queue_.insert(s);
    if (it.state == State::kLeased) leased_.insert(s);
    if (!it.lease_id.empty()) lease_seq_[it.lease_id] = s;
    if (!it.accepted_lease.empty()) lease_seq_[it.accepted_lease] = s;
  }
}

}  // namespace cohort::learner
