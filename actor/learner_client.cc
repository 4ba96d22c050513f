#include "actor/learner_client.h"

#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cohort/v1/learner.grpc.pb.h"
#include "core/grpc_status.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;

absl::Status CallStatus(const char* rpc, const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status s = FromGrpcStatus(status);
  return absl::Status(s.code(), absl::StrCat("Learner.", rpc, ": ", s.message()));
}

class GrpcLearnerClient final : public LearnerClient {
 public:
  GrpcLearnerClient(std::shared_ptr<grpc::Channel> channel, GrpcLearnerClientOptions options)
      : channel_(channel),
        stub_(v1::Learner::NewStub(channel)),
        options_(options),
        fetch_method_name_(absl::StrCat("/", v1::Learner::service_full_name(), "/FetchPolicy")),
        fetch_method_(fetch_method_name_.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING) {}

  absl::StatusOr<v1::JoinResponse> Join(const v1::JoinRequest& request) override {
    return Unary<v1::JoinResponse>("Join", [&](grpc::ClientContext* c, v1::JoinResponse* r) {
      return stub_->Join(c, request, r);
    });
  }
  absl::StatusOr<v1::LeasePromptsResponse> LeasePrompts(
      const v1::LeasePromptsRequest& request) override {
    return Unary<v1::LeasePromptsResponse>(
        "LeasePrompts", [&](grpc::ClientContext* c, v1::LeasePromptsResponse* r) {
          return stub_->LeasePrompts(c, request, r);
        });
  }
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request) override {
    return Unary<v1::HeartbeatResponse>("Heartbeat",
                                        [&](grpc::ClientContext* c, v1::HeartbeatResponse* r) {
                                          return stub_->Heartbeat(c, request, r);
                                        });
  }
  absl::StatusOr<v1::SubmitGroupResponse> SubmitGroup(
      const v1::SubmitGroupRequest& request) override {
    return Unary<v1::SubmitGroupResponse>("SubmitGroup",
                                          [&](grpc::ClientContext* c, v1::SubmitGroupResponse* r) {
                                            return stub_->SubmitGroup(c, request, r);
                                          });
  }

  absl::Status FetchPolicy(const v1::FetchPolicyRequest& request,
                           const std::function<absl::Status(const ChunkView&)>& on_chunk) override {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.fetch_timeout));
    // The stub's method, read as raw messages (the generated stub would
    // parse each chunk into a WeightChunk, copying its payload).
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel_.get(), fetch_method_,
                                                                      &context, request));
    grpc::ByteBuffer message;
    std::vector<grpc::Slice> slices;
    std::vector<absl::string_view> pieces, payload;
    v1::WeightChunk meta;
    absl::Status callback_status;
    while (reader->Read(&message)) {
      slices.clear();
      pieces.clear();
      callback_status = FromGrpcStatus(message.Dump(&slices));
      if (callback_status.ok()) {
        for (const grpc::Slice& s : slices) {
          pieces.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
        }
        callback_status = ParseWeightChunk(pieces, &meta, &payload);
        if (!callback_status.ok()) {
          callback_status =
              absl::DataLossError(absl::StrCat("Learner.FetchPolicy: ", callback_status.message()));
        }
      }
      if (callback_status.ok()) callback_status = on_chunk(ChunkView(meta, payload));
      if (!callback_status.ok()) {
        context.TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    if (!callback_status.ok()) return callback_status;
    return CallStatus("FetchPolicy", status);
  }

 private:
  template <typename Response, typename Call>
  absl::StatusOr<Response> Unary(const char* rpc, Call call) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    Response response;
    grpc::Status status = call(&context, &response);
    if (!status.ok()) return CallStatus(rpc, status);
    return response;
  }

  const std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Learner::Stub> stub_;
  const GrpcLearnerClientOptions options_;
  const std::string fetch_method_name_;
  const grpc::internal::RpcMethod fetch_method_;  // names fetch_method_name_
};

}  // namespace

std::unique_ptr<LearnerClient> MakeGrpcLearnerClient(std::shared_ptr<grpc::Channel> channel,
                                                     GrpcLearnerClientOptions options) {
  return std::make_unique<GrpcLearnerClient>(std::move(channel), options);
}

}  // namespace cohort::actor
