// fused::Attention (model/fused_ops.h): q.k^T, the masked softmax and .v
// in one autograd node with a hand-written backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "model/aten.h"
#include "model/fused_kernels.h"
#include "model/fused_ops.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

namespace cohort::model::fused {
namespace {

using namespace internal;  // NOLINT: the shared row helpers (fused_kernels.h)
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// --- attention ---------------------------------------------------------------

// The attention kernels' vector primitives, over short rows (a row's keys,
// head_dim) where the loop vectorizer's code stays scalar:
//   Dots(x, m, stride, hd, n, out)  out[j] = Σ_d x[d] m[d * stride + j], j < n
//   WeightedSum(w, rows, hd, n, out) out[c] = Σ_j w[j] rows[j * hd + c], c < hd
//   Axpy(a, x, y, n)                 y[0, n) += a * x[0, n)
//   Scale(a, y, n)                   y[0, n) *= a
// Sums run in order of d (Dots) and j (WeightedSum). ScalarOps: plain loops
// (double, and float without AVX2); Avx2Ops: 8 floats per instruction,
// accumulating in registers, with masked tails. Outputs never overlap
// inputs.
struct ScalarOps {
  template <typename T>
  static COHORT_INLINE void Dots(const T* x, const T* m, int64_t stride, int64_t hd, int64_t n,
                                 T* out) {
    std::fill(out, out + n, T(0));
    for (int64_t d = 0; d < hd; ++d) {
      const T xd = x[d];
      const T* row = m + d * stride;
      for (int64_t j = 0; j < n; ++j) out[j] += xd * row[j];
    }
  }
  template <typename T>
  static COHORT_INLINE void WeightedSum(const T* w, const T* rows, int64_t hd, int64_t n, T* out) {
    std::fill(out, out + hd, T(0));
    for (int64_t j = 0; j < n; ++j) {
      const T wj = w[j];
      const T* row = rows + j * hd;
      for (int64_t c = 0; c < hd; ++c) out[c] += wj * row[c];
    }
  }
  template <typename T>
  static COHORT_INLINE void Axpy(T a, const T* x, T* y, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
  }
  template <typename T>
  static COHORT_INLINE void Scale(T a, T* y, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] *= a;
  }
};

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
// Plain inline (not always_inline): the kernels that call these are
// templates compiled for both targets; they are inlined once the kernel is
// inlined into its AVX2 clone.
#define COHORT_AVX2_OP __attribute__((target("avx2,fma"))) static inline
struct Avx2Ops {
  COHORT_AVX2_OP __m256i TailMask(int64_t rem) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(rem, 8))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  COHORT_AVX2_OP void Dots(const float* x, const float* m, int64_t stride, int64_t hd, int64_t n,
                           float* out) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t d = 0; d < hd; ++d) {
        const __m256 xd = _mm256_set1_ps(x[d]);
        const float* row = m + d * stride + j;
        a0 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(row), a0);
        a1 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(row + 8), a1);
      }
      _mm256_storeu_ps(out + j, a0);
      _mm256_storeu_ps(out + j + 8, a1);
    }
    for (; j < n; j += 8) {
      const __m256i mask = TailMask(n - j);
      __m256 a = _mm256_setzero_ps();
      for (int64_t d = 0; d < hd; ++d) {
        a = _mm256_fmadd_ps(_mm256_set1_ps(x[d]), _mm256_maskload_ps(m + d * stride + j, mask), a);
      }
      _mm256_maskstore_ps(out + j, mask, a);
    }
  }
  COHORT_AVX2_OP void WeightedSum(const float* w, const float* rows, int64_t hd, int64_t n,
                                  float* out) {
    int64_t c = 0;
    for (; c + 16 <= hd; c += 16) {
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t j = 0; j < n; ++j) {
        const __m256 wj = _mm256_set1_ps(w[j]);
        const float* row = rows + j * hd + c;
        a0 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(row), a0);
        a1 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(row + 8), a1);
      }
      _mm256_storeu_ps(out + c, a0);
      _mm256_storeu_ps(out + c + 8, a1);
    }
    for (; c < hd; c += 8) {
      const __m256i mask = TailMask(hd - c);
      __m256 a = _mm256_setzero_ps();
      for (int64_t j = 0; j < n; ++j) {
        a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_maskload_ps(rows + j * hd + c, mask), a);
      }
      _mm256_maskstore_ps(out + c, mask, a);
    }
  }
  COHORT_AVX2_OP void Axpy(float a, const float* x, float* y, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
    }
    if (j < n) {
      const __m256i m = TailMask(n - j);
      _mm256_maskstore_ps(
          y + j, m,
          _mm256_fmadd_ps(va, _mm256_maskload_ps(x + j, m), _mm256_maskload_ps(y + j, m)));
    }
  }
  COHORT_AVX2_OP void Scale(float a, float* y, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(va, _mm256_loadu_ps(y + j)));
    if (j < n) {
      const __m256i m = TailMask(n - j);
      _mm256_maskstore_ps(y + j, m, _mm256_mul_ps(va, _mm256_maskload_ps(y + j, m)));
    }
  }
};
#undef COHORT_AVX2_OP
#endif

