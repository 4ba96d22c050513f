// `cohort run CONFIG`: a local cluster (reward server, learner, actors) as
// supervised child processes on loopback. See docs/run.md.
//
// The run directory (--out, default <run.out_dir>/<run.name>) is passed to
// every role as run.out_dir, so the learner writes the run there. A config
// with a `pipeline:` is checked against the directory first: a finished run
// of the same config is reported and nothing starts; a run of another
// config is refused unless --new, which clears the directory's run files
// (the logs stay) and starts over; an unfinished run of the same config
// resumes, unless the learner recorded it as failed for good
// (run_failure.json): then the reason is printed and nothing starts (exit
// 1). When a run fails that way, `cohort run` prints the learner's reason.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "cli/commands.h"
#include "cli/supervisor.h"
#include "core/config.h"
#include "core/file.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/rpc.h"
#include "core/service.h"
#include "core/status.h"
#include "learner/pipeline.h"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

std::string SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

// What `cohort run` was asked for on its command line.
struct RunFlags {
  std::string config_path;  // absolute
  std::vector<std::string> overrides;
  std::string out_dir;
  absl::Duration run_for = absl::InfiniteDuration();
  std::string bin_dir;
  bool start_new = false;
};

// Parses the command line (--help exits 0 here). Errors are usage errors.
absl::StatusOr<RunFlags> ParseRunFlags(int argc, char** argv) {
  FlagSet flags("cohort run",
                "Starts a local cluster from a run config: one reward server, one "
                "learner and actor.count actors, each a child process listening on "
                "127.0.0.1 with a free port, and supervises it. Actors and the reward "
                "server are restarted with backoff when they die (the reward server on "
                "its previous port); a role that dies more than "
                "supervisor.max_restarts times within "
                "supervisor.restart_window_seconds, or the learner dying, stops the "
                "run with a report and exit code 1. Ctrl-C (SIGINT) or SIGTERM stops "
                "every role and exits 0.",
                "CONFIG");
  RunFlags f;
  std::string run_for_text;
  AddConfigFlags(flags, nullptr, &f.overrides, "", "Also passed to every role.");
  flags.String("out", &f.out_dir,
               "Run directory: the learner's outputs (passed to every role as "
               "run.out_dir), each role's log (<role>.log: stdout and stderr, appended "
               "across restarts) and port file (<role>.port); default "
               "<run.out_dir>/<run.name>. An unfinished pipeline run of the same config "
               "there resumes.");
  flags.Bool("new", &f.start_new,
             "Start the pipeline over in --out even if it holds a run (of this or another "
             "config): its run files are removed first (logs are kept).");
  flags.String("for", &run_for_text,
               "Stop cleanly (exit 0) after this long, e.g. 30s, 5m, 1h; "
               "empty runs until Ctrl-C or a failure.");
  flags.String("bin_dir", &f.bin_dir,
               "Directory holding cohort-learner, cohort-actor and "
               "cohort-reward. Default: the directory of this cohort "
               "executable, then ../learner, ../actor and ../reward_server "
               "next to it (the build tree).");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (positional.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("expected exactly one CONFIG argument, got ",
                                                   positional.size(), " (see --help)"));
  }
  f.config_path = fs::absolute(positional[0]).string();
  if (!run_for_text.empty() &&
      (!absl::ParseDuration(run_for_text, &f.run_for) || f.run_for <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--for: expected a positive duration such as 30s, 5m or 1h, got \"", run_for_text, "\""));
  }
  return f;
}

// The learner, actor and reward binaries (see FindRoleBinary).
absl::Status FindRoleBinaries(const std::string& bin_dir, SupervisorOptions* options) {
  const std::string self = SelfExe();
  struct {
    const char* binary;
    const char* dir;
    std::string* out;
  } roles[] = {{"cohort-learner", "learner", &options->learner_binary},
               {"cohort-actor", "actor", &options->actor_binary},
               {"cohort-reward", "reward_server", &options->reward_binary}};
  for (auto& role : roles) {
    ASSIGN_OR_RETURN(*role.out, FindRoleBinary(role.binary, role.dir, bin_dir, self));
  }
  return absl::OkStatus();
}

// --out, or <run.out_dir>/<run.name>; created if missing. Absolute.
absl::StatusOr<std::string> MakeOutDir(std::string out_dir, const RunConfig& config) {
  if (out_dir.empty()) out_dir = (fs::path(config.run.out_dir) / config.run.name).string();
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out: cannot create ", out_dir, ": ", ec.message()));
  }
  return fs::absolute(out_dir).string();
}

// What the run directory holds for a pipeline config.
enum class RunDirState { kEmpty, kSameUnfinished, kSameFinished, kOther };

