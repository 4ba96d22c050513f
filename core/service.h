// The main loop shared by the service binaries (cohort-learner,
// cohort-actor, cohort-reward): common flags, config, logging, the gRPC
// server (with health and reflection), the /metrics server, a port file,
// and a clean stop on SIGTERM / SIGINT within a deadline.
//
//   int main(int argc, char** argv) {
//     cohort::ServiceMain service("reward", "cohort-reward", "Serves ...");
//     if (!service.Init(argc, argv)) return 2;   // exits 0 on --help
//     MyService impl(service.config());
//     return service.Serve({&impl});
//   }
//
// Lifecycle of Serve(): start the gRPC server (health NOT_SERVING) and the
// metrics server on the Listen address the binary passes (flags override
// it), write the port file, run Hooks::on_serving, set health SERVING, block
// until SIGTERM or SIGINT or RequestStop(), set NOT_SERVING, run
// Hooks::on_stopping (within Hooks::stopping_budget), shut both servers down
// within supervisor.stop_timeout_seconds, and return the exit code: 0 after
// a signal or RequestStop(OK), 1 after RequestStop(error) or a failed
// start-up.
//
// Signals: Init() blocks SIGTERM and SIGINT in the calling thread before
// any other thread exists, so every thread inherits the mask and the
// signals are only ever consumed through a signalfd by Serve(); no work
// runs in a signal handler.
#ifndef COHORT_CORE_SERVICE_H_
#define COHORT_CORE_SERVICE_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "core/flags.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace cohort {

// Where a service's ports are published for whoever started it: a JSON
// object {"grpc_port":N,"metrics_port":M,"pid":P}, written atomically
// (temporary file + rename) once both servers are bound.
struct PortFile {
  int grpc_port = 0;
  int metrics_port = 0;
  pid_t pid = 0;
};
absl::Status WritePortFile(const std::string& path, const PortFile& ports);
// NOT_FOUND if the file does not exist (yet); INVALID_ARGUMENT if it is not
// a port file.
absl::StatusOr<PortFile> ReadPortFile(const std::string& path);

// Blocks SIGTERM and SIGINT in the calling thread (threads started later
// inherit the mask) and returns a non-blocking signalfd that becomes
// readable when one of them arrives. Call before starting any thread.
// Threads that existed before (started by libraries' static initialisers)
// do not block them: a handler installed here forwards a signal delivered
// there to the calling thread, where it stays pending for the signalfd.
absl::StatusOr<int> BlockStopSignals();

// Reads one pending signal from a BlockStopSignals() fd; 0 if none.
int ReadStopSignal(int signal_fd);

class ServiceMain {
 public:
  // `role` is "learner", "reward" or "actor": it names the process in logs
  // and selects the config section that gives the default host and ports.
  // `program` and `description` head --help.
  ServiceMain(std::string role, std::string program, std::string description);
  ~ServiceMain();
  ServiceMain(const ServiceMain&) = delete;
  ServiceMain& operator=(const ServiceMain&) = delete;

  // Add binary-specific flags here before Init().
  FlagSet& flags() { return flags_; }

  // Blocks SIGTERM/SIGINT, parses flags (prints help and exits 0 on
  // --help), loads the config with the --set overrides and initialises
  // logging. Call first in main(), before any thread is started. On error
  // prints it to stderr and returns false (exit with 2).
  bool Init(int argc, char** argv);

  // Valid after Init().
  const RunConfig& config() const { return config_; }
  const std::string& role() const { return role_; }

  struct Hooks {
    // After both servers are up and the port file is written, before the
    // health status turns SERVING. A non-OK status aborts start-up.
    std::function<absl::Status()> on_serving;
    // After health turns NOT_SERVING, before the servers shut down (RPCs
    // are still answered while it runs, e.g. actors handing leases back).
    // It should finish within stopping_budget (e.g. the learner's final
    // checkpoint within learner.checkpoint_on_stop_seconds); Serve logs an
    // overrun but cannot cut it short.
    std::function<void()> on_stopping;
    absl::Duration stopping_budget = absl::Seconds(5);
  };

  // Where to listen when the flags do not say: the binary's own section
  // (e.g. learner.host/port/metrics_port), not chosen by role name.
  struct Listen {
    std::string host = "127.0.0.1";
    int port = 0;          // 0 picks a free port
    int metrics_port = 0;  // 0 picks a free port
  };

  // Serves `services` (not owned; must outlive the call) until SIGTERM,
  // SIGINT or RequestStop(), then stops within the deadline. Returns the
  // process exit code (see the file comment).
  int Serve(const std::vector<grpc::Service*>& services, Hooks hooks, const Listen& listen);
  // The same, listening where the config section named by the role says
  // (learner.*, reward.*; actors: 127.0.0.1, actor.metrics_port).
  int Serve(const std::vector<grpc::Service*>& services, Hooks hooks);
  int Serve(const std::vector<grpc::Service*>& services);

  // Ends Serve() as a signal would, from any thread (a role that finished
  // its work, or cannot go on). Serve() returns 0 for OK, else 1 and logs
  // `status`. The first call wins; later ones are ignored. Before Serve()
  // runs, the request is kept and Serve() stops right after start-up.
  void RequestStop(absl::Status status);

 private:
  const std::string role_;
  FlagSet flags_;
  // Flag values.
  std::string config_path_;
  std::vector<std::string> overrides_;
  std::string host_;
  int64_t port_ = -1;
  int64_t metrics_port_ = -1;
  std::string port_file_;
  std::string log_level_;

  RunConfig config_;
  int signal_fd_ = -1;
  int wake_fd_ = -1;  // eventfd RequestStop() writes

  absl::Mutex stop_mu_;
  bool stop_requested_ ABSL_GUARDED_BY(stop_mu_) = false;
  absl::Status stop_status_ ABSL_GUARDED_BY(stop_mu_);
};

}  // namespace cohort

#endif  // COHORT_CORE_SERVICE_H_
