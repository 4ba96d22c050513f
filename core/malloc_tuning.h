// Keeps glibc's malloc from handing large freed buffers back to the kernel.
//
//   cohort::KeepLargeAllocations();  // first thing in main
//
// gRPC receives a stream into read buffers of up to 4 MiB that it
// allocates and frees per read. With glibc's defaults such a buffer is
// either a fresh mmap (above the adaptive M_MMAP_THRESHOLD) or heap memory
// that free() trims back to the kernel once the top of an arena exceeds
// M_TRIM_THRESHOLD (twice the adaptive threshold: ~8 MiB); a weight stream
// to an actor keeps several in flight on gRPC's threads, so arenas are
// trimmed on nearly every read, and every byte received first takes a page
// fault and a page clear in the kernel. In bench/fetch_bench that was ~40%
// of the gRPC client's CPU and the main difference from a plain TCP stream
// reading into one reused buffer.
//
// KeepLargeAllocations sets M_MMAP_THRESHOLD to 32 MiB (glibc's largest;
// bigger blocks, e.g. an embedding matrix, are still mmapped and unmapped
// when freed) and M_TRIM_THRESHOLD to `trim_bytes`, so freed buffers are
// reused from the heap. Cost: up to `trim_bytes` of freed memory per malloc
// arena stays mapped (resident once touched). Returns whether both were set
// (false on a C library other than glibc: a no-op).
//
// Used by cohort-actor (weight streams), bench/fetch_bench and the learner's
// Trainer (TrainerOptions::keep_freed_memory, with 1 GiB: a training step
// frees and reallocates the same activations every step).
//
// Thread-safety: call once at start-up, before threads allocate.
#ifndef COHORT_CORE_MALLOC_TUNING_H_
#define COHORT_CORE_MALLOC_TUNING_H_

#include <cstddef>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cohort {

inline bool KeepLargeAllocations(size_t trim_bytes = size_t{64} << 20) {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 &&
         mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_bytes)) == 1;
#else
  (void)trim_bytes;
  return false;
#endif
}

}  // namespace cohort

#endif  // COHORT_CORE_MALLOC_TUNING_H_