// The keys of one query row: the hull [lo, hi) of its allowed keys, and
// whether every key in it is allowed (a causal row of a sequence, or a
// padding position seeing itself: every mask PrepareStack builds).
struct KeyRange {
  int32_t lo, hi, dense;
};

// One (batch row, KV head) block of attention forward: the g query heads
// sharing the KV head, t query rows each. q [g, t, hd]; k, v [t, hd];
// p [g, t, t] (only each row's hull is written); row i of query head r goes
// to out + i * out_stride + r * hd. kt: [hd, t] scratch (k transposed, so
// that a row's scores are multiply-adds over contiguous keys).
template <typename Ops, typename T>
COHORT_ROW_KERNEL void AttentionBlock(const T* q, const T* k, const T* v, const KeyRange* ranges,
                                      const bool* allowed, T* p, T* out, int64_t out_stride,
                                      int64_t g, int64_t t, int64_t hd, T sc, T* kt) {
  for (int64_t j = 0; j < t; ++j) {
    for (int64_t d = 0; d < hd; ++d) kt[d * t + j] = k[j * hd + d];
  }
  for (int64_t r = 0; r < g; ++r) {
    for (int64_t i = 0; i < t; ++i) {
      const KeyRange kr = ranges[i];
      const int64_t lo = kr.lo, n = kr.hi - kr.lo;
      const T* qi = q + (r * t + i) * hd;
      T* s = p + (r * t + i) * t + lo;
      Ops::Dots(qi, kt + lo, t, hd, n, s);
      T sum;
      if (kr.dense) {
        const T m = MaxLanes(s, n) * sc;
        sum = ExpSumLanes(s, sc, m, s, n);
      } else {
        const bool* a = allowed + i * t + lo;
        for (int64_t j = 0; j < n; ++j) {
          if (!a[j]) s[j] = -std::numeric_limits<T>::infinity();
        }
        const T m = MaxLanes(s, n) * sc;
        for (int64_t j = 0; j < n; ++j) s[j] = a[j] ? Exp(s[j] * sc - m) : T(0);
        sum = SumLanes(s, n);
      }
      Ops::Scale(T(1) / sum, s, n);
      Ops::WeightedSum(s, v + lo * hd, hd, n, out + i * out_stride + r * hd);
    }
  }
}

// Its backward: given dout (same layout as out), dq [g, t, hd] and the
// block's dk, dv [t, hd] (overwritten: the block owns its KV head). vt:
// [hd, t] scratch, ds: [t] scratch.
template <typename Ops, typename T>
COHORT_ROW_KERNEL void AttentionBackwardBlock(const T* q, const T* k, const T* v, const T* p,
                                              const KeyRange* ranges, const T* dout,
                                              int64_t out_stride, T* dq, T* dk, T* dv, int64_t g,
                                              int64_t t, int64_t hd, T sc, T* vt, T* ds) {
  for (int64_t j = 0; j < t; ++j) {
    for (int64_t d = 0; d < hd; ++d) vt[d * t + j] = v[j * hd + d];
  }
  std::fill(dk, dk + t * hd, T(0));
  std::fill(dv, dv + t * hd, T(0));
  for (int64_t r = 0; r < g; ++r) {
    for (int64_t i = 0; i < t; ++i) {
      const int64_t lo = ranges[i].lo, n = ranges[i].hi - ranges[i].lo;
      const T* pi = p + (r * t + i) * t + lo;
      const T* doi = dout + i * out_stride + r * hd;
      const T* qi = q + (r * t + i) * hd;
      // dP_j = dout_i . v_j
      Ops::Dots(doi, vt + lo, t, hd, n, ds);
      // dS_j = sc p_j (dP_j - Σ p dP) (the masked softmax's backward)
      const T dot = DotLanes(pi, ds, n);
      {
        int64_t j = 0;
        for (; j + kLanes <= n; j += kLanes) {
          for (int kk = 0; kk < kLanes; ++kk) {
            ds[j + kk] = sc * pi[j + kk] * (ds[j + kk] - dot);
          }
        }
        for (; j < n; ++j) ds[j] = sc * pi[j] * (ds[j] - dot);
      }
      Ops::WeightedSum(ds, k + lo * hd, hd, n, dq + (r * t + i) * hd);
      for (int64_t j = 0; j < n; ++j) {
        Ops::Axpy(ds[j], qi, dk + (lo + j) * hd, hd);
        Ops::Axpy(pi[j], doi, dv + (lo + j) * hd, hd);
      }
    }
  }
}

