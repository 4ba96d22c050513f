// Random fp32 weights of a model as the actor receives them (HostWeights
// with the whole-version CRC-32C), for tests and benchmarks that serve a
// fake learner. Header-only because it needs LibTorch and the
// cohort_actor_testing library is torch-free: include it only from targets
// that link cohort_model.
#ifndef COHORT_ACTOR_TESTING_RANDOM_WEIGHTS_H_
#define COHORT_ACTOR_TESTING_RANDOM_WEIGHTS_H_

#include <cstdint>

#include "model/aten.h"

#include "actor/weights.h"
#include "cohort/v1/common.pb.h"
#include "core/crc32c.h"
#include "model/checkpoint.h"

namespace cohort::actor::testing {

// Version `version` of `config`: random weights of seed `version`.
inline HostWeights RandomHostWeights(const model::ModelConfig& config, int64_t version) {
  model::TensorMap map = model::RandomInitWeights(config, static_cast<uint64_t>(version));
  HostWeights w;
  w.version = version;
  for (const model::TensorSpec& spec : model::ExpectedTensors(config)) {
    at::Tensor t = map.at(spec.name).contiguous();
    HostTensor& h = w.tensors.emplace_back();
    h.name = spec.name;
    h.dtype = v1::DTYPE_F32;
    h.shape = spec.shape;
    h.data.assign(static_cast<const char*>(t.data_ptr()), t.numel() * sizeof(float));
    w.crc32c = Crc32cExtend(w.crc32c, h.data.data(), h.data.size());
  }
  return w;
}

}  // namespace cohort::actor::testing

#endif  // COHORT_ACTOR_TESTING_RANDOM_WEIGHTS_H_
