#include "model/attention.h"

#include <cmath>
#include <limits>

#include "model/aten.h"
#include <torch/version.h>

namespace cohort::model {
namespace {

struct Folded {
  at::Tensor q4;       // [B, kvh, g*T, hd]
  at::Tensor allowed;  // [B, 1, g*T, Tk] (math path: [B, 1, 1, T, Tk] view instead)
  int64_t b, h, t, hd, kvh, g, tk;
};

Folded Fold(const at::Tensor& q, const at::Tensor& keys) {
  Folded f;
  f.b = q.size(0);
  f.h = q.size(1);
  f.t = q.size(2);
  f.hd = q.size(3);
  f.kvh = keys.size(1);
  f.g = f.h / f.kvh;
  f.tk = keys.size(2);
  f.q4 = q.reshape({f.b, f.kvh, f.g * f.t, f.hd});
  return f;
}

}  // namespace

bool FusedAttentionFor(const at::Tensor& like) {
#if TORCH_VERSION_MAJOR >= 2
  return like.is_cuda();
#else
  (void)like;
  return false;
#endif
}

at::Tensor GroupedAttentionMath(const at::Tensor& q, const at::Tensor& keys,
                                const at::Tensor& values, const at::Tensor& allowed) {
  Folded f = Fold(q, keys);
  at::Tensor scores = at::matmul(f.q4, keys.transpose(-1, -2));
  scores = scores.to(at::kFloat) * (1.0 / std::sqrt(static_cast<double>(f.hd)));
  scores =
      scores.view({f.b, f.kvh, f.g, f.t, f.tk})
          .masked_fill(allowed.unsqueeze(2).logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs =
      at::softmax(scores, -1).to(q.scalar_type()).view({f.b, f.kvh, f.g * f.t, f.tk});
  at::Tensor out = at::matmul(probs, values);  // [B, kvh, g*T, hd]
  return out.view({f.b, f.h, f.t, f.hd});
}

at::Tensor GroupedAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& allowed) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    Folded f = Fold(q, keys);
    // [B, 1, T, Tk] -> [B, 1, g*T, Tk]: the folded query rows of one head
    // group share their position's mask row.
    at::Tensor mask =
        allowed.unsqueeze(2).expand({f.b, 1, f.g, f.t, f.tk}).reshape({f.b, 1, f.g * f.t, f.tk});
    at::Tensor out = at::scaled_dot_product_attention(f.q4, keys, values, mask, 0.0, false);
    return out.view({f.b, f.h, f.t, f.hd});
  }
#endif
  return GroupedAttentionMath(q, keys, values, allowed);
}

}  // namespace cohort::model
