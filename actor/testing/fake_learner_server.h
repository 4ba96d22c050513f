// A real cohort.v1.Learner gRPC server over a FakeLearner's in-memory
// ledger, on an ephemeral loopback port: the learner side of actor tests
// that run real processes or real channels.
//
//   FakeLearner ledger(options);
//   auto server = FakeLearnerServer::Start(&ledger);
//   // cohort-actor --learner (*server)->address()
#ifndef COHORT_ACTOR_TESTING_FAKE_LEARNER_SERVER_H_
#define COHORT_ACTOR_TESTING_FAKE_LEARNER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "actor/testing/fakes.h"
#include "core/rpc.h"

namespace cohort::actor::testing {

class FakeLearnerServer {
 public:
  // `ledger` is not owned and must outlive the server. `port` 0 picks one.
  static absl::StatusOr<std::unique_ptr<FakeLearnerServer>> Start(FakeLearner* ledger,
                                                                  int port = 0);
  ~FakeLearnerServer();
  std::string address() const { return server_->address(); }
  int port() const { return server_->port(); }
  void Shutdown() { server_->Shutdown(absl::Seconds(1)); }

 private:
  class Service;
  FakeLearnerServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<RpcServer> server_;
};

}  // namespace cohort::actor::testing

#endif  // COHORT_ACTOR_TESTING_FAKE_LEARNER_SERVER_H_
