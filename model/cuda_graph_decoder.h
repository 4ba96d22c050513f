// Decode steps replayed from CUDA graphs, one graph per (batch bucket,
// length bucket), for a Transformer on a GPU.
//
// Decode(slots, tokens) has Transformer::Decode's contract and result (same
// logits up to rounding; cuda_graph_test checks it). A step covers rows
// [0, B) of the cache, B the smallest batch bucket above the highest slot
// decoded, and reads keys [0, L), L the smallest length bucket holding every
// decoded slot's next position; keys past a slot's length are masked.
// Bucket rows that are not decoded this step write one throw-away K/V row
// at position max_len - 1 of their slot (never a valid row of a slot that
// can still decode), and their logits are dropped.
//
// Graphs are captured lazily on first use of a bucket (about one decode
// step each) into one shared memory pool, and dropped when the model's
// weight tensors change (SwapWeights installs new tensors: the next step
// recaptures). The KvCache and the Transformer must outlive the decoder and
// keep their tensors (the graphs read them by address).
//
// Needs a LibTorch with CUDA and a model on a CUDA device: Create returns
// FailedPrecondition otherwise (Unimplemented in a build whose LibTorch has
// no CUDA), and callers use Transformer::Decode instead.
//
// Thread-safety: not thread-safe; used by the thread that steps the model.
#ifndef COHORT_MODEL_CUDA_GRAPH_DECODER_H_
#define COHORT_MODEL_CUDA_GRAPH_DECODER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "model/kv_cache.h"
#include "model/transformer.h"

namespace cohort::model {

struct CudaGraphOptions {
  // Empty: powers of two up to the cache's slot count, plus the slot count.
  std::vector<int64_t> batch_buckets;
  // Empty: 256, 512, ... up to the cache's max_len, plus max_len.
  std::vector<int64_t> length_buckets;
};

// True when this build's LibTorch has CUDA and a device is present.
bool CudaGraphsAvailable();

class CudaGraphDecoder {
 public:
  static absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> Create(const Transformer& model,
                                                                  KvCache& cache,
                                                                  CudaGraphOptions options = {});
  ~CudaGraphDecoder();

  // As Transformer::Decode(cache, slots, tokens): logits [n, vocab] fp32 on
  // the model's device, lengths advanced.
  absl::StatusOr<at::Tensor> Decode(const std::vector<int64_t>& slots,
                                    const std::vector<int32_t>& tokens);

  int64_t graphs_captured() const;  // since Create, recaptures included
  int64_t replays() const;

 private:
  class Impl;
  explicit CudaGraphDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::model

#endif  // COHORT_MODEL_CUDA_GRAPH_DECODER_H_
