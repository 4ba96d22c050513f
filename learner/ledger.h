// The exactly-once prompt ledger of one lease-driven stage (grpo or
// generate).
//
// Items are (prompt_id, epoch) pairs, prompt_id being the record index of
// the stage's dataset. They are ordered by `seq` = epoch * num_prompts +
// position in that epoch's order (a seeded shuffle the caller passes in);
// that is "ledger order". Each item is in exactly one state:
//
//   queued ──Lease──► leased ──Submit (>= 2 OK samples)──► buffered ──TakeBatch──►
//     ▲                 │ │                                  training ──CommitBatch──► trained
//     │   expire/release│ └─Submit (< 2 OK, attempts left)─┐
//     └─────────────────┴──────────────────────────────────┘
//   leased ──Submit (< 2 OK, attempts used up)──► failed
//   leased ──Submit (all rewards equal, dynamic sampling)──► filtered
//
// Guarantees (checked by ledger_test's property test):
//   * prompts_total = queued + leased + buffered + trained + filtered +
//     failed at all times; at the end every item is trained, filtered or
//     failed, each exactly once, and trained.jsonl / filtered.jsonl /
//     failed.jsonl hold one line per item.
//   * Submit is idempotent by lease id; a submission for an expired or
//     released lease is accepted while its item has not been leased again.
//   * Pacing: a lease is granted only while its group can be trained within
//     max_staleness versions (see Lease()); groups older than that when their
//     batch is assembled go back to the queue (counted as stale).
//   * Fair shares: while several actors ask, none holds much more than its
//     share of the window (see Lease()); an actor alone gets all of it.
//   * Deterministic mode: every lease names (pins) the policy version to
//     generate with and a seed, both functions of the item's seq and of the
//     outcomes of earlier items only, and batches are the next
//     prompts_per_step buffered groups in ledger order after every earlier
//     item is settled; so batches, and hence weights, do not depend on how
//     many actors run or when.
//
// Versions: a batch committed with advance_version moves the ledger's
// version from v to v + 1 (the learner publishes one version per batch).
// A restored ledger may continue from a higher base (Restore's
// version_shift); tokens of retired_versions are refused.
//
// Checkpoints: Serialize() captures the state and the journals' byte sizes;
// Restore() brings it back. Buffered and training groups (whose data is not
// saved) go back to the queue; leases survive with a fresh deadline; journal
// lines past the checkpoint are truncated away and replayed.
//
// Time is passed in explicitly (`now`) so tests control it.
//
// Thread-safety: thread-safe; every method takes the ledger's mutex.
// WaitForBatch blocks (without the mutex) until a batch can be formed.
#ifndef COHORT_LEARNER_LEDGER_H_
#define COHORT_LEARNER_LEDGER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "learner/trainer_interface.h"

namespace cohort::learner {

struct LedgerOptions {
  std::string stage = "grpo";  // name, written into journal lines
  int64_t num_prompts = 0;     // dataset size; >= 1
  int32_t epochs = 1;          // >= 1
  // epoch_orders[e] is a permutation of [0, num_prompts): the order of
  // epoch e. Empty means identity for every epoch.
  std::vector<std::vector<int64_t>> epoch_orders;
  // Dataset ids (PromptRecord::id) by prompt_id, for journal lines; may be
  // empty (the index is written).
  std::vector<std::string> prompt_uids;
  int64_t prompts_per_step = 16;   // P: groups per batch; >= 1
  int32_t max_staleness = 1;       // K; >= 0
  int32_t max_lease_attempts = 3;  // groups with < 2 OK samples before failing; >= 1
  absl::Duration lease_ttl = absl::Seconds(30);
  bool deterministic = false;
  bool dynamic_sampling = false;  // Submit's all_rewards_equal -> filtered
  uint64_t seed = 1;              // run.seed, for lease seeds
  int64_t start_version = 0;      // policy version when the stage starts
  // Inclusive [first, last] ranges of version numbers a dead learner
  // published after its last checkpoint (the loop continues the numbering
  // past them on resume, see learner/loop.h): a group with a token of such
  // a version is refused (retired_version) and its prompt queued again.
  std::vector<std::pair<int64_t, int64_t>> retired_versions;
  // Directory for trained.jsonl, filtered.jsonl, failed.jsonl; "" = none.
  std::string journal_dir;
  // fsync the journals in Serialize() and after truncating them (tests
  // that write thousands of journals turn it off).
  bool sync_journals = true;
  // Fair shares (see Lease()): an actor that asked within this long counts
  // as active, and one whose last ask was not filled reserves its share for
  // this long after it. Zero turns fair shares off (first come, first
  // served).
  absl::Duration share_hold = absl::Seconds(1);
};

// Training steps between the weights of version `from` and those of
// version `to`: to - from, less the numbers a restart skipped. A retired
// range [first, last] was published by a dead learner, and the resumed one
// published the weights of version first - 1 again as last + 1; so from
// first - 1 to last + 1 is no step. Negative when from > to.
int64_t StepsBetween(int64_t from, int64_t to,
                     const std::vector<std::pair<int64_t, int64_t>>& retired);

struct LeaseGrant {
  std::string lease_id;
  int64_t prompt_id = 0;
  int32_t epoch = 0;
  int64_t seq = 0;
  int32_t attempt = 1;  // 1-based grant number of this item
  absl::Time deadline;
  // Deterministic mode: the version to generate with; -1 when not pinned.
  int64_t pinned_version = -1;
  uint64_t seed = 0;  // sample i uses seed + i
};

// What the service measured on a submitted group.
struct GroupVerdict {
  int ok_samples = 0;              // samples with reward status OK
  bool all_rewards_equal = false;  // OK rewards all equal (dynamic sampling)
  int64_t min_version = 0;         // oldest token version in the group
};

struct SubmitOutcome {
  bool accepted = false;
  bool duplicate = false;
  bool retry = false;  // < 2 OK samples: leased again (or failed)
  // when !accepted: re_leased | settled | stale | retired_version | stage_over
  std::string reason_code;
  std::string reason;   // human-readable
  std::string settled;  // "filtered" or "failed" when this submit settled the item
};

struct LedgerBatch {
  int64_t index = 0;                                      // batch number within the stage (0-based)
  std::vector<std::shared_ptr<const TrainGroup>> groups;  // ledger order
  std::vector<int64_t> seqs;
};

struct LedgerCounts {
  int64_t prompts_total = 0;
  int64_t queued = 0, leased = 0, buffered = 0;  // buffered includes training
  int64_t trained = 0, filtered = 0, failed = 0;
  int64_t duplicates = 0, lost = 0;
  int64_t leases_granted = 0, leases_expired = 0, leases_released = 0, leases_retried = 0;
  int64_t stale = 0;    // groups refused or requeued for staleness
  int64_t batches = 0;  // batches committed
  bool done = false;    // every item settled
};

class Ledger {
 public:
  // INVALID_ARGUMENT naming the option for bad options (sizes, orders that
  // are not permutations).
  static absl::StatusOr<std::unique_ptr<Ledger>> Create(LedgerOptions options);

