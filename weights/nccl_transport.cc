#include "weights/nccl_transport.h"

#include "absl/strings/str_cat.h"

#if COHORT_WITH_NCCL
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace cohort::weights {

#if COHORT_WITH_NCCL
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::UnavailableError(
      absl::StrCat("nccl transport: ", what, ": ", cudaGetErrorString(e)));
}

absl::Status NcclError(const char* what, ncclResult_t r, ncclComm_t comm = nullptr) {
  std::string detail = ncclGetErrorString(r);
  if (comm != nullptr) {
    if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
      detail = absl::StrCat(detail, " (", last, ")");
    }
  }
  return absl::UnavailableError(absl::StrCat("nccl transport: ", what, ": ", detail));
}

class NcclTransport : public CollectiveTransport {
 public:
  NcclTransport(ncclComm_t comm, cudaStream_t stream, int rank, int world_size, int device)
      : comm_(comm), stream_(stream), rank_(rank), world_size_(world_size), device_(device) {}

  ~NcclTransport() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      if (aborted_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (comm_ == nullptr || aborted_) return Aborted();
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) return CudaError("set device", e);
    // Every kernel that wrote `data` (on torch's streams) must be done.
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      return CudaError("synchronize before broadcast", e);
    }
    ncclResult_t r = ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_);
    if (r != ncclSuccess && r != ncclInProgress) return Fail("broadcast", r);
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      if (aborted_) {
        AbortNow();
        return Aborted();
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) return Fail("broadcast (async)", async);
      if (async == ncclSuccess) {
        cudaError_t q = cudaStreamQuery(stream_);
        if (q == cudaSuccess) return absl::OkStatus();
        if (q != cudaErrorNotReady) return CudaError("broadcast stream", q);
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  void Abort() override { aborted_ = true; }

  // Waits for a non-blocking init to finish (or the deadline).
  absl::Status WaitInit(absl::Duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    for (;;) {
      ncclResult_t async = ncclInProgress;
      ncclCommGetAsyncError(comm_, &async);
      if (async == ncclSuccess) return absl::OkStatus();
      if (async != ncclInProgress) return Fail("init", async);
      if (aborted_ || std::chrono::steady_clock::now() > deadline) {
        AbortNow();
        return absl::DeadlineExceededError(absl::StrCat("nccl transport: the ", world_size_,
                                                        " ranks did not all join within ",
                                                        absl::FormatDuration(timeout)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  absl::Status Aborted() const {
    return absl::AbortedError(absl::StrCat("nccl transport rank ", rank_, ": aborted"));
  }
  void AbortNow() {
    aborted_ = true;
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }
  absl::Status Fail(const char* what, ncclResult_t r) {
    absl::Status s = NcclError(what, r, comm_);
    AbortNow();
    return s;
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  const int rank_, world_size_, device_;
  std::atomic<bool> aborted_{false};
};

}  // namespace

bool NcclAvailable() { return true; }

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it
    return 0;
  }
  return n;
}

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclError("unique id", r);
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<CollectiveTransport>> CreateNcclTransport(
    const NcclOptions& options) {
  ncclUniqueId id;
  if (options.unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("nccl transport: unique id has ",
                                                   options.unique_id.size(), " bytes, expected ",
                                                   sizeof(id.internal)));
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl transport: rank ", options.rank,
                                                   " outside a world of ", options.world_size));
  }
  std::memcpy(id.internal, options.unique_id.data(), sizeof(id.internal));
  const int devices = CudaDeviceCount();
  if (options.cuda_device < 0 || options.cuda_device >= devices) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nccl transport: cuda device ", options.cuda_device, " not present (", devices, " seen)"));
  }
  if (cudaError_t e = cudaSetDevice(options.cuda_device); e != cudaSuccess) {
    return CudaError("set device", e);
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return CudaError("create stream", e);
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return NcclError("init", r);
  }
  auto transport = std::make_unique<NcclTransport>(comm, stream, options.rank, options.world_size,
                                                   options.cuda_device);
  if (absl::Status s = transport->WaitInit(options.init_timeout); !s.ok()) return s;
  return std::unique_ptr<CollectiveTransport>(std::move(transport));
}

#else  // !COHORT_WITH_NCCL

namespace {
absl::Status NoNccl() {
  return absl::UnimplementedError(
      "nccl transport: this build has no NCCL (configure with -DCOHORT_WITH_CUDA=ON)");
}
}  // namespace

bool NcclAvailable() { return false; }
int CudaDeviceCount() { return 0; }
absl::StatusOr<std::string> NewNcclUniqueId() { return NoNccl(); }
absl::StatusOr<std::unique_ptr<CollectiveTransport>> CreateNcclTransport(const NcclOptions&) {
  return NoNccl();
}

#endif  // COHORT_WITH_NCCL

}  // namespace cohort::weights