#ifdef COHORT_AVX2_CLONES
COHORT_AVX2 void AttentionBlockAvx2(const float* q, const float* k, const float* v,
                                    const KeyRange* ranges, const bool* allowed, float* p,
                                    float* out, int64_t out_stride, int64_t g, int64_t t,
                                    int64_t hd, float sc, float* kt) {
  AttentionBlock<Avx2Ops>(q, k, v, ranges, allowed, p, out, out_stride, g, t, hd, sc, kt);
}
COHORT_AVX2 void AttentionBackwardBlockAvx2(const float* q, const float* k, const float* v,
                                            const float* p, const KeyRange* ranges,
                                            const float* dout, int64_t out_stride, float* dq,
                                            float* dk, float* dv, int64_t g, int64_t t, int64_t hd,
                                            float sc, float* vt, float* ds) {
  AttentionBackwardBlock<Avx2Ops>(q, k, v, p, ranges, dout, out_stride, dq, dk, dv, g, t, hd, sc,
                                  vt, ds);
}
#endif

template <typename T>
void AttentionBlockAny(const T* q, const T* k, const T* v, const KeyRange* ranges,
                       const bool* allowed, T* p, T* out, int64_t out_stride, int64_t g, int64_t t,
                       int64_t hd, T sc, T* kt) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) {
      return AttentionBlockAvx2(q, k, v, ranges, allowed, p, out, out_stride, g, t, hd, sc, kt);
    }
  }
#endif
  AttentionBlock<ScalarOps>(q, k, v, ranges, allowed, p, out, out_stride, g, t, hd, sc, kt);
}
template <typename T>
void AttentionBackwardBlockAny(const T* q, const T* k, const T* v, const T* p,
                               const KeyRange* ranges, const T* dout, int64_t out_stride, T* dq,
                               T* dk, T* dv, int64_t g, int64_t t, int64_t hd, T sc, T* vt, T* ds) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) {
      return AttentionBackwardBlockAvx2(q, k, v, p, ranges, dout, out_stride, dq, dk, dv, g, t, hd,
                                        sc, vt, ds);
    }
  }
#endif
  AttentionBackwardBlock<ScalarOps>(q, k, v, p, ranges, dout, out_stride, dq, dk, dv, g, t, hd, sc,
                                    vt, ds);
}

