// The actor's view of cohort.v1.Learner: one blocking call per RPC, each
// with a deadline. No retries here; the rollout loop decides what a failure
// means (UNAVAILABLE / DEADLINE_EXCEEDED: the learner is away, back off and
// reconnect; FAILED_PRECONDITION on Join: refused, exit).
//
// GrpcLearnerClient speaks gRPC over a channel (core/rpc.h MakeChannel, so
// TLS and the bearer token apply). Its FetchPolicy reads each chunk as raw
// bytes and hands the payload over as views into the received slices
// (ParseWeightChunk): a chunk's bytes are not copied before the callback
// reads them. FakeLearner (actor/testing/fakes.h) is
// an in-memory learner for tests.
//
// Thread-safety: implementations are thread-safe (the heartbeat, weight
// and control threads call concurrently).
#ifndef COHORT_ACTOR_LEARNER_CLIENT_H_
#define COHORT_ACTOR_LEARNER_CLIENT_H_

#include <functional>
#include <memory>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "actor/chunk_view.h"
#include "cohort/v1/learner.pb.h"

namespace cohort::actor {

class LearnerClient {
 public:
  virtual ~LearnerClient() = default;

  virtual absl::StatusOr<cohort::v1::JoinResponse> Join(const cohort::v1::JoinRequest& request) = 0;
  virtual absl::StatusOr<cohort::v1::LeasePromptsResponse> LeasePrompts(
      const cohort::v1::LeasePromptsRequest& request) = 0;
  virtual absl::StatusOr<cohort::v1::HeartbeatResponse> Heartbeat(
      const cohort::v1::HeartbeatRequest& request) = 0;
  virtual absl::StatusOr<cohort::v1::SubmitGroupResponse> SubmitGroup(
      const cohort::v1::SubmitGroupRequest& request) = 0;
  // Streams a version; `on_chunk` is called for each chunk in order and may
  // return an error to cancel the stream (that error is returned). The view
  // (actor/chunk_view.h) is valid only during the call.
  virtual absl::Status FetchPolicy(
      const cohort::v1::FetchPolicyRequest& request,
      const std::function<absl::Status(const ChunkView&)>& on_chunk) = 0;
};

struct GrpcLearnerClientOptions {
  absl::Duration rpc_timeout = absl::Seconds(10);  // Join, LeasePrompts, Heartbeat, SubmitGroup
  // FetchPolicy: the whole stream must finish within this.
  absl::Duration fetch_timeout = absl::Seconds(600);
};

std::unique_ptr<LearnerClient> MakeGrpcLearnerClient(std::shared_ptr<grpc::Channel> channel,
                                                     GrpcLearnerClientOptions options = {});

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_LEARNER_CLIENT_H_