absl::StatusOr<RunDirState> InspectRunDir(const std::string& dir, const RunConfig& config) {
  const std::string path = dir + "/pipeline_state.json";
  if (!fs::exists(path)) return RunDirState::kEmpty;
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
  if (!state.is_object() || !state.contains("config") || !state["config"].is_string()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": not a pipeline state; cannot resume from it (use --new)"));
  }
  if (state["config"].get<std::string>() != learner::PipelineStateConfig(config)) {
    return RunDirState::kOther;
  }
  return state.value("finished", false) ? RunDirState::kSameFinished : RunDirState::kSameUnfinished;
}

// The final failure the learner recorded in <dir>/run_failure.json for
// `config` (learner/pipeline.h): its reason, or "" when none.
std::string FinalFailure(const std::string& dir, const RunConfig& config) {
  absl::StatusOr<std::string> text = ReadFile(dir + "/run_failure.json");
  if (!text.ok()) return "";
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.value("final", false) ||
      j.value("config", std::string()) != learner::PipelineStateConfig(config)) {
    return "";
  }
  return j.value("reason", std::string());  // a stage's names the stage
}

// --new: removes what a pipeline run wrote in `dir` (not the role logs).
absl::Status ClearRunDir(const std::string& dir) {
  for (const char* name :
       {"pipeline_state.json", "summary.json", "report.html", "evals.jsonl", "metrics.jsonl",
        "trained.jsonl", "filtered.jsonl", "failed.jsonl", "run_id", "checkpoints", "models",
        "model", "data", "stages", "tensorboard", "run_failure.json", "published_version"}) {
    std::error_code ec;
    fs::remove_all(fs::path(dir) / name, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--new: cannot remove ", (fs::path(dir) / name).string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// After a finished pipeline run: each summary.json actor that the latest
// incarnation of a supervised role ran (its pid is in <role>.port) gets
// `role` and `restarts` (this `cohort run`'s restarts of that role, from
// the last "(start N)" line of <role>.log).
void AddActorRestarts(const std::string& dir, int actor_count) {
  const std::string path = dir + "/summary.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return;
  nlohmann::json summary = nlohmann::json::parse(*text, nullptr, false);
  if (!summary.is_object() || !summary.contains("actors") || !summary["actors"].is_array()) return;
  bool changed = false;
  for (int i = 0; i < actor_count; ++i) {
    const std::string role = absl::StrCat("actor-", i);
    absl::StatusOr<std::string> log = ReadFile(absl::StrCat(dir, "/", role, ".log"));
    absl::StatusOr<PortFile> ports = ReadPortFile(absl::StrCat(dir, "/", role, ".port"));
    if (!log.ok() || !ports.ok()) continue;
    const std::string marker = absl::StrCat("=== cohort run: starting ", role, " (start ");
    size_t at = log->rfind(marker);
    if (at == std::string::npos) continue;
    const int starts = std::atoi(log->c_str() + at + marker.size());
    for (nlohmann::json& a : summary["actors"]) {
      if (a.is_object() && a.value("pid", int64_t{0}) == ports->pid) {
        a["role"] = role;
        a["restarts"] = std::max(0, starts - 1);
        changed = true;
      }
    }
  }
  if (!changed) return;
  absl::Status s = WriteFileAtomically(path, summary.dump(1));
  if (!s.ok()) COHORT_LOG(WARNING) << "summary.json: " << s.message();
}

// Limits and timings from the config's supervisor section.
void ApplySupervisorSection(const RunConfig& config, SupervisorOptions* options) {
  const SupervisorSection& sup = config.supervisor;
  options->actor_count = config.actor.count;
  options->ready_timeout = absl::Seconds(sup.ready_timeout_seconds);
  options->stop_timeout = absl::Seconds(sup.stop_timeout_seconds);
  options->learner_stop_timeout =
      absl::Seconds(sup.stop_timeout_seconds + config.learner.checkpoint_on_stop_seconds);
  options->max_restarts = sup.max_restarts;
  options->restart_window = absl::Seconds(sup.restart_window_seconds);
  options->backoff_initial = absl::Milliseconds(sup.backoff_initial_ms);
  options->backoff_max = absl::Milliseconds(sup.backoff_max_ms);
}

// The SERVING probe, over channels with the run's TLS and token.
absl::Status SetHealthProbe(const RunConfig& config, SupervisorOptions* options) {
  absl::StatusOr<ChannelOptions> channel_options = ChannelOptionsFromConfig(config.security);
  if (!channel_options.ok()) return Annotate(channel_options.status(), "security config");
  options->check_serving = [channel_options = *channel_options](const std::string& target,
                                                                absl::Duration timeout) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(target, channel_options);
    return channel.ok() && WaitForServing(*channel, timeout).ok();
  };
  return absl::OkStatus();
}

// Builds the supervisor's options from the flags and the config. Errors
// are usage or config errors (exit code 2).
absl::StatusOr<SupervisorOptions> MakeSupervisorOptions(const RunFlags& flags,
                                                        const RunConfig& config, int stop_fd) {
  SupervisorOptions options;
  options.config_path = flags.config_path;
  options.overrides = flags.overrides;
  RETURN_IF_ERROR(FindRoleBinaries(flags.bin_dir, &options));
  ASSIGN_OR_RETURN(options.out_dir, MakeOutDir(flags.out_dir, config));
  ApplySupervisorSection(config, &options);
  options.run_for = flags.run_for;
  options.stop_fd = stop_fd;
  options.live_status = ::isatty(STDERR_FILENO) == 1;
  RETURN_IF_ERROR(SetHealthProbe(config, &options));
  return options;
}

}  // namespace

int RunMain(int argc, char** argv) {
  // Before any thread exists (gRPC channels start threads): SIGINT/SIGTERM
  // are consumed through a signalfd by the supervisor loop.
  absl::StatusOr<int> signal_fd = BlockStopSignals();
  if (!signal_fd.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(signal_fd.status().message()).c_str());
    return 1;
  }
  auto usage_error = [&](const absl::Status& s) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 2;
  };
  absl::StatusOr<RunFlags> flags = ParseRunFlags(argc, argv);
  if (!flags.ok()) return usage_error(flags.status());
  absl::StatusOr<RunConfig> config = LoadConfig(flags->config_path, flags->overrides);
  if (!config.ok()) return usage_error(config.status());
  absl::StatusOr<std::string> out_dir = MakeOutDir(flags->out_dir, *config);
  if (!out_dir.ok()) return usage_error(out_dir.status());
  // Every role writes the run into the run directory.
  flags->out_dir = *out_dir;
  flags->overrides.push_back("run.out_dir=" + *out_dir);
  config = LoadConfig(flags->config_path, flags->overrides);
  if (!config.ok()) return usage_error(config.status());
  if (!config->pipeline.empty()) {
    absl::StatusOr<RunDirState> state = InspectRunDir(*out_dir, *config);
    if (!state.ok() && !flags->start_new) return usage_error(state.status());
    if (flags->start_new) {
      absl::Status cleared = ClearRunDir(*out_dir);
      if (!cleared.ok()) return usage_error(cleared);
    } else if (*state == RunDirState::kSameFinished) {
      std::fprintf(stderr,
                   "cohort run: %s holds a finished run of this config (summary.json, "
                   "report.html, model/); nothing to do (--new runs it again)\n",
                   out_dir->c_str());
      return 0;
    } else if (*state == RunDirState::kOther) {
      return usage_error(absl::FailedPreconditionError(absl::StrCat(
          *out_dir, " holds a run of another config; use another --out, or --new to replace it")));
    } else if (std::string failure = FinalFailure(*out_dir, *config); !failure.empty()) {
      // Failed for good (before or after its first stage finished).
      std::fprintf(stderr,
                   "cohort run: %s holds a run of this config that failed (%s); a restart "
                   "would fail the same way (fix the cause; --new runs it again)\n",
                   out_dir->c_str(), failure.c_str());
      return 1;
    } else if (*state == RunDirState::kSameUnfinished) {
      COHORT_LOG(INFO) << "resuming the unfinished run in " << *out_dir;
    }
  }
  // After the cluster stopped: the learner's reason when its run failed.
  auto report_failure = [&] {
    if (std::string failure = FinalFailure(*out_dir, *config); !failure.empty()) {
      std::fprintf(stderr, "cohort run: the run failed: %s (recorded in %s/run_failure.json)\n",
                   failure.c_str(), out_dir->c_str());
    }
  };
  absl::StatusOr<SupervisorOptions> options = MakeSupervisorOptions(*flags, *config, *signal_fd);
  if (!options.ok()) return usage_error(options.status());

  COHORT_LOG(INFO) << "cohort run " << config->run.name << ": 1 learner, 1 reward "
                   << "server, " << options->actor_count << " actor(s); logs in "
                   << options->out_dir;
  Supervisor supervisor(*std::move(options));
  absl::Status started = supervisor.Start();
  if (absl::IsCancelled(started)) {
    COHORT_LOG(INFO) << "stopped before every role was up (signal received)";
    return 0;
  }
  if (!started.ok()) {
    std::fprintf(stderr, "cohort run: could not start the cluster: %s\n",
                 std::string(started.message()).c_str());
    report_failure();
    return 1;
  }
  const int code = supervisor.Run();
  if (code != 0) report_failure();
  if (code == 0 && !config->pipeline.empty()) AddActorRestarts(*out_dir, config->actor.count);
  return code;
}

}  // namespace cohort::cli
