// A parameter converted into the bytes the learner serves (WeightTensor,
// learner/trainer_interface.h): one place for Trainer::ExportWeights and
// WeightServer, so both publish the same bytes for the same weights.
// Links LibTorch (the weight store and its fetchers do not).
#ifndef COHORT_LEARNER_SERVED_WEIGHTS_H_
#define COHORT_LEARNER_SERVED_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "learner/trainer_interface.h"
#include "model/aten.h"

namespace cohort::learner {

// `w` (any dtype, on the CPU) copied and converted into a fresh buffer of
// the served dtype: bfloat16 when `bf16`, else float32. Throws what ATen
// throws.
inline WeightTensor ServedWeightTensor(const std::string& name, const at::Tensor& w, bool bf16) {
  const at::ScalarType type = bf16 ? at::kBFloat16 : at::kFloat;
  WeightTensor wt;
  wt.name = name;
  wt.dtype = bf16 ? WeightDType::kBF16 : WeightDType::kF32;
  wt.shape.assign(w.sizes().begin(), w.sizes().end());
  wt.size = w.numel() * static_cast<int64_t>(c10::elementSize(type));
  std::shared_ptr<uint8_t[]> bytes = AllocateWeightBytes(wt.size);
  if (wt.size > 0) {
    at::from_blob(bytes.get(), w.sizes(), at::TensorOptions().dtype(type)).copy_(w.detach());
  }
  wt.data = std::move(bytes);
  return wt;
}

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_SERVED_WEIGHTS_H_
