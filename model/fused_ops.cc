#include "model/fused_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "model/aten.h"
#include "model/fused_kernels.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

namespace cohort::model::fused {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using namespace internal;  // NOLINT: the shared row helpers (fused_kernels.h)

template <typename T>
COHORT_ROW_KERNEL T Sigmoid(T x) {
  return T(1) / (T(1) + Exp(-x));
}

// Softmax of sc * x (sc > 0) over the allowed keys of one row, 0 elsewhere.
template <typename T>
COHORT_ROW_KERNEL void SoftmaxRow(const T* x, const bool* a, T* y, int64_t n, T sc) {
  // The allowed keys are one contiguous range [lo, hi) in the layouts the
  // transformer builds (causal inside a sequence; padding sees itself):
  // then only the range is computed, in two passes (max; exp and sum) and
  // a normalization. Any other mask takes the general branch-free passes.
  int64_t lo = 0, hi = n;
  while (lo < n && !a[lo]) ++lo;
  while (hi > lo && !a[hi - 1]) --hi;
  bool contiguous = hi > lo;
  for (int64_t j = lo; j < hi; ++j) contiguous &= a[j];
  if (contiguous) {
    std::fill(y, y + lo, T(0));
    std::fill(y + hi, y + n, T(0));
    const T m = MaxLanes(x + lo, hi - lo) * sc;
    const T inv = T(1) / ExpSumLanes(x + lo, sc, m, y + lo, hi - lo);
    for (int64_t j = lo; j < hi; ++j) y[j] *= inv;
    return;
  }
  for (int64_t j = 0; j < n; ++j) y[j] = a[j] ? x[j] * sc : -std::numeric_limits<T>::infinity();
  const T m = MaxLanes(y, n);
  for (int64_t j = 0; j < n; ++j) {
    const T e = Exp(y[j] - m);
    y[j] = a[j] ? e : T(0);
  }
  const T inv = T(1) / SumLanes(y, n);
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

// One row of log_softmax(it * x) (it > 0): returns the logsumexp and sets
// *entropy, in two passes (max; exp with both sums).
template <typename T>
COHORT_ROW_KERNEL T LogSoftmaxRow(const T* x, int64_t n, T it, T* entropy) {
  const T m = MaxLanes(x, n) * it;
  T s[kLanes] = {}, w[kLanes] = {};  // Σ e^(z-m), Σ e^(z-m) (z-m)
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const T d = x[j + k] * it - m;
      const T e = Exp(d);
      s[k] += e;
      w[k] += e * d;
    }
  }
  T sum = 0, wsum = 0;
  for (int k = 0; k < kLanes; ++k) sum += s[k], wsum += w[k];
  for (; j < n; ++j) {
    const T d = x[j] * it - m;
    const T e = Exp(d);
    sum += e;
    wsum += e * d;
  }
  const T log_sum = std::log(sum);
  *entropy = log_sum - wsum / sum;  // H = lse - E[z] = log Σ - E[z - m]
  return m + log_sum;
}

// d = -gi * softmax(it * x) (lse = its logsumexp).
template <typename T>
COHORT_ROW_KERNEL void LogSoftmaxBackwardRow(const T* x, T* d, int64_t n, T it, T gi, T lse) {
  for (int64_t j = 0; j < n; ++j) d[j] = -gi * Exp(x[j] * it - lse);
}

template <typename T>
COHORT_ROW_KERNEL void SiluMulRow(const T* g, const T* u, T* o, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] = g[j] * Sigmoid(g[j]) * u[j];
}

template <typename T>
COHORT_ROW_KERNEL void SiluMulBackwardRow(const T* g, const T* u, const T* d, T* dg, T* du,
                                          int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T x = g[j], sg = Sigmoid(x);
    dg[j] = d[j] * u[j] * sg * (T(1) + x * (T(1) - sg));
    du[j] = d[j] * x * sg;
  }
}

