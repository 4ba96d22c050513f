// gRPC plumbing shared by every cohort process: a server that always serves
// grpc.health.v1 and reflection, channels, TLS / mutual TLS from PEM files
// (reloaded when the files change), a bearer token checked on every call,
// and retry with exponential backoff for UNAVAILABLE.
//
//   ServerOptions options;                      // 127.0.0.1, port 0
//   ASSIGN_OR_RETURN(auto server, RpcServer::Start(options, {&reward_service}));
//   COHORT_LOG(INFO) << "serving on " << server->address();
//   ...
//   server->Shutdown(absl::Seconds(5));
//
// Authentication: when ServerOptions::bearer_token is set, every call,
// health checks and reflection included, must carry the metadata
// "authorization: Bearer <token>"; otherwise it fails with UNAUTHENTICATED
// before reaching a handler. Channels made by MakeChannel with the same
// token add it to every call, so probes that use MakeChannel (cohort run,
// tests) pass; Kubernetes gRPC probes cannot send metadata, so deployments
// with a token use an exec probe (see docs/operations.md).
#ifndef COHORT_CORE_RPC_H_
#define COHORT_CORE_RPC_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/impl/codegen/service_type.h>
#include <grpcpp/support/status.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/config.h"

namespace grpc {
class Server;
class ServerContext;
}  // namespace grpc

namespace cohort {

// PEM files. Paths are re-read every `refresh_seconds`; a changed
// certificate or key is used for new connections without a restart.
struct TlsConfig {
  std::string cert_file;             // server: its certificate chain; client: its
                                     // client certificate (mutual TLS)
  std::string key_file;              // private key for cert_file
  std::string ca_file;               // server: CA for client certs; client: CA that
                                     // verifies the server ("" = system roots)
  bool require_client_cert = false;  // server only
  int refresh_seconds = 10;          // file watcher period; >= 1

  // True when any file is set. A server needs cert_file and key_file.
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0 picks a free port; see RpcServer::port()
  TlsConfig tls;
  std::string bearer_token;  // "" = no token required
  // A second token that is also accepted and marks the call as an admin
  // call (CallHasAdminToken); "" = none.
  std::string admin_token;
  int max_message_bytes = 64 << 20;
  // Health status of "" and every service right after Start().
  bool serving_at_start = true;
};

// A started gRPC server. Thread-safe.
class RpcServer {
 public:
  // Builds, binds and starts. `services` are not owned and must outlive the
  // server. Adds grpc.health.v1.Health and reflection. Errors: bad TLS
  // files (INVALID_ARGUMENT), port in use (UNAVAILABLE).
  static absl::StatusOr<std::unique_ptr<RpcServer>> Start(
      const ServerOptions& options, const std::vector<grpc::Service*>& services);
  ~RpcServer();  // Shutdown(absl::Seconds(5)) if not done yet.

  int port() const { return port_; }
  std::string address() const;  // "host:port" with the bound port
  // Full names of the services served (including health and reflection).
  const std::vector<std::string>& service_names() const { return names_; }

  // Sets the grpc.health.v1 status of "" and of every service. No effect
  // after Shutdown.
  void SetServing(bool serving) ABSL_LOCKS_EXCLUDED(mu_);

  // NOT_SERVING first, then stops accepting calls and waits for running
  // calls until `deadline` from now, then cancels them. Idempotent;
  // concurrent callers all return after the shutdown completes.
  void Shutdown(absl::Duration deadline) ABSL_LOCKS_EXCLUDED(shutdown_mu_, mu_);

  // Blocks until Shutdown has completed (from another thread).
  void Wait() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RpcServer() = default;

  // Constant after Start.
  std::unique_ptr<grpc::Server> server_;
  std::string host_;
  int port_ = 0;
  std::vector<std::string> names_;
  std::shared_ptr<const void> keep_alive_;  // credentials state owned by the server

  absl::Mutex shutdown_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // serializes Shutdown()
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

struct ChannelOptions {
  TlsConfig tls;             // ca_file verifies the server; cert/key = client cert
  std::string bearer_token;  // sent as "authorization: Bearer <token>"
  int max_message_bytes = 64 << 20;
  // Expected server name in its certificate when it differs from the
  // target's host (e.g. connecting by IP to a cert for "learner").
  std::string tls_server_name_override;
  // gRPC load-balancing policy, e.g. "round_robin" (spreads calls over every
  // address a name resolves to); "" = gRPC's default (pick_first).
  std::string lb_policy;
};

// Creates a channel to `target` ("host:port", or any gRPC target URI). Does
// not connect. Errors: unreadable TLS files.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelOptions& options);

// Polls grpc.health.v1.Health/Check for service "" until it reports
// SERVING. DEADLINE_EXCEEDED with the last error when `timeout` passes.
absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout);

// One health check of `service` ("" = the whole server): OK when SERVING,
// UNAVAILABLE when NOT_SERVING, else the call's error.
absl::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         absl::Duration timeout);

struct RetryPolicy {
  int max_attempts = 5;  // including the first; >= 1
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double multiplier = 2.0;
  double jitter = 0.2;  // each delay is scaled by a uniform [1-j, 1+j]
};

// The delay before retry number `retry` (1 = after the first failure),
// before jitter: min(initial * multiplier^(retry-1), max).
absl::Duration BackoffDelay(const RetryPolicy& policy, int retry);

// Calls `call` until it returns anything but UNAVAILABLE or max_attempts
// calls were made, sleeping BackoffDelay (with jitter) between attempts.
// Other codes are never retried: they are not known to be transient or
// idempotent. Returns the last status, converted; when attempts run out its
// message says how many were made.
absl::Status CallWithRetry(const RetryPolicy& policy, const std::function<grpc::Status()>& call);

// Reads a bearer token file: its content with surrounding whitespace
// removed. Errors: unreadable or empty file.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// True when the call carried ServerOptions::admin_token (cohort.v1.Admin
// requires it when the server has one, so the actors' token cannot drain a
// run).
bool CallHasAdminToken(const grpc::ServerContext& context);

// Options for a server / a client from the run config's security section
// (reads token_file, and admin_token_file for servers). Host and port come from the role's own
// section.
absl::StatusOr<ServerOptions> ServerOptionsFromConfig(const SecuritySection& security,
                                                      const std::string& host, int port);
absl::StatusOr<ChannelOptions> ChannelOptionsFromConfig(const SecuritySection& security);

}  // namespace cohort

#endif  // COHORT_CORE_RPC_H_
