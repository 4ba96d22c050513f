// `cohort status ADDRESS`: the learner's cohort.v1.Admin/GetStatus as a
// table, or with --json as one JSON object with the proto's field names.
//
//   cohort status 127.0.0.1:50051 --config run.yaml
//   cohort status learner:50051 --config run.yaml --json | jq .ledger
//
// Authentication: the admin token (security.admin_token_file) when the
// config names one, else the run's token (security.token_file), and the TLS
// files of security.tls. Exit codes: 0 printed; 1 the call failed
// (unreachable, refused, timed out; reason on stderr); 2 bad flags/config.
#include <cstdio>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/config.h"
#include "core/flags.h"
#include "core/rpc.h"

namespace cohort::cli {
namespace {

void PrintLedger(const char* indent, const v1::LedgerCounts& l) {
  std::printf(
      "%sprompts   %lld total: %lld trained, %lld filtered, %lld failed; %lld queued, "
      "%lld leased, %lld buffered\n",
      indent, static_cast<long long>(l.prompts_total()), static_cast<long long>(l.trained()),
      static_cast<long long>(l.filtered()), static_cast<long long>(l.failed()),
      static_cast<long long>(l.queued()), static_cast<long long>(l.leased()),
      static_cast<long long>(l.buffered()));
  std::printf(
      "%sleases    %lld granted, %lld expired, %lld released, %lld retried; "
      "duplicates %lld, lost %lld\n",
      indent, static_cast<long long>(l.leases_granted()),
      static_cast<long long>(l.leases_expired()), static_cast<long long>(l.leases_released()),
      static_cast<long long>(l.leases_retried()), static_cast<long long>(l.duplicates()),
      static_cast<long long>(l.lost()));
}

void PrintTable(const v1::RunStatus& s) {
  std::printf("run        %s%s%s%s%s\n", s.run_id().c_str(), s.done() ? " (done)" : "",
              s.failure().empty() ? "" : " (failed)", s.paused() ? " (paused)" : "",
              s.draining() ? " (draining)" : "");
  if (!s.failure().empty()) std::printf("failure    %s\n", s.failure().c_str());
  std::printf("stage      %s (%s)  step %lld  version %lld  epoch %d\n", s.stage().c_str(),
              s.stage_kind().c_str(), static_cast<long long>(s.step()),
              static_cast<long long>(s.policy_version()), s.epoch());
  if (s.has_ledger()) PrintLedger("  ", s.ledger());
  std::string kept;
  for (int64_t v : s.kept_versions()) absl::StrAppend(&kept, kept.empty() ? "" : " ", v);
  std::printf("versions   kept [%s]  skipped steps %lld\n", kept.c_str(),
              static_cast<long long>(s.skipped_steps()));
  std::printf("checkpoint %s\n",
              s.last_checkpoint().empty() ? "(none)" : s.last_checkpoint().c_str());
  if (!s.refusals().empty()) {
    std::string r;
    for (const auto& [reason, n] : s.refusals()) absl::StrAppend(&r, " ", reason, "=", n);
    std::printf("refusals  %s\n", r.c_str());
  }
  if (s.stages_size() > 0) {
    std::printf("\n%-16s %-9s %-8s %8s %8s %8s %8s %8s\n", "STAGE", "KIND", "STATE", "STEPS",
                "TOTAL", "TRAINED", "FILTERED", "FAILED");
    for (const v1::StageStatus& st : s.stages()) {
      std::printf("%-16s %-9s %-8s %8lld %8lld %8lld %8lld %8lld\n", st.name().c_str(),
                  st.kind().c_str(), st.state().c_str(), static_cast<long long>(st.step()),
                  static_cast<long long>(st.ledger().prompts_total()),
                  static_cast<long long>(st.ledger().trained()),
                  static_cast<long long>(st.ledger().filtered()),
                  static_cast<long long>(st.ledger().failed()));
    }
  }
  if (s.actors_size() > 0) {
    int64_t now = absl::ToUnixMillis(absl::Now());
    std::printf("\n%-24s %-20s %8s %7s %6s %9s %11s %9s\n", "ACTOR", "ID", "VERSION", "LEASES",
                "JOINS", "GROUPS", "TOKENS", "SEEN");
    for (const v1::ActorInfo& a : s.actors()) {
      std::printf("%-24s %-20s %8lld %7d %6d %9lld %11lld %8.1fs%s\n", a.actor_name().c_str(),
                  a.actor_id().c_str(), static_cast<long long>(a.policy_version()), a.leases(),
                  a.joins(), static_cast<long long>(a.groups_submitted()),
                  static_cast<long long>(a.tokens_generated()),
                  (now - a.last_seen_unix_ms()) / 1000.0, a.gone() ? " gone" : "");
    }
  }
}

}  // namespace

int StatusMain(int argc, char** argv) {
  FlagSet flags(argv[0],
                "Prints a learner's status (cohort.v1.Admin/GetStatus): stage, step, policy "
                "version, ledger counts, kept versions, refusals, stages and actors. Uses the "
                "admin token of the config (security.admin_token_file, else token_file) and "
                "its TLS files. Exit 0 printed, 1 the call failed, 2 bad flags or config.",
                "ADDRESS (host:port of the learner)");
  std::string config_path;
  std::vector<std::string> overrides;
  bool json = false;
  double timeout_seconds = 5.0;
  AddConfigFlags(flags, &config_path, &overrides,
                 "Run config (YAML) whose security section gives the token and TLS files; empty: "
                 "built-in defaults (plaintext, no token).");
  flags.Bool("json", &json, "Print one JSON object with the proto's field names.");
  flags.Double("timeout_seconds", &timeout_seconds, "Deadline of the call; > 0.");
  std::vector<std::string> args = ParseFlagsOrExit(flags, argc, argv);
  if (args.size() != 1 || args[0].find(':') == std::string::npos) {
    std::fprintf(stderr, "%s: expected one ADDRESS (host:port)\n", argv[0]);
    return 2;
  }
  if (!(timeout_seconds > 0)) {
    std::fprintf(stderr, "%s: --timeout_seconds: expected > 0, got %g\n", argv[0], timeout_seconds);
    return 2;
  }
  absl::StatusOr<RunConfig> config = LoadConfigOrDefaults(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(config.status().message()).c_str());
    return 2;
  }
  SecuritySection security = config->security;
  if (!security.admin_token_file.empty()) security.token_file = security.admin_token_file;
  absl::StatusOr<ChannelOptions> options = ChannelOptionsFromConfig(security);
  if (!options.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(options.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(args[0], *options);
  if (!channel.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(channel.status().message()).c_str());
    return 2;
  }
  auto stub = v1::Admin::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(timeout_seconds)));
  v1::RunStatus status;
  grpc::Status s = stub->GetStatus(&ctx, v1::GetStatusRequest(), &status);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: GetStatus on %s failed: %s\n", argv[0], args[0].c_str(),
                 s.error_message().c_str());
    return 1;
  }
  if (json) {
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    o.always_print_primitive_fields = true;
    std::string out;
    if (!google::protobuf::util::MessageToJsonString(status, &out, o).ok()) {
      std::fprintf(stderr, "%s: cannot print the status as JSON\n", argv[0]);
      return 1;
    }
    std::printf("%s\n", out.c_str());
  } else {
    PrintTable(status);
  }
  return 0;
}

}  // namespace cohort::cli