  // Grants up to `max` leases, lowest seq first, to `actor_id`. The actor
  // generates with `actor_version`. Non-deterministic pacing: with V the
  // current version (plus one while a batch trains) and lag = V -
  // actor_version, at most (K + 1 - lag) * P items are leased or buffered at
  // once. Deterministic: item s is granted only once s < Cap(V), Cap(V) =
  // max(Cap(V-1), boundary(V) + (K + 1) * P) (boundary(V) = items consumed
  // by the first V batches), extended when the window is exhausted without
  // filling a batch; it is pinned to the smallest such V. Expires leases
  // first.
  //
  // Fair shares (share_hold > 0): the window W = (K + 1) * P is shared by
  // the n actors that asked within share_hold: share = ceil(W / n). An
  // actor's in-flight items (leased or buffered from its leases) are capped
  // at its share while another active actor is waiting: an ask of it within
  // share_hold got fewer leases than it asked for while it was on the
  // latest version (deterministic mode: any version), no later ask was
  // filled, and it holds fewer than its share. Otherwise an actor may take what the window allows,
  // so a share nobody asks for goes back to the pool after share_hold, and an actor that stops
  // asking (left, died) stops counting after share_hold. Which actor gets an item never changes
  // which items are granted (lowest seq first), their pins or seeds.
  std::vector<LeaseGrant> Lease(int max, int64_t actor_version, const std::string& actor_id,
                                absl::Time now);
  // Forgets what `actor_id` asked for (it left or joined again under a new
  // id): it no longer counts for fair shares. Its leases stay.
  void ForgetActor(const std::string& actor_id);

  // The grant of a live or past lease of this ledger; NOT_FOUND otherwise.
  absl::StatusOr<LeaseGrant> FindLease(const std::string& lease_id) const;

  // Renews live leases to now + ttl. Returns the ids that are not live
  // (expired, released, submitted, unknown). Expires leases first.
  std::vector<std::string> Renew(const std::vector<std::string>& lease_ids, absl::Time now);
  // Returns the items of these live leases to the queue (not an attempt).
  void Release(const std::vector<std::string>& lease_ids, absl::Time now);
  // Returns items whose lease deadline passed to the queue; the count.
  int ExpireLeases(absl::Time now);

  // Records a scored group for `lease_id` (see the state diagram).
  // FAILED_PRECONDITION for an unknown lease id.
  absl::StatusOr<SubmitOutcome> Submit(const std::string& lease_id, const GroupVerdict& verdict,
                                       std::shared_ptr<const TrainGroup> group, absl::Time now);

  // The next batch, if one can be formed now: P buffered groups (fewer at
  // the very end of the stage). Moves them to training. Groups too stale
  // for the current version go back to the queue first.
  std::optional<LedgerBatch> TakeBatch(absl::Time now);
  // Blocks up to `timeout` for TakeBatch to return a batch, the stage to be
  // done, or Interrupt().
  std::optional<LedgerBatch> WaitForBatch(absl::Duration timeout);
  // Wakes WaitForBatch callers.
  void Interrupt();
  // The batch was in exactly one training step (`step`, the optimizer step
  // count after it): its items become trained and get trained.jsonl lines.
  // With advance_version the version moves on by one.
  absl::Status CommitBatch(const LedgerBatch& batch, int64_t step, bool advance_version);