#ifdef COHORT_AVX2_CLONES
COHORT_AVX2 void SoftmaxRowAvx2(const float* x, const bool* a, float* y, int64_t n, float sc) {
  SoftmaxRow(x, a, y, n, sc);
}
COHORT_AVX2 float LogSoftmaxRowAvx2(const float* x, int64_t n, float it, float* entropy) {
  return LogSoftmaxRow(x, n, it, entropy);
}
COHORT_AVX2 void LogSoftmaxBackwardRowAvx2(const float* x, float* d, int64_t n, float it, float gi,
                                           float lse) {
  LogSoftmaxBackwardRow(x, d, n, it, gi, lse);
}
COHORT_AVX2 void SiluMulRowAvx2(const float* g, const float* u, float* o, int64_t n) {
  SiluMulRow(g, u, o, n);
}
COHORT_AVX2 void SiluMulBackwardRowAvx2(const float* g, const float* u, const float* d, float* dg,
                                        float* du, int64_t n) {
  SiluMulBackwardRow(g, u, d, dg, du, n);
}
#endif

// The dispatchers: the AVX2 clone for float where the CPU has it.
template <typename T>
void SoftmaxRowAny(const T* x, const bool* a, T* y, int64_t n, T sc) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return SoftmaxRowAvx2(x, a, y, n, sc);
  }
#endif
  SoftmaxRow(x, a, y, n, sc);
}
template <typename T>
T LogSoftmaxRowAny(const T* x, int64_t n, T it, T* entropy) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return LogSoftmaxRowAvx2(x, n, it, entropy);
  }
#endif
  return LogSoftmaxRow(x, n, it, entropy);
}
template <typename T>
void LogSoftmaxBackwardRowAny(const T* x, T* d, int64_t n, T it, T gi, T lse) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return LogSoftmaxBackwardRowAvx2(x, d, n, it, gi, lse);
  }
#endif
  LogSoftmaxBackwardRow(x, d, n, it, gi, lse);
}
template <typename T>
void SiluMulRowAny(const T* g, const T* u, T* o, int64_t n) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return SiluMulRowAvx2(g, u, o, n);
  }
#endif
  SiluMulRow(g, u, o, n);
}
template <typename T>
void SiluMulBackwardRowAny(const T* g, const T* u, const T* d, T* dg, T* du, int64_t n) {
#ifdef COHORT_AVX2_CLONES
  if constexpr (std::is_same_v<T, float>) {
    if (HasAvx2()) return SiluMulBackwardRowAvx2(g, u, d, dg, du, n);
  }
#endif
  SiluMulBackwardRow(g, u, d, dg, du, n);
}

// --- RMSNorm ---------------------------------------------------------------

// y = w * x * r with r = rsqrt(mean(x^2) + eps); stores r.
template <typename T>
inline void RmsRow(const T* x, const T* w, T* y, int64_t d, double eps, T* r_out) {
  const T ss = DotLanes(x, x, d);
  const T r = T(1) / std::sqrt(ss / static_cast<T>(d) + static_cast<T>(eps));
  for (int64_t j = 0; j < d; ++j) y[j] = w[j] * (x[j] * r);
  *r_out = r;
}

