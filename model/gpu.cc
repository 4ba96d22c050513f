#include "model/gpu.h"

#include <algorithm>

#include "model/aten.h"

#include "absl/strings/str_cat.h"
#include "model/torch_error.h"

#if COHORT_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace cohort::model {

bool CudaPresent() {
#if COHORT_TORCH_HAS_CUDA
  return at::hasCUDA();
#else
  return false;
#endif
}

absl::StatusOr<int64_t> FreeDeviceBytes(const at::Device& device) {
  if (!device.is_cuda()) {
    return absl::FailedPreconditionError(
        absl::StrCat("free device memory: ", device.str(), " is not a CUDA device"));
  }
#if COHORT_TORCH_HAS_CUDA
  return GuardTorch("free device memory", [&]() -> absl::StatusOr<int64_t> {
    c10::cuda::CUDAGuard guard(device);
    size_t free = 0, total = 0;
    if (cudaError_t e = cudaMemGetInfo(&free, &total); e != cudaSuccess) {
      return absl::UnavailableError(
          absl::StrCat("free device memory: cudaMemGetInfo: ", cudaGetErrorString(e)));
    }
    // Blocks the caching allocator reserved but does not use are free too.
    c10::cuda::CUDACachingAllocator::emptyCache();
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) free = 0;
    return static_cast<int64_t>(free);
  });
#else
  return absl::FailedPreconditionError("free device memory: this build's LibTorch has no CUDA");
#endif
}

int64_t KvBytesPerSlot(const ModelConfig& config, int64_t max_len, at::ScalarType dtype) {
  const int64_t head_dim =
      config.head_dim > 0 ? config.head_dim : config.hidden_size / config.num_attention_heads;
  return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * max_len *
         static_cast<int64_t>(c10::elementSize(dtype));
}

absl::StatusOr<int64_t> KvSlotsForBytes(const ModelConfig& config, int64_t max_len,
                                        at::ScalarType dtype, int64_t free_bytes, double fraction,
                                        int64_t max_slots) {
  if (!(fraction > 0 && fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv cache: kv_cache_fraction must be in (0, 1], got ", fraction));
  }
  const int64_t per_slot = KvBytesPerSlot(config, max_len, dtype);
  if (per_slot <= 0) return absl::InvalidArgumentError("kv cache: bad model config or max_len");
  int64_t slots = static_cast<int64_t>(static_cast<double>(free_bytes) * fraction) / per_slot;
  if (max_slots > 0) slots = std::min(slots, max_slots);
  if (slots < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kv cache: ", fraction, " of ", free_bytes, " free bytes holds no slot of ", max_len,
        " positions (", per_slot, " bytes each); lower max_len or raise kv_cache_fraction"));
  }
  return slots;
}

}  // namespace cohort::model
