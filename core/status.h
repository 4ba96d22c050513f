// Status helpers used across cohort.
//
// absl::Status / absl::StatusOr inside the process; grpc::Status only at the
// RPC edge (see core/grpc_status.h).
#ifndef COHORT_CORE_STATUS_H_
#define COHORT_CORE_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define COHORT_STATUS_CONCAT_INNER_(x, y) x##y
#define COHORT_STATUS_CONCAT_(x, y) COHORT_STATUS_CONCAT_INNER_(x, y)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status _cohort_status = (expr);          \
    if (!_cohort_status.ok()) return _cohort_status; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>);
// returns its status on error, otherwise moves the value into `lhs`, which
// may be a declaration (`auto x`) or an existing lvalue.
#define ASSIGN_OR_RETURN(lhs, expr) \
  COHORT_ASSIGN_OR_RETURN_IMPL_(COHORT_STATUS_CONCAT_(_cohort_statusor_, __LINE__), lhs, expr)

#define COHORT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace cohort {

// Prepends context to a non-OK status, keeping its code:
// "loading config: <original message>".
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(absl::string_view(context.data(), context.size()),
                                                  ": ", status.message()));
}

}  // namespace cohort

#endif  // COHORT_CORE_STATUS_H_