  LedgerCounts Counts() const;
  bool Done() const;
  int64_t version() const;
  // Live leases by the actor_id they were granted to (leases restored from
  // a checkpoint count under "": actor ids do not survive a restart).
  std::map<std::string, int64_t> LeasesByActor() const;
  // The epoch of the earliest item not settled yet (trained, filtered or
  // failed); the last epoch once every item is.
  int32_t CurrentEpoch() const;
  // Lowest version an item not settled yet is or will be pinned to
  // (deterministic mode: live and expired leases, buffered groups, which a
  // restore queues again, and queued items below the cap), else -1.
  int64_t MinPinnedVersion() const;

  // The state as JSON text (see the file comment); syncs the journals first.
  absl::StatusOr<std::string> Serialize() const;
  // Replaces the state with `state` from Serialize() of a ledger with the
  // same options (INVALID_ARGUMENT otherwise), truncates the journals to the
  // sizes it recorded and gives restored leases deadline now + ttl.
  // `version_shift`: the state was saved with start_version =
  // options().start_version - version_shift (a resumed learner numbers its
  // versions past those the dead one published; not in deterministic mode,
  // whose pins are version numbers).
  absl::Status Restore(const std::string& state, absl::Time now, int64_t version_shift = 0);

  const LedgerOptions& options() const { return options_; }

 private:
  enum class State : uint8_t {
    kQueued,
    kLeased,
    kBuffered,
    kTraining,
    kTrained,
    kFiltered,
    kFailed
  };
  struct Item {
    State state = State::kQueued;
    int32_t grants = 0;      // leases granted
    int32_t bad_groups = 0;  // groups with < 2 OK samples
    int32_t settles = 0;     // times settled (must end at 1)
    std::string lease_id;    // current (leased) or last granted lease
    std::string holder;      // actor_id of that lease ("" after a restore)
    bool lease_live = false;
    absl::Time deadline;
    int64_t pinned = -1;
    std::string accepted_lease;  // lease whose submission was recorded last
    int64_t min_version = 0;     // of the buffered group
    std::shared_ptr<const TrainGroup> group;
  };
  // An actor's asks, for fair shares.
  struct Asker {
    absl::Time last_ask = absl::InfinitePast();
    absl::Time last_short = absl::InfinitePast();  // last ask not filled
  };

  explicit Ledger(LedgerOptions options);
  int64_t PromptOf(int64_t seq) const;
  int32_t EpochOf(int64_t seq) const;
  uint64_t SeedFor(int64_t seq, int32_t bad_groups) const;
  void Requeue(int64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(int64_t seq, State s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t CapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t PinFor(int64_t seq) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How many more items `actor_id` may hold under fair shares (INT64_MAX
  // when uncapped); records its ask.
  int64_t ShareLimitLocked(const std::string& actor_id, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<LedgerBatch> TakeBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool BatchReadyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Journal(const char* file, int64_t seq, const std::string& lease_id,
                       const std::string& extra) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LeaseGrant GrantOf(int64_t seq) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t VersionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RebuildIndexesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const LedgerOptions options_;
  const int64_t total_;
  const std::string incarnation_;  // makes lease ids unique across restarts

  mutable absl::Mutex mu_;
  std::vector<Item> items_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> state_count_ ABSL_GUARDED_BY(mu_);  // by State
  std::set<int64_t> queue_ ABSL_GUARDED_BY(mu_);           // queued seqs
  std::set<int64_t> buffered_ ABSL_GUARDED_BY(mu_);        // buffered (not training) seqs
  std::set<int64_t> leased_ ABSL_GUARDED_BY(mu_);          // leased seqs
  absl::flat_hash_map<std::string, int64_t> lease_seq_ ABSL_GUARDED_BY(mu_);
  int64_t next_lease_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool training_ ABSL_GUARDED_BY(mu_) = false;
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
  // Deterministic mode: boundary_ = seqs consumed by committed batches;
  // caps_[b] = final Cap of local version b (b < batches_), cap_ the
  // current one.
  int64_t boundary_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pending_boundary_ ABSL_GUARDED_BY(mu_) = 0;  // of the batch in training
  std::vector<int64_t> caps_ ABSL_GUARDED_BY(mu_);
  int64_t cap_ ABSL_GUARDED_BY(mu_) = 0;
  LedgerCounts events_ ABSL_GUARDED_BY(mu_);                  // the event counters
  std::map<std::string, Asker> askers_ ABSL_GUARDED_BY(mu_);  // by actor_id
  std::map<std::string, int64_t> journal_bytes_ ABSL_GUARDED_BY(mu_);
};

// Seed of a deterministic lease: splitmix64 of (seed, prompt_id, epoch,
// bad_groups); sample i adds i.
uint64_t LeaseSeed(uint64_t seed, int64_t prompt_id, int32_t epoch, int32_t attempt);

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_LEDGER_H_
