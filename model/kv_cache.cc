#include "model/kv_cache.h"

#include "model/aten.h"

#include "absl/strings/str_cat.h"
#include "model/model_config.h"

namespace cohort::model {

absl::StatusOr<KvCache> KvCache::Create(const ModelConfig& config, int64_t slots, int64_t max_len,
                                        at::ScalarType dtype, at::Device device) {
  if (slots <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv cache: slots must be positive, got ", slots));
  }
  if (max_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv cache: max_len must be positive, got ", max_len));
  }
  if (config.max_position_embeddings > 0 && max_len > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv cache: max_len ", max_len, " exceeds the model's ",
                     "max_position_embeddings ", config.max_position_embeddings));
  }
  if (config.num_hidden_layers <= 0 || config.num_key_value_heads <= 0 || config.head_dim <= 0) {
    return absl::InvalidArgumentError(
        "kv cache: config needs positive num_hidden_layers, "
        "num_key_value_heads and head_dim");
  }
  KvCache cache;
  cache.max_len_ = max_len;
  cache.lengths_.assign(slots, 0);
  try {
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
      cache.k_.push_back(
          at::zeros({slots, config.num_key_value_heads, max_len, config.head_dim}, options));
      cache.v_.push_back(
          at::zeros({slots, config.num_key_value_heads, max_len, config.head_dim}, options));
    }
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache: cannot allocate ", slots,
                                                     " slots x ", max_len,
                                                     " positions: ", e.what_without_backtrace()));
  }
  cache.bytes_per_position_ = 2 * config.num_hidden_layers * config.num_key_value_heads *
                              config.head_dim * static_cast<int64_t>(c10::elementSize(dtype));
  return cache;
}

void KvCache::CopyPrefix(int64_t src, int64_t dst, int64_t length) {
  if (src != dst && length > 0) {
    for (size_t l = 0; l < k_.size(); ++l) {
      k_[l][dst].narrow(1, 0, length).copy_(k_[l][src].narrow(1, 0, length));
      v_[l][dst].narrow(1, 0, length).copy_(v_[l][src].narrow(1, 0, length));
    }
  }
  lengths_[dst] = length;
}

KvCache::Prefix KvCache::SavePrefix(int64_t slot, int64_t length) const {
  Prefix prefix;
  prefix.length = length;
  for (size_t l = 0; l < k_.size(); ++l) {
    prefix.k.push_back(k_[l][slot].narrow(1, 0, length).clone());
    prefix.v.push_back(v_[l][slot].narrow(1, 0, length).clone());
  }
  return prefix;
}

void KvCache::LoadPrefix(const Prefix& prefix, int64_t slot) {
  if (prefix.length > 0) {
    for (size_t l = 0; l < k_.size(); ++l) {
      k_[l][slot].narrow(1, 0, prefix.length).copy_(prefix.k[l]);
      v_[l][slot].narrow(1, 0, prefix.length).copy_(prefix.v[l]);
    }
  }
  lengths_[slot] = prefix.length;
}

}  // namespace cohort::model
