// Starting a child process with fork + exec, safely from a threaded parent.
//
// Spawn() prepares everything before fork() (argv, environment, fd table),
// so that between fork and exec the child makes only async-signal-safe
// calls (the parent may have threads, e.g. gRPC's). In the child, in this
// order: signal mask emptied and every disposition reset to SIG_DFL; its
// own process group (optional); the fd table replaced by `fds` (child fd i
// is a duplicate of fds[i]; every other descriptor is closed); rlimits set;
// uid and gid switched (optional, with supplementary groups dropped);
// PR_SET_PDEATHSIG = SIGKILL (optional; after the uid switch, which would
// clear it; exits at once if the parent is already gone); then exec.
//
// A failure of any of these steps in the child, exec included, is reported
// back to the parent through a close-on-exec pipe: Spawn() returns only
// after the exec has succeeded (or failed, then the child has been reaped
// and the error names the step, the binary and errno's text).
//
// PR_SET_PDEATHSIG fires when the *thread* that called fork() exits, so
// spawn die-with-parent children from a thread that outlives them.
//
// Thread-safe: Spawn() may be called from several threads at once.
#ifndef COHORT_CORE_SUBPROCESS_H_
#define COHORT_CORE_SUBPROCESS_H_

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

struct SpawnOptions {
  // The executable (a path; PATH is not searched) and its whole argv
  // (argv[0] included; empty: {binary}).
  std::string binary;
  std::vector<std::string> argv;
  // The child's environment; nullopt inherits the parent's.
  std::optional<std::vector<std::string>> env;
  // The child's descriptors: fd i is a duplicate of fds[i] (which must be
  // open in the parent); every other descriptor is closed. Typically
  // {stdin, stdout, stderr, ...}.
  std::vector<int> fds;
  // setpgid(0, 0): the child leads a process group of its own, so that
  // kill(-pid, sig) reaches it and whatever it starts.
  bool new_process_group = true;
  // PR_SET_PDEATHSIG = SIGKILL.
  bool die_with_parent = true;
  // setrlimit(resource, {value, value}) for each entry.
  std::vector<std::pair<int, rlim_t>> rlimits;
  // If >= 0: setgroups({}), setgid(uid), setuid(uid) (needs root).
  int uid = -1;
};

// Starts the child and returns its pid; the caller reaps it (waitpid).
// Errors: InvalidArgument for bad options, ResourceExhausted when fork()
// fails, FailedPrecondition when a step in the child (exec included)
// failed; messages name the binary and the reason.
absl::StatusOr<pid_t> Spawn(const SpawnOptions& options);

}  // namespace cohort

#endif  // COHORT_CORE_SUBPROCESS_H_
