// The key/value cache of the generation engine: a fixed pool of sequence
// slots.
//
// Layout: per layer, one preallocated K and one V tensor of shape
// [slots, kv_heads, max_len, head_dim] in the model's dtype and device
// (contiguous, not paged). Slot s holds positions [0, length(s)). A decode
// step reads only the first max(length) positions of the slots it runs.
// Memory: 2 * layers * slots * kv_heads * max_len * head_dim * sizeof(dtype).
//
// Prefix sharing: a group's prompt is prefilled once into one slot; its K/V
// rows are then copied into the other samples' slots (CopyPrefix), or kept in
// a Prefix snapshot for samples that start later, when a slot frees up.
//
// Thread-safety: not thread-safe; owned and used by one thread (the engine's
// loop).
#ifndef COHORT_MODEL_KV_CACHE_H_
#define COHORT_MODEL_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"

namespace cohort::model {

struct ModelConfig;

class KvCache {
 public:
  // A copy of the first `length` positions of a slot, every layer.
  struct Prefix {
    std::vector<at::Tensor> k, v;  // per layer [kv_heads, length, head_dim]
    int64_t length = 0;
  };

  // Allocates the pool (zero-filled). InvalidArgument for non-positive sizes
  // or max_len above the model's max_position_embeddings; ResourceExhausted
  // if the allocation fails.
  static absl::StatusOr<KvCache> Create(const ModelConfig& config, int64_t slots, int64_t max_len,
                                        at::ScalarType dtype, at::Device device);

  int64_t num_slots() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_len() const { return max_len_; }
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
  int64_t length(int64_t slot) const { return lengths_[slot]; }
  void set_length(int64_t slot, int64_t length) { lengths_[slot] = length; }
  // Empties a slot (its rows are overwritten by the next user).
  void Reset(int64_t slot) { lengths_[slot] = 0; }

  // [slots, kv_heads, max_len, head_dim] for one layer.
  at::Tensor& k(int64_t layer) { return k_[layer]; }
  at::Tensor& v(int64_t layer) { return v_[layer]; }

  // dst := the first `length` positions of src (length(dst) = length).
  void CopyPrefix(int64_t src, int64_t dst, int64_t length);
  // Snapshot of the first `length` positions of `slot`.
  Prefix SavePrefix(int64_t slot, int64_t length) const;
  // slot := prefix (length(slot) = prefix.length).
  void LoadPrefix(const Prefix& prefix, int64_t slot);

  // Bytes of K and V that attention reads for `length` positions of a slot.
  int64_t BytesPerPosition() const { return bytes_per_position_; }

 private:
  KvCache() = default;

  std::vector<at::Tensor> k_, v_;
  std::vector<int64_t> lengths_;
  int64_t max_len_ = 0;
  int64_t bytes_per_position_ = 0;
};

}  // namespace cohort::model

#endif  // COHORT_MODEL_KV_CACHE_H_
