// Include this instead of <ATen/ATen.h> in cohort code. With clang 14,
// libstdc++ 12 and -std=c++20, <ATen/ATen.h> (LibTorch 1.13) fails to compile
// ("arithmetic on a pointer to an incomplete type 'c10::IValue'") unless
// <ATen/core/ivalue.h> is included before it.
#ifndef COHORT_MODEL_ATEN_H_
#define COHORT_MODEL_ATEN_H_

// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
#include <ATen/TensorIndexing.h>
// clang-format on

#endif  // COHORT_MODEL_ATEN_H_