// q [B, H, T, hd], k and v [B, KV, T, hd], allowed [B, 1, T, T] -> out
// [B, T, H * hd]; saves q, k, v, the probabilities (each row's hull only)
// and the rows' key ranges for backward.
struct AttentionFn : public torch::autograd::Function<AttentionFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                            const at::Tensor& v_in, const at::Tensor& allowed_in, double scale) {
    at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    at::Tensor allowed = allowed_in.contiguous();
    TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes(),
                "attention: q [B, H, T, hd], k and v [B, KV, T, hd] expected");
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), hd = q.size(3);
    const int64_t kvh = k.size(1);
    TORCH_CHECK(k.size(0) == b && k.size(2) == t && k.size(3) == hd && kvh > 0 &&
                    heads % kvh == 0 && q.scalar_type() == k.scalar_type() &&
                    q.scalar_type() == v.scalar_type(),
                "attention: q [B, H, T, hd], k and v [B, KV, T, hd] (KV divides H) expected");
    TORCH_CHECK(allowed.dim() == 4 && allowed.size(0) == b && allowed.size(1) == 1 &&
                    allowed.size(2) == t && allowed.size(3) == t,
                "attention: allowed [B, 1, T, T] expected");
    TORCH_CHECK(t < std::numeric_limits<int32_t>::max(), "attention: too many positions");
    const int64_t g = heads / kvh;
    // Each query row's key range.
    at::Tensor ranges = at::empty({b, t, 3}, at::TensorOptions().dtype(at::kInt));
    {
      const bool* ap = allowed.data_ptr<bool>();
      auto* rp = reinterpret_cast<KeyRange*>(ranges.data_ptr<int32_t>());
      for (int64_t r = 0; r < b * t; ++r) {
        const bool* a = ap + r * t;
        int64_t lo = 0, hi = t;
        while (lo < t && !a[lo]) ++lo;
        while (hi > lo && !a[hi - 1]) --hi;
        TORCH_CHECK(hi > lo, "attention: a query row with no allowed key");
        bool dense = true;
        for (int64_t j = lo; j < hi; ++j) dense &= a[j];
        rp[r] = {static_cast<int32_t>(lo), static_cast<int32_t>(hi), dense ? 1 : 0};
      }
    }
    at::Tensor p = at::empty({b, heads, t, t}, q.options());
    at::Tensor out = at::empty({b, t, heads * hd}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused_attention", [&] {
      using T = scalar_t;
      const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
      const bool* ap = allowed.data_ptr<bool>();
      const auto* rp = reinterpret_cast<const KeyRange*>(ranges.data_ptr<int32_t>());
      T *pp = p.data_ptr<T>(), *op = out.data_ptr<T>();
      const T sc = static_cast<T>(scale);
      ForRows(b * kvh, g * t * t * hd, [&](int64_t b0, int64_t b1) {
        std::vector<T> kt(static_cast<size_t>(hd * t));
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t bi = blk / kvh, kv = blk % kvh;
          AttentionBlockAny(
              qp + (bi * heads + kv * g) * t * hd, kp + blk * t * hd, vp + blk * t * hd,
              rp + bi * t, ap + bi * t * t, pp + (bi * heads + kv * g) * t * t,
              op + bi * t * heads * hd + kv * g * hd, heads * hd, g, t, hd, sc, kt.data());
        }
      });
    });
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({q, k, v, p, ranges});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &p = saved[3];
    const at::Tensor& ranges = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    at::Tensor dout = grads[0].contiguous();
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), hd = q.size(3);
    const int64_t kvh = k.size(1), g = heads / kvh;
    at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused_attention_backward", [&] {
      using T = scalar_t;
      const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
      const T *pp = p.data_ptr<T>(), *gp = dout.data_ptr<T>();
      const auto* rp = reinterpret_cast<const KeyRange*>(ranges.data_ptr<int32_t>());
      T *dqp = dq.data_ptr<T>(), *dkp = dk.data_ptr<T>(), *dvp = dv.data_ptr<T>();
      const T sc = static_cast<T>(scale);
      ForRows(b * kvh, 2 * g * t * t * hd, [&](int64_t b0, int64_t b1) {
        std::vector<T> vt(static_cast<size_t>(hd * t)), ds(static_cast<size_t>(t));
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t bi = blk / kvh, kv = blk % kvh;
          const int64_t qoff = (bi * heads + kv * g) * t * hd;
          AttentionBackwardBlockAny(
              qp + qoff, kp + blk * t * hd, vp + blk * t * hd, pp + (bi * heads + kv * g) * t * t,
              rp + bi * t, gp + bi * t * heads * hd + kv * g * hd, heads * hd, dqp + qoff,
              dkp + blk * t * hd, dvp + blk * t * hd, g, t, hd, sc, vt.data(), ds.data());
        }
      });
    });
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& allowed, double scale) {
  TORCH_CHECK(scale > 0, "attention: scale must be > 0, got ", scale);
  TORCH_CHECK(allowed.defined() && allowed.scalar_type() == at::kBool,
              "attention: allowed must be a bool tensor");
  return AttentionFn::apply(q, k, v, allowed, scale);
}

}  // namespace cohort::model::fused
