// Internal to model/fused_ops.cc and model/fused_attention.cc: the row
// helpers (vectorizable exp, reductions in a fixed order, the row loop)
// and the AVX2 clone switch the fused kernels share. Not a public API.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "model/aten.h"
#include <ATen/Parallel.h>

namespace cohort::model::fused::internal {

// Helpers inlined into the row kernels' AVX2 clones (a function with a
// narrower target is only inlined when forced).
#define COHORT_INLINE inline __attribute__((always_inline))

// exp(x) for float in plain arithmetic the compiler vectorizes (std::expf
// is a scalar libm call): Cody-Waite range reduction x = n ln2 + r and a
// degree-6 polynomial for e^r (relative error ~2 ulp), 2^n from the
// exponent bits; n is rounded by adding and subtracting 1.5 * 2^23 (no
// libm call). Inputs are clamped to [-87.3, 88.7] (below: ~1e-38, not 0;
// callers that need exact zeros mask them). Double uses std::exp.
COHORT_INLINE float FastExp(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
COHORT_INLINE double FastExp(double x) { return std::exp(x); }

template <typename T>
COHORT_INLINE T Exp(T x) {
  return FastExp(x);
}

// Reductions with 8 independent accumulators, so that the compiler can
// vectorize them (a single float accumulator is a serial chain: without
// -ffast-math it may not be reordered). The order is fixed: results
// depend only on n.
constexpr int kLanes = 8;

template <typename T>
COHORT_INLINE T SumLanes(const T* x, int64_t n) {
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += x[j + k];
  }
  T s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  for (; j < n; ++j) s += x[j];
  return s;
}

template <typename T>
COHORT_INLINE T DotLanes(const T* x, const T* y, int64_t n) {
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += x[j + k] * y[j + k];
  }
  T s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  for (; j < n; ++j) s += x[j] * y[j];
  return s;
}

template <typename T>
COHORT_INLINE T MaxLanes(const T* x, int64_t n) {
  T acc[kLanes];
  for (int k = 0; k < kLanes; ++k) acc[k] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] = std::max(acc[k], x[j + k]);
  }
  T m = acc[0];
  for (int k = 1; k < kLanes; ++k) m = std::max(m, acc[k]);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// y = exp(sc * x - m); returns Σ y.
template <typename T>
COHORT_INLINE T ExpSumLanes(const T* x, T sc, T m, T* y, int64_t n) {
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const T e = Exp(x[j + k] * sc - m);
      y[j + k] = e;
      acc[k] += e;
    }
  }
  T s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  for (; j < n; ++j) {
    y[j] = Exp(x[j] * sc - m);
    s += y[j];
  }
  return s;
}

// Rows [begin, end) of n rows through at::parallel_for, about `work`
// elements per chunk.
template <typename F>
void ForRows(int64_t n, int64_t row_cost, const F& f) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_cost));
  at::parallel_for(0, n, grain, f);
}

// --- Row kernels with exp: compiled twice, for the x86-64 baseline and
// with AVX2 + FMA (8 floats per instruction instead of 4), picked at run
// time by the CPU's features. The two differ only in rounding (FMA
// contraction); one machine always takes the same one.
#define COHORT_ROW_KERNEL inline __attribute__((always_inline))

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define COHORT_AVX2_CLONES 1
#define COHORT_AVX2 __attribute__((target("avx2,fma")))
inline bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// Per-thread partial sums of a [d] gradient, summed at the end (in thread
// order, so the result depends only on the thread count).
template <typename T>
struct Partials {
  explicit Partials(int64_t d) : d(d), buf(static_cast<size_t>(at::get_num_threads() * d), T(0)) {}
  T* mine() { return buf.data() + at::get_thread_num() * d; }
  at::Tensor Sum(const at::TensorOptions& opts) const {
    at::Tensor out = at::zeros({d}, opts);
    T* o = out.data_ptr<T>();
    const int64_t threads = static_cast<int64_t>(buf.size()) / d;
    for (int64_t t = 0; t < threads; ++t) {
      for (int64_t j = 0; j < d; ++j) o[j] += buf[t * d + j];
    }
    return out;
  }
  int64_t d;
  std::vector<T> buf;
};

}  // namespace cohort::model::fused::internal