// Given dy, the row's x and r: dx = r (w dy - n mean(w dy n)), n = x r;
// adds dy * n into gw when given.
template <typename T>
inline void RmsRowBackward(const T* x, const T* w, const T* dy, T r, T* dx, T* gw, int64_t d) {
  T acc[kLanes] = {};
  int64_t j0 = 0;
  for (; j0 + kLanes <= d; j0 += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += w[j0 + k] * dy[j0 + k] * x[j0 + k];
  }
  T dot = 0;
  for (int k = 0; k < kLanes; ++k) dot += acc[k];
  for (; j0 < d; ++j0) dot += w[j0] * dy[j0] * x[j0];
  const T c = dot * r * r / static_cast<T>(d);
  for (int64_t j = 0; j < d; ++j) dx[j] = r * (w[j] * dy[j] - x[j] * c);
  if (gw != nullptr) {
    for (int64_t j = 0; j < d; ++j) gw[j] += dy[j] * x[j] * r;
  }
}

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w_in,
                            double eps) {
    at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = at::empty_like(x);
    at::Tensor r = at::empty({rows}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_rms_norm", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* wp = w.data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      scalar_t* rp = r.data_ptr<scalar_t>();
      ForRows(rows, d, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) RmsRow(xp + i * d, wp, yp + i * d, d, eps, rp + i);
      });
    });
    ctx->save_for_backward({x, w, r});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    at::Tensor dy = grads[0].contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    const bool want_w = ctx->needs_input_grad(1);
    at::Tensor dx = at::empty_like(x), dw;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_rms_norm_backward", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* wp = w.data_ptr<scalar_t>();
      const scalar_t* rp = r.data_ptr<scalar_t>();
      const scalar_t* gp = dy.data_ptr<scalar_t>();
      scalar_t* dxp = dx.data_ptr<scalar_t>();
      Partials<scalar_t> gw(d);
      ForRows(rows, d, [&](int64_t b, int64_t e) {
        scalar_t* acc = want_w ? gw.mine() : nullptr;
        for (int64_t i = b; i < e; ++i) {
          RmsRowBackward(xp + i * d, wp, gp + i * d, rp[i], dxp + i * d, acc, d);
        }
      });
      if (want_w) dw = gw.Sum(w.options());
    });
    return {dx, dw, at::Tensor()};
  }
};

// --- q/k norm + RoPE + layout ---------------------------------------------

// out = rope(in): out[i] = in[i] c[i] - in[i+h] s[i], out[i+h] = in[i+h] c[i+h] + in[i] s[i+h].
template <typename T>
inline void RopeRow(const T* in, const T* c, const T* s, T* out, int64_t hd) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    out[i] = in[i] * c[i] - in[i + h] * s[i];
    out[i + h] = in[i + h] * c[i + h] + in[i] * s[i + h];
  }
}
// The transpose of RopeRow: grad of in from grad of out.
template <typename T>
inline void RopeRowBackward(const T* g, const T* c, const T* s, T* gin, int64_t hd) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    gin[i] = g[i] * c[i] + g[i + h] * s[i + h];
    gin[i + h] = g[i + h] * c[i + h] - g[i] * s[i];
  }
}

