// GPU helpers of the model library: free device memory and sizing the KV
// cache from it. CPU-safe: on a build or device without CUDA they say so
// instead of failing to link.
//
// Thread-safety: pure functions (FreeDeviceBytes asks the driver).
#ifndef COHORT_MODEL_GPU_H_
#define COHORT_MODEL_GPU_H_

#include <cstdint>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "model/model_config.h"

namespace cohort::model {

// True when LibTorch has CUDA and sees a device.
bool CudaPresent();

// Free bytes on `device` (cudaMemGetInfo) plus what LibTorch's caching
// allocator holds unused there. FailedPrecondition for a non-CUDA device or
// a LibTorch without CUDA.
absl::StatusOr<int64_t> FreeDeviceBytes(const at::Device& device);

// Bytes one KV-cache slot of max_len positions takes (K and V, all layers).
int64_t KvBytesPerSlot(const ModelConfig& config, int64_t max_len, at::ScalarType dtype);

// How many slots of max_len positions fit in `fraction` (0, 1] of
// `free_bytes`, at most max_slots (0: no cap). InvalidArgument for a
// fraction outside (0, 1]; ResourceExhausted when not even one slot fits.
absl::StatusOr<int64_t> KvSlotsForBytes(const ModelConfig& config, int64_t max_len,
                                        at::ScalarType dtype, int64_t free_bytes, double fraction,
                                        int64_t max_slots = 0);

}  // namespace cohort::model

#endif  // COHORT_MODEL_GPU_H_
