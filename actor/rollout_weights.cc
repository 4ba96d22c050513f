// Rollout: weights. WeightLoop fetches the wanted version
// (WantedVersionLocked: the latest, or in deterministic mode the version the
// next lease pins) on its own thread and swaps it into the generator between
// decode steps; weights that fail verification are never swapped, and a
// failed fetch is retried with backoff. In deterministic mode weights change
// only while no group is generating.
#include "actor/rollout.h"

#include <algorithm>
#include <memory>

#include "absl/time/clock.h"
#include "core/logging.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

int64_t Rollout::WantedVersionLocked() const {
  if (join_.deterministic()) {
    for (const std::string& id : lease_order_) {
      auto it = work_.find(id);
      if (it == work_.end() || it->second.stage != Stage::kLeased) continue;
      if (it->second.lease.version_pinned()) return it->second.lease.policy_version();
      break;
    }
    return have_weights_ ? swapped_version_ : latest_version_;
  }
  return latest_version_;
}

void Rollout::WeightLoop() {
  int failures = 0;
  for (;;) {
    int64_t want;
    Generator* generator;
    bool deterministic;
    bool pinned;
    {
      absl::MutexLock lock(&mu_);
      // Deterministic mode: a group is generated with its pinned version
      // alone, so weights change only while no group is generating (and
      // none starts until the swap is done: fetching_weights_).
      auto needed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (generator_ != nullptr && !need_rejoin_ &&
                         (!have_weights_ || WantedVersionLocked() != swapped_version_) &&
                         absl::Now() >= weight_retry_at_ &&
                         (!join_.deterministic() || CountLocked(Stage::kGenerating) == 0));
      };
      while (!needed()) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
      if (stop_) return;
      want = WantedVersionLocked();
      generator = generator_.get();
      deterministic = join_.deterministic();
      pinned = deterministic && have_weights_;
      fetching_weights_ = deterministic;
    }
    // A pinned version must be exactly that one (0, the initial weights,
    // included); otherwise any version at least as new will do.
    absl::StatusOr<std::shared_ptr<const HostWeights>> w = weights_.Fetch(want, /*exact=*/pinned);
    if (!w.ok() && w.status().code() == absl::StatusCode::kNotFound && !deterministic) {
      w = weights_.Fetch(0);  // that version is gone: take the latest
    }
    absl::Status swapped = w.ok() ? generator->SwapWeights(*w) : w.status();
    absl::MutexLock lock(&mu_);
    fetching_weights_ = false;
    cv_.SignalAll();
    if (!swapped.ok()) {
      ++failures;
      weight_retry_at_ = absl::Now() + BackoffDelay(options_.reconnect, std::min(failures, 30));
      if (failures == 1 || failures % 10 == 0) {
        COHORT_LOG(WARNING) << "cannot install policy version " << want << ": " << swapped.message()
                            << "; keeping version " << swapped_version_;
      }
      continue;
    }
    failures = 0;
    if (generator != generator_.get()) continue;  // the model changed meanwhile
    swapped_version_ = (*w)->version;
    have_weights_ = true;
    latest_version_ = std::max(latest_version_, swapped_version_);
    ++stats_.weight_swaps;
    version_gauge_->Set(static_cast<double>(swapped_version_));
    COHORT_LOG(INFO) << "policy version " << swapped_version_ << " installed (" << (*w)->bytes()
                     << " bytes)";
    UpdateEngineStateLocked();
    cv_.SignalAll();
  }
}

}  // namespace cohort::actor
