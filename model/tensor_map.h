// The weights of a model by Hugging Face tensor name
// ("model.layers.0.self_attn.q_proj.weight", ...). Shared by the checkpoint
// loader/saver and the transformer so both speak one type.
#ifndef COHORT_MODEL_TENSOR_MAP_H_
#define COHORT_MODEL_TENSOR_MAP_H_

#include <string>
#include <unordered_map>

#include <ATen/core/Tensor.h>

namespace cohort::model {

using TensorMap = std::unordered_map<std::string, at::Tensor>;

}  // namespace cohort::model

#endif  // COHORT_MODEL_TENSOR_MAP_H_
