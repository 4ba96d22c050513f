#include "actor/testing/fake_learner_server.h"

#include <string>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "cohort/v1/learner.grpc.pb.h"
#include "core/grpc_status.h"

namespace cohort::actor::testing {

namespace v1 = ::cohort::v1;

class FakeLearnerServer::Service final : public v1::Learner::Service {
 public:
  explicit Service(FakeLearner* ledger) : ledger_(ledger) {}

  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest* request,
                    v1::JoinResponse* response) override {
    return Reply(ledger_->Join(*request), response);
  }
  grpc::Status LeasePrompts(grpc::ServerContext*, const v1::LeasePromptsRequest* request,
                            v1::LeasePromptsResponse* response) override {
    return Reply(ledger_->LeasePrompts(*request), response);
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    return Reply(ledger_->Heartbeat(*request), response);
  }
  grpc::Status SubmitGroup(grpc::ServerContext*, const v1::SubmitGroupRequest* request,
                           v1::SubmitGroupResponse* response) override {
    return Reply(ledger_->SubmitGroup(*request), response);
  }
  grpc::Status FetchPolicy(grpc::ServerContext*, const v1::FetchPolicyRequest* request,
                           grpc::ServerWriter<v1::WeightChunk>* writer) override {
    std::string scratch;
    return ToGrpcStatus(ledger_->FetchPolicy(*request, [&](const ChunkView& view) {
      v1::WeightChunk chunk = view.meta();
      const absl::string_view data = view.Flatten(&scratch);
      chunk.set_data(data.data(), data.size());
      return writer->Write(chunk) ? absl::OkStatus() : absl::CancelledError("client went away");
    }));
  }

 private:
  template <typename T>
  static grpc::Status Reply(absl::StatusOr<T> result, T* response) {
    if (!result.ok()) return ToGrpcStatus(result.status());
    *response = *std::move(result);
    return grpc::Status::OK;
  }
  FakeLearner* const ledger_;
};

absl::StatusOr<std::unique_ptr<FakeLearnerServer>> FakeLearnerServer::Start(FakeLearner* ledger,
                                                                            int port) {
  std::unique_ptr<FakeLearnerServer> s(new FakeLearnerServer());
  s->service_ = std::make_unique<Service>(ledger);
  ServerOptions options;
  options.port = port;
  absl::StatusOr<std::unique_ptr<RpcServer>> server =
      RpcServer::Start(options, {s->service_.get()});
  if (!server.ok()) return server.status();
  s->server_ = *std::move(server);
  return s;
}

FakeLearnerServer::~FakeLearnerServer() {
  if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
}

}  // namespace cohort::actor::testing