struct QkvRopeFn : public torch::autograd::Function<QkvRopeFn> {
  // qkv [B, T, (H + 2 KV) hd]: per position the H query heads, then the KV
  // key heads, then the KV value heads.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv_in,
                               const at::Tensor& qn_in, const at::Tensor& kn_in,
                               const at::Tensor& cos_in, const at::Tensor& sin_in, int64_t heads,
                               int64_t kv_heads, double eps) {
    at::Tensor qkv = qkv_in.contiguous();
    at::Tensor cs = cos_in.contiguous(), sn = sin_in.contiguous();
    const bool norm = qn_in.numel() > 0;  // an empty tensor: no per-head norm
    at::Tensor qn = norm ? qn_in.contiguous() : at::Tensor();
    at::Tensor kn = norm ? kn_in.contiguous() : at::Tensor();
    const int64_t nh = heads + kv_heads;  // heads with norm + RoPE
    const int64_t b = qkv.size(0), t = qkv.size(1), hd = qkv.size(2) / (nh + kv_heads);
    TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) == (nh + kv_heads) * hd && hd % 2 == 0,
                "qkv_rope: qkv [B, T, (heads + 2 kv_heads) * head_dim] expected");
    TORCH_CHECK(cs.numel() == b * t * hd && sn.numel() == b * t * hd, "qkv_rope: bad rope table");
    TORCH_CHECK(!norm || (qn.numel() == hd && kn.numel() == hd), "qkv_rope: norm weights [", hd,
                "] expected");
    const int64_t w = qkv.size(2);
    at::Tensor qo = at::empty({b, heads, t, hd}, qkv.options());
    at::Tensor ko = at::empty({b, kv_heads, t, hd}, qkv.options());
    at::Tensor vo = at::empty({b, kv_heads, t, hd}, qkv.options());
    at::Tensor rstd = at::empty({b, t, nh}, qkv.options());
    AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "fused_qkv_rope", [&] {
      const scalar_t* xp = qkv.data_ptr<scalar_t>();
      const scalar_t *cp = cs.data_ptr<scalar_t>(), *sp = sn.data_ptr<scalar_t>();
      const scalar_t* qnp = norm ? qn.data_ptr<scalar_t>() : nullptr;
      const scalar_t* knp = norm ? kn.data_ptr<scalar_t>() : nullptr;
      scalar_t *qop = qo.data_ptr<scalar_t>(), *kop = ko.data_ptr<scalar_t>(),
               *vop = vo.data_ptr<scalar_t>(), *rp = rstd.data_ptr<scalar_t>();
      ForRows(b * t, w, [&](int64_t r0, int64_t r1) {
        std::vector<scalar_t> tmp(hd);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t bi = r / t, ti = r % t;
          const scalar_t* c = cp + r * hd;
          const scalar_t* s = sp + r * hd;
          const scalar_t* row = xp + r * w;
          for (int64_t h = 0; h < nh; ++h) {
            const bool is_q = h < heads;
            const int64_t hh = is_q ? h : h - heads, nheads = is_q ? heads : kv_heads;
            scalar_t* out = (is_q ? qop : kop) + ((bi * nheads + hh) * t + ti) * hd;
            if (norm) {
              RmsRow(row + h * hd, is_q ? qnp : knp, tmp.data(), hd, eps, rp + r * nh + h);
              RopeRow(tmp.data(), c, s, out, hd);
            } else {
              RopeRow(row + h * hd, c, s, out, hd);
            }
          }
          for (int64_t h = 0; h < kv_heads; ++h) {
            std::memcpy(vop + ((bi * kv_heads + h) * t + ti) * hd, row + (nh + h) * hd,
                        hd * sizeof(scalar_t));
          }
        }
      });
    });
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    if (norm) {
      ctx->save_for_backward({cs, sn, qkv, qn, kn, rstd});
    } else {
      ctx->save_for_backward({cs, sn});
    }
    return {qo, ko, vo};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const bool norm = saved.size() == 6;
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t kv_heads = ctx->saved_data["kv_heads"].toInt();
    const at::Tensor &cs = saved[0], &sn = saved[1];
    at::Tensor gq = grads[0].contiguous(), gk = grads[1].contiguous(), gv = grads[2].contiguous();
    const int64_t b = gq.size(0), t = gq.size(2), hd = gq.size(3);
    const int64_t nh = heads + kv_heads, w = (nh + kv_heads) * hd;
    at::Tensor dqkv = at::empty({b, t, w}, gq.options());
    const bool want_qn = norm && ctx->needs_input_grad(1);
    const bool want_kn = norm && ctx->needs_input_grad(2);
    at::Tensor dqn, dkn;
    AT_DISPATCH_FLOATING_TYPES(gq.scalar_type(), "fused_qkv_rope_backward", [&] {
      const scalar_t *gqp = gq.data_ptr<scalar_t>(), *gkp = gk.data_ptr<scalar_t>(),
                     *gvp = gv.data_ptr<scalar_t>();
      const scalar_t *cp = cs.data_ptr<scalar_t>(), *sp = sn.data_ptr<scalar_t>();
      const scalar_t *xp = nullptr, *qnp = nullptr, *knp = nullptr, *rp = nullptr;
      if (norm) {
        xp = saved[2].data_ptr<scalar_t>();
        qnp = saved[3].data_ptr<scalar_t>();
        knp = saved[4].data_ptr<scalar_t>();
        rp = saved[5].data_ptr<scalar_t>();
      }
      scalar_t* dp = dqkv.data_ptr<scalar_t>();
      Partials<scalar_t> pq(hd), pk(hd);
      ForRows(b * t, w, [&](int64_t r0, int64_t r1) {
        std::vector<scalar_t> tmp(hd);
        scalar_t* accq = want_qn ? pq.mine() : nullptr;
        scalar_t* acck = want_kn ? pk.mine() : nullptr;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t bi = r / t, ti = r % t;
          const scalar_t* c = cp + r * hd;
          const scalar_t* s = sp + r * hd;
          scalar_t* drow = dp + r * w;
          for (int64_t h = 0; h < nh; ++h) {
            const bool is_q = h < heads;
            const int64_t hh = is_q ? h : h - heads, nheads = is_q ? heads : kv_heads;
            const scalar_t* g = (is_q ? gqp : gkp) + ((bi * nheads + hh) * t + ti) * hd;
            if (norm) {
              RopeRowBackward(g, c, s, tmp.data(), hd);
              RmsRowBackward(xp + r * w + h * hd, is_q ? qnp : knp, tmp.data(), rp[r * nh + h],
                             drow + h * hd, is_q ? accq : acck, hd);
            } else {
              RopeRowBackward(g, c, s, drow + h * hd, hd);
            }
          }
          for (int64_t h = 0; h < kv_heads; ++h) {
            std::memcpy(drow + (nh + h) * hd, gvp + ((bi * kv_heads + h) * t + ti) * hd,
                        hd * sizeof(scalar_t));
          }
        }
      });
      if (want_qn) dqn = pq.Sum(gq.options());
      if (want_kn) dkn = pk.Sum(gq.options());
    });
    return {dqkv, dqn, dkn, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// --- masked softmax ---------------------------------------------------------

struct MaskedSoftmaxFn : public torch::autograd::Function<MaskedSoftmaxFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& scores_in,
                            const at::Tensor& allowed_in, double scale) {
    at::Tensor s = scores_in.contiguous();
    at::Tensor allowed = allowed_in.contiguous();
    const int64_t b = s.size(0), heads = s.size(1), rows = s.size(2), tk = s.size(3);
    const int64_t t = allowed.size(2);
    TORCH_CHECK(allowed.size(0) == b && allowed.size(3) == tk && rows % t == 0,
                "masked_softmax: bad shapes");
    at::Tensor p = at::empty_like(s);
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "fused_masked_softmax", [&] {
      using T = scalar_t;
      const T* sp = s.data_ptr<T>();
      const bool* ap = allowed.data_ptr<bool>();
      T* pp = p.data_ptr<T>();
      const T sc = static_cast<T>(scale);
      ForRows(b * heads * rows, tk, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t bi = r / (heads * rows), ti = (r % rows) % t;
          const bool* a = ap + (bi * t + ti) * tk;
          SoftmaxRowAny(sp + r * tk, a, pp + r * tk, tk, sc);
        }
      });
    });
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({p});
    return p;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor p = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    at::Tensor g = grads[0].contiguous();
    const int64_t tk = p.size(3), n = p.numel() / tk;
    at::Tensor ds = at::empty_like(p);
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fused_masked_softmax_backward", [&] {
      using T = scalar_t;
      const T *pp = p.data_ptr<T>(), *gp = g.data_ptr<T>();
      T* dp = ds.data_ptr<T>();
      const T sc = static_cast<T>(scale);
      ForRows(n, tk, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T *y = pp + r * tk, *gy = gp + r * tk;
          const T dot = DotLanes(y, gy, tk);
          T* d = dp + r * tk;
          for (int64_t j = 0; j < tk; ++j) d[j] = sc * y[j] * (gy[j] - dot);
        }
      });
    });
    return {ds, at::Tensor(), at::Tensor()};
  }
};

