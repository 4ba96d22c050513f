// The one conversion between absl::Status and grpc::Status. Part of the
// cohort_rpc library (which links gRPC); cohort_base stays gRPC-free.
//
// The canonical codes are numerically identical in both libraries, so the
// conversion keeps the code and the message. Transient failures should be
// expressed as UNAVAILABLE by the code that produces them so callers retry.
#ifndef COHORT_CORE_GRPC_STATUS_H_
#define COHORT_CORE_GRPC_STATUS_H_

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace cohort {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace cohort

#endif  // COHORT_CORE_GRPC_STATUS_H_
