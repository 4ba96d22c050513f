// Runs untrusted Python programs under bubblewrap.
//
// Each run gets: a new user, pid, network, IPC, UTS, mount and cgroup
// namespace (no network at all); the host's /usr read-only (with the /bin,
// /lib, /lib64 symlinks) and nothing else of the host file system; a
// size-limited private tmpfs at /tmp and /dev/shm; the program and its data
// files read-only under /sandbox; an empty environment plus PATH, HOME,
// LANG; no capabilities; rlimits on CPU seconds, address space, processes,
// output file size and open files; a wall-clock timeout enforced here by
// killing bwrap, whose death kills the pid namespace's init and so every
// process the program started (daemons included). stdout and stderr are
// captured up to a cap; past it the pipe is closed (the writer then gets
// EPIPE/SIGPIPE) and the result is flagged truncated.
//
// When the server runs as root, every concurrent run is started under its
// own unprivileged uid from a pool (first_uid ...), so RLIMIT_NPROC applies
// (it does not apply to uid 0) and one run's fork bomb cannot starve
// another. After a run any process still owned by that uid is killed before
// the uid is reused. A per-uid flock (SandboxOptions::lock_dir) extends this
// across processes: several servers or tests on one host can share a pool.
// When the server does not run as root, runs use the server's own uid, go
// one at a time, and RLIMIT_NPROC is set to the uid's current task count
// plus max_processes (weaker: documented in docs/rewards.md).
//
// Create() runs a self-test; if the sandbox cannot be set up it returns an
// error saying why, and callers must not run code at all (there is no
// unsandboxed fallback).
//
// Thread-safe: Run() may be called from many threads at once.
#ifndef COHORT_REWARD_SERVER_SANDBOX_H_
#define COHORT_REWARD_SERVER_SANDBOX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cohort::reward {

struct SandboxLimits {
  double wall_seconds = 5.0;             // killed after this, parent-enforced
  int cpu_seconds = 5;                   // RLIMIT_CPU
  int64_t memory_bytes = 1LL << 30;      // RLIMIT_AS
  int max_processes = 32;                // RLIMIT_NPROC (per pool uid)
  int64_t file_size_bytes = 16LL << 20;  // RLIMIT_FSIZE
  int max_open_files = 64;               // RLIMIT_NOFILE
  int64_t tmp_bytes = 32LL << 20;        // size of the /tmp and /dev/shm tmpfs
  int64_t output_bytes = 1LL << 20;      // cap on each captured stream
};

struct SandboxOptions {
  std::string bwrap_path = "/usr/bin/bwrap";
  std::string python_path = "/usr/bin/python3";
  SandboxLimits limits;
  // Pool of unprivileged uids (used only when running as root): one per
  // concurrent run; Run() blocks while all are busy.
  int first_uid = 61000;
  int uid_count = 256;
  // Per-uid lock files (flock) that keep processes sharing the pool from
  // using one uid at once.
  std::string lock_dir = "/tmp";
};

// One program run. Files are placed read-only at /sandbox/<name>.
struct SandboxRun {
  std::vector<std::pair<std::string, std::string>> files;  // name, content
  std::vector<std::string> args;                           // argv after the interpreter
  std::string stdin_data;
  // Bytes readable by the program on fd 3 (then EOF). Output the program
  // writes to fd 4 comes back in SandboxResult::channel.
  std::string fd3_data;
  // Overrides of the default limits for this run; <= 0 keeps the default.
  double wall_seconds = 0;
};

struct SandboxResult {
  int exit_code = -1;      // exit status of the program, -1 if killed
  int term_signal = 0;     // signal that killed bwrap, 0 if none
  bool timed_out = false;  // killed by the wall-clock limit
  std::string stdout_data;
  std::string stderr_data;
  std::string channel;  // what the program wrote to fd 4
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  double wall_seconds = 0;
  int stragglers_killed = 0;  // processes of the run's uid found afterwards
};

class Sandbox {
 public:
  // Checks bwrap and python exist, then runs a self-test program in the
  // sandbox (prints, checks it is not uid 0 and has no network). Errors
  // say what failed and why code cannot be run.
  static absl::StatusOr<std::unique_ptr<Sandbox>> Create(SandboxOptions options = {});

  // Runs `run`. A non-OK status is an infrastructure failure (fork, pipes,
  // bwrap refused to start); the program's own failures (crash, timeout,
  // limits) are an OK status with the outcome in SandboxResult.
  absl::StatusOr<SandboxResult> Run(const SandboxRun& run) ABSL_LOCKS_EXCLUDED(mu_, serial_mu_);

  const SandboxOptions& options() const { return options_; }
  // True when runs switch to pool uids (the server is root).
  bool uses_uid_pool() const { return as_root_; }

 private:
  explicit Sandbox(SandboxOptions options);
  struct UidLease {
    int uid = -1;
    int lock_fd = -1;  // holds the cross-process flock, or -1
  };
  UidLease AcquireUid() ABSL_LOCKS_EXCLUDED(mu_);
  void ReleaseUid(const UidLease& lease) ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const SandboxOptions options_;
  const bool as_root_;

  absl::Mutex mu_;
  std::vector<int> free_uids_ ABSL_GUARDED_BY(mu_);
  // Held for a whole run when not root (runs share the server's uid).
  // Never held together with mu_ (runs as root use the pool, others this).
  absl::Mutex serial_mu_;
};

// Kills every process whose real uid is `uid` (scans /proc). Returns how
// many were signalled. Used after runs; exposed for tests.
int KillProcessesOfUid(int uid);

// Number of processes whose real uid is `uid`.
int CountProcessesOfUid(int uid);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_SANDBOX_H_
