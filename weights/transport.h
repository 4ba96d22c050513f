// The collective a weight broadcast runs on: NCCL between GPUs
// (nccl_transport.h), or an in-process fake in tests (fake_transport.h).
// broadcast.h builds the protocol (header, payload, checksum, watchdog) on
// top of it, so that protocol is tested on the CPU.
//
// Thread-safety: Broadcast is called by one thread at a time; Abort may be
// called from any thread, also while Broadcast blocks.
#ifndef COHORT_WEIGHTS_TRANSPORT_H_
#define COHORT_WEIGHTS_TRANSPORT_H_

#include <cstddef>

#include "absl/status/status.h"

namespace cohort::weights {

class CollectiveTransport {
 public:
  virtual ~CollectiveTransport() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Broadcasts `bytes` bytes at `data` from rank `root` to every rank, in
  // place: the root's buffer is sent, the others' is overwritten. `data` is
  // device memory for NCCL. Blocks until every byte has arrived (or been
  // sent), the communicator fails, or Abort() is called; then returns
  // Aborted or Unavailable and the transport is unusable.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // Makes a blocked Broadcast, and every later one, return Aborted.
  // Idempotent. The watchdog of broadcast.h calls it for a hung collective.
  virtual void Abort() = 0;
};

}  // namespace cohort::weights

#endif  // COHORT_WEIGHTS_TRANSPORT_H_
