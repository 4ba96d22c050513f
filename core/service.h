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
// metrics server, write the port file, run Hooks::on_serving, set health
// SERVING, block until SIGTERM or SIGINT, set NOT_SERVING, run
// Hooks::on_stopping, shut both servers down within
// supervisor.stop_timeout_seconds, return 0.
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
    // After health turns NOT_SERVING, before the servers shut down. Must
    // return promptly (it eats into the stop deadline).
    std::function<void()> on_stopping;
  };

  // Serves `services` (not owned; must outlive the call) until SIGTERM or
  // SIGINT, then stops within the deadline. Returns the process exit code:
  // 0 after a clean stop, 1 if start-up failed (the error is logged).
  int Serve(const std::vector<grpc::Service*>& services, Hooks hooks = {});

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
};

}  // namespace cohort

#endif  // COHORT_CORE_SERVICE_H_
