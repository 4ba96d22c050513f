// Weight broadcast from the learner to GPU actors over a collective
// (NCCL on GPUs; see transport.h), with the checks that make it safe to
// swap in what arrived.
//
// Protocol, per published version (every rank of the communicator takes
// part in every step; rank 0 is the learner):
//   1. header   64 bytes: magic, version, layout fingerprint, total bytes,
//               chunk bytes. A receiver whose own layout (names, shapes,
//               dtypes) has another fingerprint aborts its communicator and
//               fails with FailedPrecondition: it cannot take part safely.
//   2. payload  the tensors, sorted by name, each at a 16-byte aligned
//               offset of one flat byte buffer, in chunks of chunk_bytes.
//   3. trailer  the sender's checksum of the flat buffer. A receiver whose
//               own checksum of what arrived differs fails that version
//               with DataLoss (the communicator stays usable).
// A header with version -1 closes the stream (WeightBroadcaster::Close).
//
// Watchdog: every collective must finish within collective_timeout (a
// receiver's wait for the next header within idle_timeout); otherwise the
// transport is aborted and the call fails with DeadlineExceeded naming the
// step, instead of hanging on a dead peer. After that (or any transport
// error) the object is unhealthy for good: the actor gets its weights by
// FetchPolicy (ReceiveOrFetch), as does an actor that joined after the
// communicator was formed (its world size is fixed at creation).
//
// The NCCL unique id that forms the communicator travels over gRPC (the
// learner's Join response); see nccl_transport.h.
//
// Checksum: per 4 MiB row of 32-bit words, sum(word * (i % 127 + 1)) in
// exact int64 arithmetic (on the buffer's device), rows folded with FNV-1a;
// detects any single changed word and reorderings, not tampering.
//
// Thread-safety: Publish/Close (broadcaster) and Receive (receiver) are
// called by one thread at a time; Abort and healthy may be called from any
// thread.
#ifndef COHORT_WEIGHTS_BROADCAST_H_
#define COHORT_WEIGHTS_BROADCAST_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/tensor_map.h"
#include "weights/transport.h"

namespace cohort::weights {

// Where each tensor sits in the flat buffer.
class WeightLayout {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    c10::ScalarType dtype;
    int64_t offset = 0;  // bytes, 16-aligned
    int64_t bytes = 0;
  };
  // InvalidArgument for an empty map or an undefined tensor.
  static absl::StatusOr<WeightLayout> Of(const model::TensorMap& weights);

  const std::vector<Entry>& entries() const { return entries_; }
  int64_t total_bytes() const { return total_bytes_; }
  // FNV-1a over names, shapes and dtypes (not values).
  uint64_t fingerprint() const { return fingerprint_; }

  // Copies the weights into `flat` ([total_bytes] uint8). The weights must
  // have this layout (checked: InvalidArgument naming the tensor).
  absl::Status Pack(const model::TensorMap& weights, at::Tensor& flat) const;
  // New tensors (copies) viewed from `flat`.
  absl::StatusOr<model::TensorMap> Unpack(const at::Tensor& flat) const;

 private:
  std::vector<Entry> entries_;
  int64_t total_bytes_ = 0;
  uint64_t fingerprint_ = 0;
};

// The checksum described above, of a [n] uint8 tensor on any device.
absl::StatusOr<uint64_t> FlatChecksum(const at::Tensor& flat);

struct BroadcastOptions {
  at::Device device = at::kCPU;  // of the flat buffer: cuda:N for NCCL
  int64_t chunk_bytes = int64_t{64} << 20;
  absl::Duration collective_timeout = absl::Seconds(60);
  absl::Duration idle_timeout = absl::InfiniteDuration();  // receiver: next header
};

// Rank 0: the learner.
class WeightBroadcaster {
 public:
  static absl::StatusOr<std::unique_ptr<WeightBroadcaster>> Create(
      std::unique_ptr<CollectiveTransport> transport, BroadcastOptions options);
  ~WeightBroadcaster();

  // Sends `weights` as `version` (>= 0) to every rank. The layout may not
  // change between calls (FailedPrecondition). Blocks until all ranks have
  // everything, or fails (the broadcaster is then unhealthy).
  absl::Status Publish(const model::TensorMap& weights, int64_t version);
  // Tells the receivers the stream ends (their Receive returns Cancelled).
  absl::Status Close();
  void Abort();
  bool healthy() const { return healthy_.load(); }

 private:
  class Impl;
  explicit WeightBroadcaster(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> healthy_{true};
};

struct ReceivedWeights {
  model::TensorMap weights;  // on options.device, owned (not views)
  int64_t version = 0;
  bool via_broadcast = true;  // false: came from the fetch fallback
};

// Ranks 1..n-1: actors.
class WeightReceiver {
 public:
  // `like`: the actor's own weights (names, shapes, dtypes); what arrives
  // must have the same layout.
  static absl::StatusOr<std::unique_ptr<WeightReceiver>> Create(
      std::unique_ptr<CollectiveTransport> transport, const model::TensorMap& like,
      BroadcastOptions options);
  ~WeightReceiver();

  // Blocks for the next broadcast. Cancelled when the sender closed the
  // stream; DataLoss on a checksum mismatch (still healthy: the next
  // version may arrive intact); FailedPrecondition, DeadlineExceeded,
  // Aborted or Unavailable when the communicator is lost (unhealthy).
  absl::StatusOr<ReceivedWeights> Receive();
  void Abort();
  bool healthy() const { return healthy_.load(); }
  // Version of the last header seen (-1 before any).
  int64_t last_version() const { return last_version_.load(); }

 private:
  class Impl;
  explicit WeightReceiver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> last_version_{-1};
};

// FetchPolicy over gRPC: version 0 means the latest.
using FetchFn = std::function<absl::StatusOr<ReceivedWeights>(int64_t version)>;

// One step of an actor's weight loop: Receive() when `receiver` is healthy
// (null: not a member of the communicator), else, or when the broadcast
// fails, fetch: the version whose checksum failed, or the latest. A
// Cancelled broadcast (stream closed) is returned as it is.
absl::StatusOr<ReceivedWeights> ReceiveOrFetch(WeightReceiver* receiver, const FetchFn& fetch);

}  // namespace cohort::weights

#endif  // COHORT_WEIGHTS_BROADCAST_H_
