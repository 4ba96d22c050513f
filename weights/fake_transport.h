// An in-process CollectiveTransport for tests: N ranks in one process (one
// thread each), host memory. A broadcast completes when every rank has
// entered it; a rank that never enters leaves the others blocked, as a dead
// NCCL peer would, until Abort().
//
// Fault injection: CorruptNextReceive(rank) flips one byte of the next
// payload that rank receives; a rank whose Abort() was called, or a fabric
// whose Kill() was called, fails every broadcast with Aborted.
//
// Thread-safety: FakeFabric and its transports are thread-safe.
#ifndef COHORT_WEIGHTS_FAKE_TRANSPORT_H_
#define COHORT_WEIGHTS_FAKE_TRANSPORT_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "weights/transport.h"

namespace cohort::weights::testing {

class FakeFabric : public std::enable_shared_from_this<FakeFabric> {
 public:
  explicit FakeFabric(int world_size)
      : world_size_(world_size),
        buffers_(world_size, nullptr),
        sizes_(world_size, 0),
        aborted_(world_size, false) {}

  std::unique_ptr<CollectiveTransport> Rank(int rank);
  int world_size() const { return world_size_; }

  // Fails every broadcast in flight and later (a lost communicator).
  void Kill() {
    absl::MutexLock lock(&mu_);
    killed_ = true;
    cv_.SignalAll();
  }
  void CorruptNextReceive(int rank) {
    absl::MutexLock lock(&mu_);
    corrupt_rank_ = rank;
  }
  // Collectives completed so far.
  int64_t completed() const {
    absl::MutexLock lock(&mu_);
    return generation_;
  }

  absl::Status Broadcast(int rank, void* data, size_t bytes, int root) {
    absl::MutexLock lock(&mu_);
    if (killed_ || aborted_[rank]) return Aborted(rank);
    const int64_t generation = generation_;
    buffers_[rank] = data;
    sizes_[rank] = bytes;
    if (++arrived_ == world_size_) {
      // Everyone is here: copy root -> others, then release them.
      last_ok_ = true;
      for (int r = 0; r < world_size_; ++r) {
        if (r == root) continue;
        if (sizes_[r] != sizes_[root]) {
          last_ok_ = false;
          continue;
        }
        std::memcpy(buffers_[r], buffers_[root], bytes);
        if (corrupt_rank_ == r && bytes > 64) {  // a payload chunk, not a header
          static_cast<uint8_t*>(buffers_[r])[bytes / 2] ^= 0x5a;
          corrupt_rank_ = -1;
        }
      }
      arrived_ = 0;
      ++generation_;
      cv_.SignalAll();
    } else {
      while (generation_ == generation && !killed_ && !aborted_[rank]) cv_.Wait(&mu_);
      if (generation_ == generation) {
        --arrived_;
        return Aborted(rank);
      }
    }
    if (!last_ok_) return absl::InternalError("fake transport: ranks broadcast different sizes");
    return absl::OkStatus();
  }

  void Abort(int rank) {
    absl::MutexLock lock(&mu_);
    aborted_[rank] = true;
    cv_.SignalAll();
  }

 private:
  static absl::Status Aborted(int rank) {
    return absl::AbortedError(absl::StrCat("fake transport rank ", rank, ": aborted"));
  }

  const int world_size_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::vector<void*> buffers_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> aborted_ ABSL_GUARDED_BY(mu_);
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool killed_ ABSL_GUARDED_BY(mu_) = false;
  bool last_ok_ ABSL_GUARDED_BY(mu_) = true;
  int corrupt_rank_ ABSL_GUARDED_BY(mu_) = -1;
};

class FakeTransport : public CollectiveTransport {
 public:
  FakeTransport(std::shared_ptr<FakeFabric> fabric, int rank)
      : fabric_(std::move(fabric)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return fabric_->world_size(); }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return fabric_->Broadcast(rank_, data, bytes, root);
  }
  void Abort() override { fabric_->Abort(rank_); }

 private:
  std::shared_ptr<FakeFabric> fabric_;
  const int rank_;
};

inline std::unique_ptr<CollectiveTransport> FakeFabric::Rank(int rank) {
  return std::make_unique<FakeTransport>(shared_from_this(), rank);
}

}  // namespace cohort::weights::testing

#endif  // COHORT_WEIGHTS_FAKE_TRANSPORT_H_
