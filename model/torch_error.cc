#include "model/torch_error.h"

#include <new>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace cohort::model {

absl::Status TorchError(absl::string_view where, const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of memory (", e.what(), ")"));
  }
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    const std::string message = c10->what_without_backtrace();
    // c10::OutOfMemoryError derives from c10::Error (the CUDA caching
    // allocator throws it).
    if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(where, ": out of device memory: ", message));
    }
    return absl::InternalError(absl::StrCat(where, ": ", message));
  }
  return absl::InternalError(absl::StrCat(where, ": ", e.what()));
}

absl::Status UnknownTorchError(absl::string_view where) {
  return absl::InternalError(absl::StrCat(where, ": unknown exception"));
}

}  // namespace cohort::model
