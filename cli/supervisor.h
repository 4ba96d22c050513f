// The local-cluster supervisor behind `cohort run`: starts the reward
// server, the learner and N actors as child processes on loopback, waits
// until each one is SERVING, restarts a role that dies with exponential
// backoff (the learner and the reward server on their previous ports, so
// actors keep their addresses; the learner resumes from its checkpoint),
// and stops the whole run when a role keeps dying or the learner exits with
// kLearnerFailedExitCode (its run failed for good). A role that exits 0 has
// finished (the learner: the run is complete; an actor: it drained) and is
// never restarted; the run ends with exit code 0 when the learner finishes.
//
// Process model: every child runs in its own process group (so a terminal's
// Ctrl-C reaches only `cohort run`, which then stops the children in order)
// and has PR_SET_PDEATHSIG = SIGKILL (so a SIGKILLed `cohort run` leaves no
// child behind). Each child's stdout and stderr are appended to
// <out_dir>/<role>.log; each child writes its bound ports to
// <out_dir>/<role>.port (see core/service.h).
#ifndef COHORT_CLI_SUPERVISOR_H_
#define COHORT_CLI_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort::cli {

// The learner's exit code when its run failed for good (an error a restart
// would repeat; learner/pipeline.h kRunFailedExitCode): the supervisor does
// not restart it and the run stops with exit code 1.
inline constexpr int kLearnerFailedExitCode = 3;

// How a process ended, from a waitpid() status: "exited with code 3",
// "killed by signal 9 (SIGKILL)".
std::string DescribeWaitStatus(int wait_status);

// The last `n` lines of a text file, oldest first (fewer if the file is
// shorter, none if it cannot be read). Reads at most the last 1 MiB.
std::vector<std::string> TailLines(const std::string& path, size_t n);

// Finds the executable `binary` of a role. Search order:
//   1. if `bin_dir` is non-empty: bin_dir/binary, and nowhere else;
//   2. <dir of self_exe>/binary           (installed: one bin directory);
//   3. <dir of self_exe>/../role_dir/binary (build tree: build/cli/cohort
//      next to build/learner/cohort-learner).
// The error lists every path tried.
absl::StatusOr<std::string> FindRoleBinary(const std::string& binary, const std::string& role_dir,
                                           const std::string& bin_dir, const std::string& self_exe);

// One child process, in its own process group, with stdout and stderr
// appended to a log file and stdin from /dev/null. The child gets SIGKILL
// if the thread that spawned it exits (PR_SET_PDEATHSIG), so spawn from a
// thread that outlives the child (the main thread). Signal masks and
// dispositions are reset to defaults in the child.
//
// Not thread-safe: use one ChildProcess from one thread. The destructor
// kills the process group (SIGKILL) and reaps the child if it still runs.
class ChildProcess {
 public:
  // Starts `binary` with `args` (argv[1..]). Fails (and starts nothing) if
  // the log file cannot be opened or the binary cannot be executed.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::string& binary,
                                                             const std::vector<std::string>& args,
                                                             const std::string& log_path);

  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // Non-blocking. Reaps the child if it has exited; true once it has.
  bool Exited();
  // Blocks up to `timeout` for the child to exit; true if it has.
  bool WaitFor(absl::Duration timeout);
  // waitpid() status; valid once Exited() is true.
  int wait_status() const { return wait_status_; }

  // Sends `sig` to the child's process group (the child and anything it
  // started). No-op once the child has been reaped.
  void Signal(int sig);

  // SIGTERM, then SIGKILL if it has not exited after `timeout`; reaps it.
  void Stop(absl::Duration timeout);

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string log_path_;
  bool exited_ = false;
  int wait_status_ = 0;
};

// Settings of one supervised run. Durations come from the config's
// `supervisor` section; see configs/quickstart.yaml.
struct SupervisorOptions {
  // Passed to every role as --config and --set (one per override), so all
  // roles read the same run config.
  std::string config_path;
  std::vector<std::string> overrides;

  // Role binaries (absolute paths), found with FindRoleBinary.
  std::string learner_binary;
  std::string actor_binary;
  std::string reward_binary;

  // Where <role>.log and <role>.port go. Must exist.
  std::string out_dir;

  int actor_count = 1;
  std::string host = "127.0.0.1";

