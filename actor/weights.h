// A policy version's weights in host memory, as they arrive from the
// learner's FetchPolicy stream: one contiguous little-endian byte buffer per
// tensor, in stream order. Torch-free, so the rollout loop and the weight
// client build and test without LibTorch; the engine-backed Generator turns
// it into tensors.
//
// Thread-safety: a value type; shared as shared_ptr<const HostWeights> once
// complete, which is safe to read from any thread.
#ifndef COHORT_ACTOR_WEIGHTS_H_
#define COHORT_ACTOR_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "cohort/v1/common.pb.h"

namespace cohort::actor {

struct HostTensor {
  std::string name;  // Hugging Face tensor name
  cohort::v1::DType dtype = cohort::v1::DTYPE_UNSPECIFIED;
  std::vector<int64_t> shape;
  std::string data;  // exactly tensor_bytes bytes
};

struct HostWeights {
  int64_t version = 0;
  std::vector<HostTensor> tensors;  // stream order
  uint32_t crc32c = 0;              // over every tensor's bytes in order

  int64_t bytes() const {
    int64_t n = 0;
    for (const HostTensor& t : tensors) n += static_cast<int64_t>(t.data.size());
    return n;
  }
};

// Bytes per element of `dtype`; 0 for DTYPE_UNSPECIFIED or unknown values.
int64_t DTypeBytes(cohort::v1::DType dtype);

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_WEIGHTS_H_
