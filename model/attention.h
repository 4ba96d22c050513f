// Grouped-query attention for the transformer, dispatched by device and
// LibTorch version:
//   CUDA with LibTorch >= 2.0  at::scaled_dot_product_attention (fused
//                              flash / memory-efficient kernels; softmax
//                              accumulated in fp32 inside the kernel)
//   otherwise                  the explicit math: scores in fp32, masked
//                              softmax, cast back to the model dtype
// Both fold the g query heads that share a KV head into the query-length
// dimension, so K/V are never repeated.
//
// Shapes: q [B, H, T, hd], keys/values [B, kvh, Tk, hd], allowed
// [B, 1, T, Tk] bool (true: query may attend the key; no row all false).
// Returns [B, H, T, hd] in q's dtype.
//
// Thread-safety: pure.
#ifndef COHORT_MODEL_ATTENTION_H_
#define COHORT_MODEL_ATTENTION_H_

#include <ATen/core/Tensor.h>

namespace cohort::model {

at::Tensor GroupedAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& allowed);

// The explicit math path on any device (tests compare the two on a GPU).
at::Tensor GroupedAttentionMath(const at::Tensor& q, const at::Tensor& keys,
                                const at::Tensor& values, const at::Tensor& allowed);

// True when GroupedAttention uses the fused kernel for tensors on `device`.
bool FusedAttentionFor(const at::Tensor& like);

}  // namespace cohort::model

#endif  // COHORT_MODEL_ATTENTION_H_