// --- SiLU * mul -------------------------------------------------------------

// gate_up [..., 2I]: gate = the first I columns, up = the last I.
struct SiluMulFn : public torch::autograd::Function<SiluMulFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gu_in) {
    at::Tensor gu = gu_in.contiguous();
    const int64_t w = gu.size(-1), i = w / 2, rows = gu.numel() / std::max<int64_t>(w, 1);
    TORCH_CHECK(w % 2 == 0, "silu_mul: gate_up's last dimension must be even, got ", w);
    std::vector<int64_t> shape(gu.sizes().begin(), gu.sizes().end());
    shape.back() = i;
    at::Tensor y = at::empty(shape, gu.options());
    AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "fused_silu_mul", [&] {
      using T = scalar_t;
      const T* xp = gu.data_ptr<T>();
      T* yp = y.data_ptr<T>();
      ForRows(rows, w, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* g = xp + r * w;
          SiluMulRowAny(g, g + i, yp + r * i, i);
        }
      });
    });
    ctx->save_for_backward({gu});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor gu = ctx->get_saved_variables()[0];
    at::Tensor dy = grads[0].contiguous();
    const int64_t w = gu.size(-1), i = w / 2, rows = gu.numel() / std::max<int64_t>(w, 1);
    at::Tensor dgu = at::empty_like(gu);
    AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "fused_silu_mul_backward", [&] {
      using T = scalar_t;
      const T *xp = gu.data_ptr<T>(), *dyp = dy.data_ptr<T>();
      T* dp = dgu.data_ptr<T>();
      ForRows(rows, w, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* g = xp + r * w;
          T* dg = dp + r * w;
          SiluMulBackwardRowAny(g, g + i, dyp + r * i, dg, dg + i, i);
        }
      });
    });
    return {dgu};
  }
};

