// cohort-learner: serves cohort.v1.Learner (actor-facing) and cohort.v1.Admin
// (operator-facing), plus health, reflection and /metrics.
//
// Until the training issue lands, every RPC answers UNIMPLEMENTED with a
// message saying so: the process starts, reports SERVING and stops cleanly,
// and nothing pretends to train.
#include <string>

#include <grpcpp/grpcpp.h>

#include "cohort/v1/admin.grpc.pb.h"
#include "cohort/v1/learner.grpc.pb.h"
#include "core/service.h"

namespace {

grpc::Status NotYet(const char* method) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string(method) +
                          " is not implemented yet: the learner (ledger, leases, training, "
                          "weight publication) lands with the GRPO training issue; this "
                          "build only serves health and metrics");
}

class LearnerPlaceholder final : public cohort::v1::Learner::Service {
  grpc::Status Join(grpc::ServerContext*, const cohort::v1::JoinRequest*,
                    cohort::v1::JoinResponse*) override {
    return NotYet("cohort.v1.Learner/Join");
  }
  grpc::Status LeasePrompts(grpc::ServerContext*, const cohort::v1::LeasePromptsRequest*,
                            cohort::v1::LeasePromptsResponse*) override {
    return NotYet("cohort.v1.Learner/LeasePrompts");
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const cohort::v1::HeartbeatRequest*,
                         cohort::v1::HeartbeatResponse*) override {
    return NotYet("cohort.v1.Learner/Heartbeat");
  }
  grpc::Status SubmitGroup(grpc::ServerContext*, const cohort::v1::SubmitGroupRequest*,
                           cohort::v1::SubmitGroupResponse*) override {
    return NotYet("cohort.v1.Learner/SubmitGroup");
  }
  grpc::Status FetchPolicy(grpc::ServerContext*, const cohort::v1::FetchPolicyRequest*,
                           grpc::ServerWriter<cohort::v1::WeightChunk>*) override {
    return NotYet("cohort.v1.Learner/FetchPolicy");
  }
};

class AdminPlaceholder final : public cohort::v1::Admin::Service {
  grpc::Status GetStatus(grpc::ServerContext*, const cohort::v1::GetStatusRequest*,
                         cohort::v1::RunStatus*) override {
    return NotYet("cohort.v1.Admin/GetStatus");
  }
  grpc::Status Checkpoint(grpc::ServerContext*, const cohort::v1::CheckpointRequest*,
                          cohort::v1::CheckpointResponse*) override {
    return NotYet("cohort.v1.Admin/Checkpoint");
  }
  grpc::Status Pause(grpc::ServerContext*, const cohort::v1::PauseRequest*,
                     cohort::v1::PauseResponse*) override {
    return NotYet("cohort.v1.Admin/Pause");
  }
  grpc::Status Resume(grpc::ServerContext*, const cohort::v1::ResumeRequest*,
                      cohort::v1::ResumeResponse*) override {
    return NotYet("cohort.v1.Admin/Resume");
  }
  grpc::Status Drain(grpc::ServerContext*, const cohort::v1::DrainRequest*,
                     cohort::v1::DrainResponse*) override {
    return NotYet("cohort.v1.Admin/Drain");
  }
};

}  // namespace

int main(int argc, char** argv) {
  cohort::ServiceMain service(
      "learner", "cohort-learner",
      "The learner of a cohort run: serves cohort.v1.Learner (actors join, "
      "lease prompts, submit scored groups, fetch weights) and "
      "cohort.v1.Admin (status, checkpoint, pause, resume, drain), plus "
      "grpc.health.v1, reflection and /metrics. Stops cleanly on SIGTERM or "
      "SIGINT within supervisor.stop_timeout_seconds. Until the training "
      "issue lands, its RPCs answer UNIMPLEMENTED.");
  if (!service.Init(argc, argv)) return 2;
  LearnerPlaceholder learner;
  AdminPlaceholder admin;
  return service.Serve({&learner, &admin});
}
