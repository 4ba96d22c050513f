// The BLAS library's own thread pool, sized like torch's intra-op pool.
//
//   cohort::SetBlasThreads(config.actor.threads);  // after at::set_num_threads
//
// LibTorch on the CPU (Debian's, for one) calls an OpenBLAS built with its
// own pthreads pool, sized from OPENBLAS_NUM_THREADS or the core count when
// the library loads (before main) and not by at::set_num_threads. With one
// torch thread the engine's matrix products still ran on a second OpenBLAS
// thread that spun between calls: about a sixth of an actor's CPU in
// bench/actor_bench, and a core-hungry neighbour for every other role on a
// small machine. SetBlasThreads calls openblas_set_num_threads (found at
// run time, so a build against another BLAS just skips it) and returns
// whether it did.
//
// Used by the actor's engine and the learner's trainer (learner.threads).
// Header-only and torch-free: it only looks the symbol up.
//
// Thread-safety: call once at start-up, before the first matrix product.
#ifndef COHORT_CORE_BLAS_THREADS_H_
#define COHORT_CORE_BLAS_THREADS_H_

#include <dlfcn.h>

namespace cohort {

inline bool SetBlasThreads(int threads) {
  using SetNumThreads = void (*)(int);
  auto set = reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set == nullptr || threads < 1) return false;
  set(threads);
  return true;
}

}  // namespace cohort

#endif  // COHORT_CORE_BLAS_THREADS_H_