  // Each phase of start-up (reward server + learner, then the actors) and
  // each restart must reach SERVING within this.
  absl::Duration ready_timeout = absl::Seconds(60);
  // SIGTERM-to-SIGKILL grace when stopping a role.
  absl::Duration stop_timeout = absl::Seconds(10);
  // The learner's grace: it writes its final checkpoint on SIGTERM
  // (learner.checkpoint_on_stop_seconds + stop_timeout).
  absl::Duration learner_stop_timeout = absl::Seconds(10);
  // A restartable role that dies more than max_restarts times within
  // restart_window stops the run.
  int max_restarts = 5;
  absl::Duration restart_window = absl::Seconds(300);
  // Restart delay: backoff_initial * 2^(deaths in window - 1), at most
  // backoff_max.
  absl::Duration backoff_initial = absl::Milliseconds(500);
  absl::Duration backoff_max = absl::Seconds(30);
  // Stop cleanly (exit 0) after this long; InfiniteDuration: run until
  // stopped.
  absl::Duration run_for = absl::InfiniteDuration();

  // A readable file descriptor that, once readable, asks the run to stop
  // cleanly (a signalfd for SIGINT/SIGTERM in `cohort run`, a pipe in
  // tests); -1 for none.
  int stop_fd = -1;
  // Show a one-line live status on stderr (for terminals).
  bool live_status = false;

  // Health probe: true if the gRPC server at `target` ("host:port")
  // answers SERVING within `timeout`. Required.
  std::function<bool(const std::string& target, absl::Duration timeout)> check_serving;
};

// Runs one local cluster. Single-threaded: all methods must be called from
// the thread that created the Supervisor (children are spawned from it, and
// PR_SET_PDEATHSIG ties them to it).
class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options);
  // Stops every role still running (SIGTERM, then SIGKILL).
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts the reward server and the learner, waits until both are
  // SERVING, then starts the actors (with --learner and --reward) and waits
  // until all are SERVING. On failure every started role is stopped and the
  // error names the role, how it ended and its last log lines. Returns
  // CANCELLED if stop_fd became readable meanwhile.
  absl::Status Start();

  // Supervises until stop_fd is readable, run_for elapses, the learner
  // exits 0 (the run is complete) (all: exit code 0) or a role fails beyond
  // its limits (exit code 1, report on stderr).
  // Stops every role before returning. Returns the exit code for
  // `cohort run`.
  int Run();

  // Stops every role: SIGTERM to all, SIGKILL to those still running after
  // stop_timeout. Idempotent.
  void StopAll();

  // The current pid of each running role, by role name ("learner",
  // "reward", "actor-0", ...).
  std::map<std::string, pid_t> Pids() const;

 private:
  enum class Kind { kLearner, kReward, kActor };
  // kFinished: exited 0 on its own; never restarted.
  enum class State { kDown, kStarting, kServing, kBackoff, kFinished };
  struct Role {
    std::string name;
    Kind kind;
    std::string binary;
    std::unique_ptr<ChildProcess> child;
    State state = State::kDown;
    int grpc_port = 0;              // last bound port; learner and reward server keep it
    absl::Time started;             // when the current child was spawned
    absl::Time restart_at;          // when in kBackoff
    std::deque<absl::Time> deaths;  // within restart_window
    int restarts = 0;               // total over the run
  };

  std::string PortFilePath(const Role& role) const;
  std::string LogFilePath(const Role& role) const;
  std::string Address(const Role& role) const;
  absl::Status SpawnRole(Role& role, int port);
  // Advances a kStarting role: port file, then health. Sets kServing.
  void CheckStarting(Role& role);
  // Waits until every role in `roles` is SERVING, or fails.
  absl::Status WaitReady(const std::vector<Role*>& roles);
  // Handles a role whose child has exited. Returns false if the run must
  // stop; then `report` says why.
  bool HandleDeath(Role& role, std::string* report);
  std::string DeathReport(const Role& role, const std::string& why) const;
  void Event(const std::string& message);
  void DrawStatus(absl::Time start);

  const SupervisorOptions options_;
  std::vector<std::unique_ptr<Role>> roles_;  // reward, learner, actors
  Role* reward_ = nullptr;
  Role* learner_ = nullptr;
  bool status_drawn_ = false;
};

}  // namespace cohort::cli

#endif  // COHORT_CLI_SUPERVISOR_H_
