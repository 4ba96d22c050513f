// `cohort health ADDRESS`: one grpc.health.v1 check of a cohort server, with
// the run's bearer token and TLS settings from the config. Made for
// Kubernetes exec probes (whose built-in `grpc:` probe cannot send a token):
//
//   cohort health 127.0.0.1:50051 --config /etc/cohort/run.yaml
//   cohort health learner:50051 --config run.yaml --service cohort.v1.Learner
//
// Exit codes: 0 SERVING; 1 NOT_SERVING, unreachable, refused (wrong token,
// TLS failure) or timed out, with the reason on stderr; 2 bad flags or a bad
// config. With --wait it polls until SERVING or the timeout.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "core/config.h"
#include "core/flags.h"
#include "core/rpc.h"

namespace cohort::cli {

int HealthMain(int argc, char** argv) {
  FlagSet flags(argv[0],
                "Asks a cohort server's grpc.health.v1 service whether it is SERVING, "
                "with the bearer token and TLS of the run config (security.*). Exit 0 "
                "when SERVING, 1 when not (NOT_SERVING, unreachable, refused, timed "
                "out), 2 for bad flags or config. For Kubernetes readiness probes.",
                "ADDRESS (host:port)");
  std::string config_path;
  std::vector<std::string> overrides;
  std::string service;
  std::string server_name;
  double timeout_seconds = 3.0;
  bool wait = false;
  bool quiet = false;
  AddConfigFlags(flags, &config_path, &overrides,
                 "Run config (YAML) whose security section gives the token and TLS "
                 "files; empty: built-in defaults (plaintext, no token).");
  flags.String("service", &service,
               "Service to check, e.g. cohort.v1.Learner; empty: the whole server.");
  flags.String("tls_server_name", &server_name,
               "Name expected in the server's certificate when it differs from "
               "ADDRESS's host (e.g. dialling 127.0.0.1 with a certificate for the "
               "Service's DNS name).");
  flags.Double("timeout_seconds", &timeout_seconds,
               "Deadline of the check (with --wait: of the whole wait); > 0.");
  flags.Bool("wait", &wait, "Poll until SERVING or the timeout instead of checking once.");
  flags.Bool("quiet", &quiet, "Print nothing when SERVING.");
  std::vector<std::string> args = ParseFlagsOrExit(flags, argc, argv);
  if (args.size() != 1) {
    std::fprintf(stderr, "%s: expected one ADDRESS (host:port), got %zu arguments\n", argv[0],
                 args.size());
    return 2;
  }
  const std::string& address = args[0];
  if (address.empty() || address.find(':') == std::string::npos) {
    std::fprintf(stderr, "%s: ADDRESS: expected host:port, got \"%s\"\n", argv[0], address.c_str());
    return 2;
  }
  if (!(timeout_seconds > 0)) {
    std::fprintf(stderr, "%s: --timeout_seconds: expected a number > 0, got %g\n", argv[0],
                 timeout_seconds);
    return 2;
  }
  absl::StatusOr<RunConfig> config = LoadConfigOrDefaults(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(config.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<ChannelOptions> options = ChannelOptionsFromConfig(config->security);
  if (!options.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(options.status().message()).c_str());
    return 2;
  }
  options->tls_server_name_override = server_name;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(address, *options);
  if (!channel.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(channel.status().message()).c_str());
    return 2;
  }
  const absl::Duration timeout = absl::Seconds(timeout_seconds);
  absl::Status status;
  if (wait && service.empty()) {
    status = WaitForServing(*channel, timeout);
  } else if (wait) {
    const absl::Time deadline = absl::Now() + timeout;
    do {
      status = CheckHealth(*channel, service, deadline - absl::Now());
      if (status.ok() || status.code() == absl::StatusCode::kUnauthenticated) break;
      absl::SleepFor(absl::Milliseconds(100));
    } while (absl::Now() < deadline);
  } else {
    status = CheckHealth(*channel, service, timeout);
  }
  const std::string what = service.empty() ? address : absl::StrCat(address, " ", service);
  if (!status.ok()) {
    std::fprintf(stderr, "%s: not serving (%s): %s\n", what.c_str(),
                 std::string(absl::StatusCodeToString(status.code())).c_str(),
                 std::string(status.message()).c_str());
    return 1;
  }
  if (!quiet) std::printf("%s: SERVING\n", what.c_str());
  return 0;
}

}  // namespace cohort::cli
