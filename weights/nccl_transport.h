// CollectiveTransport over NCCL: one communicator of `world_size` ranks, one
// GPU per rank (NCCL refuses two ranks on one GPU, so a one-GPU machine can
// only run a one-rank communicator).
//
// Forming it: the learner (rank 0) calls NewNcclUniqueId() and hands the
// 128-byte id to each actor over gRPC (its Join response) with the actor's
// rank; every rank then calls Create with the same id and world size.
// ncclCommInitRank blocks until all ranks have joined, so Create waits at
// most `init_timeout` and then aborts.
//
// The communicator is non-blocking (ncclConfig_t.blocking = 0): Broadcast
// enqueues on the transport's own CUDA stream after a device-wide
// synchronize (so it sees every tensor written before it on any stream),
// then polls the stream and ncclCommGetAsyncError; Abort() (from the
// watchdog, any thread) makes that loop call ncclCommAbort and return
// Aborted. An asynchronous NCCL error returns Unavailable.
//
// Built for real with COHORT_WITH_CUDA; otherwise every function returns
// Unimplemented, so callers need no #if.
//
// Thread-safety: as CollectiveTransport (transport.h).
#ifndef COHORT_WEIGHTS_NCCL_TRANSPORT_H_
#define COHORT_WEIGHTS_NCCL_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "weights/transport.h"

namespace cohort::weights {

// True when this build has NCCL (COHORT_WITH_CUDA).
bool NcclAvailable();

// The number of CUDA devices the CUDA runtime sees (0 without a driver or
// without COHORT_WITH_CUDA).
int CudaDeviceCount();

// A fresh ncclUniqueId as 128 bytes, to send over gRPC.
absl::StatusOr<std::string> NewNcclUniqueId();

struct NcclOptions {
  std::string unique_id;  // from NewNcclUniqueId, 128 bytes
  int rank = 0;
  int world_size = 1;
  int cuda_device = 0;  // the GPU this rank uses
  absl::Duration init_timeout = absl::Seconds(120);
};

// InvalidArgument for a bad id/rank; DeadlineExceeded if the other ranks do
// not join within init_timeout; Unavailable for an NCCL error.
absl::StatusOr<std::unique_ptr<CollectiveTransport>> CreateNcclTransport(
    const NcclOptions& options);

}  // namespace cohort::weights

#endif  // COHORT_WEIGHTS_NCCL_TRANSPORT_H_
