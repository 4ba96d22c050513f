// Fused CPU kernels for the training path of model::Transformer (StackLayer,
// FinalNorm) and the trainer's output head: each is one autograd node with a
// hand-written forward and backward loop, replacing the chain of small
// element-wise ATen ops (and their temporaries) of the plain composition.
// On a small model (hidden 64) those element-wise passes, not the matmuls,
// are most of a training step.
//
//   RmsNorm           w * x * rsqrt(mean(x^2) + eps) over the last dim
//   QkvRope           q/k per-head RMSNorm (optional) + RoPE, and the
//                     [B, T, heads*hd] -> [B, heads, T, hd] layout change
//                     of q, k and v in one pass over the packed projection
//   MaskedSoftmax     softmax(scale * scores) over allowed keys (attention)
//   Attention         q.k^T, the masked softmax and .v (small head_dim)
//   SiluMul           silu(gate) * up (SwiGLU)
//   LogSoftmaxGather  log_softmax(inv_temp * logits)[target] per row, and
//                     the row's entropy (no gradient), without the
//                     [N, vocab] log-softmax tensor
//   AdamWUpdate       one in-place AdamW step on a parameter (no autograd)
//
// Every op takes float or double CPU tensors (FusedOpsSupport) and computes
// what the plain ATen composition computes (fused_ops_test compares both,
// forward and gradients, in float and double), up to rounding: reductions
// run in a different order, so results are not bit-identical to the ATen
// ops. Rows are split over at::parallel_for; results depend only on the
// thread count. Inputs are made contiguous when they are not.
//
// Thread-safety: pure functions (AdamWUpdate writes only its arguments).
#ifndef COHORT_MODEL_FUSED_OPS_H_
#define COHORT_MODEL_FUSED_OPS_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace cohort::model::fused {

// True when the fused kernels handle `like` (CPU, float or double).
bool FusedOpsSupport(const at::Tensor& like);

// x [..., d], weight [d]: weight * (x * rsqrt(mean(x^2, -1) + eps)).
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// qkv [B, T, (H + 2 KV) * hd]: each position's H query heads, KV key heads
// and KV value heads (one projection's output, or the three concatenated);
// q_norm / k_norm [hd] (both undefined: no per-head norm); cos and sin
// [B, T, hd] (the RoPE table, halves repeated). Returns {q, k, v} as
// [B, H, T, hd], [B, KV, T, hd], [B, KV, T, hd] contiguous, with
// q = rope(rms(q) * q_norm), k likewise, v only transposed.
std::vector<at::Tensor> QkvRope(const at::Tensor& qkv, const at::Tensor& q_norm,
                                const at::Tensor& k_norm, const at::Tensor& cos,
                                const at::Tensor& sin, int64_t heads, int64_t kv_heads, double eps);

// scores [B, KV, g*T, Tk] (q·k for the g query heads sharing a KV head,
// folded into the rows), allowed [B, 1, T, Tk] bool (no row all false): row
// r of a head uses allowed[b, 0, r % T]. Returns softmax(scale * scores)
// over the allowed keys, 0 elsewhere; scale > 0. Rows whose allowed keys
// are one contiguous range (every mask Transformer::PrepareStack builds)
// compute that range only.
at::Tensor MaskedSoftmax(const at::Tensor& scores, const at::Tensor& allowed, double scale);

// q [B, H, T, hd], k and v [B, KV, T, hd] (QkvRope's outputs; KV divides H,
// query head h reads KV head h / (H / KV)), allowed [B, 1, T, T] bool (no
// row all false). Returns softmax(scale * q k^T over the allowed keys) v as
// [B, T, H * hd] (the heads side by side, as the output projection reads
// them): MaskedSoftmax between the two batched matmuls, in one node.
// Each query row computes only the hull of its allowed keys (the causal
// half of a sequence: the masked half is skipped, forward and backward),
// with loops over contiguous keys instead of many small GEMMs; meant for
// small head_dim and rows (Transformer::FusedLayer picks it).
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& allowed, double scale);

// gate_up [..., 2I] (the gate and up projections side by side):
// silu(gate_up[..., :I]) * gate_up[..., I:], [..., I].
at::Tensor SiluMul(const at::Tensor& gate_up);

// logits [N, V], targets [N] long in [0, V). Returns {logp [N], entropy [N]}:
// logp = log_softmax(inv_temp * logits)[n, targets[n]] (differentiable in
// logits), entropy = -Σ p log p of that distribution (no gradient);
// inv_temp > 0.
std::vector<at::Tensor> LogSoftmaxGather(const at::Tensor& logits, const at::Tensor& targets,
                                         double inv_temp);

// torch.optim.AdamW's single-tensor step on contiguous float tensors of
// one shape: param *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// param -= lr/bc1 * m / (sqrt(v)/bc2_sqrt + eps), where bc1 and bc2_sqrt
// are the bias corrections 1 - b1^t and sqrt(1 - b2^t).
void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                 at::Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                 double weight_decay, double bc1, double bc2_sqrt);

}  // namespace cohort::model::fused

#endif  // COHORT_MODEL_FUSED_OPS_H_