// --- log-softmax gather -----------------------------------------------------

struct LogSoftmaxGatherFn : public torch::autograd::Function<LogSoftmaxGatherFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits_in,
                               const at::Tensor& targets_in, double inv_temp) {
    at::Tensor z = logits_in.contiguous();
    at::Tensor tg = targets_in.to(at::kLong).contiguous();
    TORCH_CHECK(z.dim() == 2 && tg.dim() == 1 && tg.size(0) == z.size(0),
                "log_softmax_gather: logits [N, V] and targets [N] expected");
    const int64_t n = z.size(0), v = z.size(1);
    at::Tensor logp = at::empty({n}, z.options());
    at::Tensor entropy = at::empty({n}, z.options());
    at::Tensor lse = at::empty({n}, z.options());
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fused_log_softmax_gather", [&] {
      using T = scalar_t;
      const T* zp = z.data_ptr<T>();
      const int64_t* tp = tg.data_ptr<int64_t>();
      T *lp = logp.data_ptr<T>(), *ep = entropy.data_ptr<T>(), *sp = lse.data_ptr<T>();
      const T it = static_cast<T>(inv_temp);
      ForRows(n, v, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = zp + r * v;
          const int64_t target = tp[r];
          TORCH_CHECK(target >= 0 && target < v, "log_softmax_gather: target ", target,
                      " outside [0, ", v, ")");
          sp[r] = LogSoftmaxRowAny(x, v, it, ep + r);
          lp[r] = x[target] * it - sp[r];
        }
      });
    });
    ctx->saved_data["inv_temp"] = inv_temp;
    ctx->save_for_backward({z, tg, lse});
    ctx->mark_non_differentiable({entropy});
    return {logp, entropy};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor &z = saved[0], &tg = saved[1], &lse = saved[2];
    const double inv_temp = ctx->saved_data["inv_temp"].toDouble();
    at::Tensor g = grads[0].contiguous();
    const int64_t n = z.size(0), v = z.size(1);
    at::Tensor dz = at::empty_like(z);
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fused_log_softmax_gather_backward", [&] {
      using T = scalar_t;
      const T *zp = z.data_ptr<T>(), *sp = lse.data_ptr<T>(), *gp = g.data_ptr<T>();
      const int64_t* tp = tg.data_ptr<int64_t>();
      T* dp = dz.data_ptr<T>();
      const T it = static_cast<T>(inv_temp);
      ForRows(n, v, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = zp + r * v;
          T* d = dp + r * v;
          const T gi = gp[r] * it, l = sp[r];
          LogSoftmaxBackwardRowAny(x, d, v, it, gi, l);
          d[tp[r]] += gi;
        }
      });
    });
    return {dz, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool FusedOpsSupport(const at::Tensor& like) {
  return like.defined() && like.device().is_cpu() &&
         (like.scalar_type() == at::kFloat || like.scalar_type() == at::kDouble);
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: weight [", x.size(-1),
              "] expected");
  return RmsNormFn::apply(x, weight, eps);
}

std::vector<at::Tensor> QkvRope(const at::Tensor& qkv, const at::Tensor& q_norm,
                                const at::Tensor& k_norm, const at::Tensor& cos,
                                const at::Tensor& sin, int64_t heads, int64_t kv_heads,
                                double eps) {
  TORCH_CHECK(qkv.dim() == 3, "qkv_rope: qkv [B, T, (heads + 2 kv_heads) * head_dim] expected");
  TORCH_CHECK(q_norm.defined() == k_norm.defined(), "qkv_rope: q_norm and k_norm go together");
  // Function::apply needs defined tensors: "no norm" travels as empty ones.
  if (!q_norm.defined()) {
    at::Tensor none = at::empty({0}, qkv.options());
    return QkvRopeFn::apply(qkv, none, none, cos, sin, heads, kv_heads, eps);
  }
  return QkvRopeFn::apply(qkv, q_norm, k_norm, cos, sin, heads, kv_heads, eps);
}

at::Tensor MaskedSoftmax(const at::Tensor& scores, const at::Tensor& allowed, double scale) {
  TORCH_CHECK(scale > 0, "masked_softmax: scale must be > 0, got ", scale);
  TORCH_CHECK(scores.dim() == 4 && allowed.dim() == 4 && allowed.scalar_type() == at::kBool,
              "masked_softmax: scores [B, KV, g*T, Tk] and bool allowed [B, 1, T, Tk] expected");
  return MaskedSoftmaxFn::apply(scores, allowed, scale);
}

at::Tensor SiluMul(const at::Tensor& gate_up) { return SiluMulFn::apply(gate_up); }

std::vector<at::Tensor> LogSoftmaxGather(const at::Tensor& logits, const at::Tensor& targets,
                                         double inv_temp) {
  TORCH_CHECK(inv_temp > 0, "log_softmax_gather: inv_temp must be > 0, got ", inv_temp);
  return LogSoftmaxGatherFn::apply(logits, targets, inv_temp);
}

void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                 at::Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                 double weight_decay, double bc1, double bc2_sqrt) {
  TORCH_CHECK(param.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous() &&
                  param.scalar_type() == at::kFloat && grad.numel() == param.numel(),
              "adamw: contiguous float tensors of one shape expected");
  at::Tensor g = grad.contiguous();
  float* p = param.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float decay = static_cast<float>(1.0 - lr * weight_decay);
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float a1 = static_cast<float>(1.0 - beta1), a2 = static_cast<float>(1.0 - beta2);
  const float step = static_cast<float>(-lr / bc1), bc2 = static_cast<float>(bc2_sqrt);
  const float e = static_cast<float>(eps);
  const bool decays = weight_decay > 0;
  at::parallel_for(0, param.numel(), int64_t{1} << 16, [&](int64_t b, int64_t end) {
    for (int64_t i = b; i < end; ++i) {
      if (decays) p[i] *= decay;
      m[i] = m[i] * b1 + gp[i] * a1;
      v[i] = v[i] * b2 + a2 * gp[i] * gp[i];
      p[i] += step * (m[i] / (std::sqrt(v[i]) / bc2 + e));
    }
  });
}

}  // namespace cohort::model::fused
