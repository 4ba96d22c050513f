// `cohort run CONFIG`: a local cluster (reward server, learner, actors) as
// supervised child processes on loopback. See docs/run.md.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/supervisor.h"
#include "core/config.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/rpc.h"
#include "core/service.h"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

std::string SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
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
  std::vector<std::string> overrides;
  std::string out_dir;
  std::string run_for_text;
  std::string bin_dir;
  AddConfigFlags(flags, nullptr, &overrides, "", "Also passed to every role.");
  flags.String("out", &out_dir,
               "Directory for each role's log (<role>.log: stdout and "
               "stderr, appended across restarts) and port file "
               "(<role>.port); default <run.out_dir>/<run.name>.");
  flags.String("for", &run_for_text,
               "Stop cleanly (exit 0) after this long, e.g. 30s, 5m, 1h; "
               "empty runs until Ctrl-C or a failure.");
  flags.String("bin_dir", &bin_dir,
               "Directory holding cohort-learner, cohort-actor and "
               "cohort-reward. Default: the directory of this cohort "
               "executable, then ../learner, ../actor and ../reward_server "
               "next to it (the build tree).");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (positional.size() != 1) {
    std::fprintf(stderr,
                 "%s: expected exactly one CONFIG argument, got %zu (see "
                 "--help)\n",
                 argv[0], positional.size());
    return 2;
  }
  const std::string config_path = fs::absolute(positional[0]).string();
  absl::StatusOr<RunConfig> config = LoadConfig(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(config.status().message()).c_str());
    return 2;
  }
  absl::Duration run_for = absl::InfiniteDuration();
  if (!run_for_text.empty() &&
      (!absl::ParseDuration(run_for_text, &run_for) || run_for <= absl::ZeroDuration())) {
    std::fprintf(stderr,
                 "%s: --for: expected a positive duration such as 30s, 5m "
                 "or 1h, got \"%s\"\n",
                 argv[0], run_for_text.c_str());
    return 2;
  }

  SupervisorOptions options;
  options.config_path = config_path;
  options.overrides = overrides;
  std::string self = SelfExe();
  struct {
    const char* binary;
    const char* dir;
    std::string* out;
  } roles[] = {{"cohort-learner", "learner", &options.learner_binary},
               {"cohort-actor", "actor", &options.actor_binary},
               {"cohort-reward", "reward_server", &options.reward_binary}};
  for (auto& role : roles) {
    absl::StatusOr<std::string> path = FindRoleBinary(role.binary, role.dir, bin_dir, self);
    if (!path.ok()) {
      std::fprintf(stderr, "%s: %s\n", argv[0], std::string(path.status().message()).c_str());
      return 2;
    }
    *role.out = *path;
  }
  if (out_dir.empty()) {
    out_dir = (fs::path(config->run.out_dir) / config->run.name).string();
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "%s: --out: cannot create %s: %s\n", argv[0], out_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }
  options.out_dir = fs::absolute(out_dir).string();
  options.actor_count = config->actor.count;
  const SupervisorSection& sup = config->supervisor;
  options.ready_timeout = absl::Seconds(sup.ready_timeout_seconds);
  options.stop_timeout = absl::Seconds(sup.stop_timeout_seconds);
  options.learner_stop_timeout =
      absl::Seconds(sup.stop_timeout_seconds + config->learner.checkpoint_on_stop_seconds);
  options.max_restarts = sup.max_restarts;
  options.restart_window = absl::Seconds(sup.restart_window_seconds);
  options.backoff_initial = absl::Milliseconds(sup.backoff_initial_ms);
  options.backoff_max = absl::Milliseconds(sup.backoff_max_ms);
  options.run_for = run_for;
  options.stop_fd = *signal_fd;
  options.live_status = ::isatty(STDERR_FILENO) == 1;

  absl::StatusOr<ChannelOptions> channel_options = ChannelOptionsFromConfig(config->security);
  if (!channel_options.ok()) {
    std::fprintf(stderr, "%s: security config: %s\n", argv[0],
                 std::string(channel_options.status().message()).c_str());
    return 2;
  }
  options.check_serving = [channel_options = *channel_options](const std::string& target,
                                                               absl::Duration timeout) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(target, channel_options);
    return channel.ok() && WaitForServing(*channel, timeout).ok();
  };

  COHORT_LOG(INFO) << "cohort run " << config->run.name << ": 1 learner, 1 reward "
                   << "server, " << options.actor_count << " actor(s); logs in " << options.out_dir;
  Supervisor supervisor(std::move(options));
  absl::Status started = supervisor.Start();
  if (absl::IsCancelled(started)) {
    COHORT_LOG(INFO) << "stopped before every role was up (signal received)";
    return 0;
  }
  if (!started.ok()) {
    std::fprintf(stderr, "cohort run: could not start the cluster: %s\n",
                 std::string(started.message()).c_str());
    return 1;
  }
  return supervisor.Run();
}

}  // namespace cohort::cli
