// One conversion of LibTorch exceptions into absl::Status, used at every
// torch entry point of model/ (and by the learner and actor at theirs), so a
// c10::Error never unwinds through a caller that expects a status.
//
//   c10::OutOfMemoryError, std::bad_alloc  -> ResourceExhausted
//   c10::Error, other std::exception       -> Internal
// The message is "<where>: <what>" without c10's C++ backtrace.
//
// GuardTorch runs a callable returning absl::Status or absl::StatusOr<T> and
// turns anything it throws into such a status:
//   return GuardTorch("decode", [&]() -> absl::StatusOr<at::Tensor> { ... });
//
// Thread-safety: pure functions.
#ifndef COHORT_MODEL_TORCH_ERROR_H_
#define COHORT_MODEL_TORCH_ERROR_H_

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cohort::model {

absl::Status TorchError(absl::string_view where, const std::exception& e);

// For catch (...) of something that is not a std::exception.
absl::Status UnknownTorchError(absl::string_view where);

template <typename F>
auto GuardTorch(absl::string_view where, F&& f) -> decltype(f()) {
  try {
    return std::forward<F>(f)();
  } catch (const std::exception& e) {
    return TorchError(where, e);
  } catch (...) {
    return UnknownTorchError(where);
  }
}

}  // namespace cohort::model

#endif  // COHORT_MODEL_TORCH_ERROR_H_
