// Helpers for tests that run cohort's real binaries as processes: temporary
// directories, binary paths in the build tree, port files, liveness.
#ifndef COHORT_TESTS_CLUSTER_UTIL_H_
#define COHORT_TESTS_CLUSTER_UTIL_H_

#include <sys/types.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/rpc.h"
#include "core/service.h"

namespace cohort::testing {

// A fresh directory under $TMPDIR, removed with its content on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cohort_test.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A binary of the build tree, e.g. Binary("learner", "cohort-learner").
inline std::string Binary(const std::string& dir, const std::string& name) {
  return absl::StrCat(COHORT_BINARY_DIR, "/", dir, "/", name);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// /proc/<pid>/stat, or "" (read with stdio: a process that exits while it
// is read makes the read fail with ESRCH, which iostreams turn into an
// exception).
inline std::string ProcStat(pid_t pid) {
  std::string text;
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return text;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf), f);
  std::fclose(f);
  text.assign(buf, n);
  return text;
}

// True while `pid` exists and is not a zombie.
inline bool Alive(pid_t pid) {
  std::string text = ProcStat(pid);
  size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

// The parent pid of `pid`, or -1.
inline pid_t ParentPid(pid_t pid) {
  std::string text = ProcStat(pid);
  size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  // After ')': " S ppid ..."
  return static_cast<pid_t>(std::atoi(text.c_str() + close + 4));
}

// Polls `done` every 20 ms until it returns true or `timeout` passes.
inline bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

// Waits for a port file whose pid is not `old_pid`.
inline absl::StatusOr<PortFile> WaitForPortFile(const std::string& path, absl::Duration timeout,
                                                pid_t old_pid = 0) {
  absl::StatusOr<PortFile> ports = absl::NotFoundError(path);
  WaitUntil(
      [&] {
        ports = ReadPortFile(path);
        return ports.ok() && ports->pid != old_pid;
      },
      timeout);
  if (ports.ok() && ports->pid == old_pid) {
    return absl::DeadlineExceededError(absl::StrCat(path, " still names the old pid ", old_pid));
  }
  return ports;
}

// OK once the gRPC server on 127.0.0.1:port reports SERVING.
inline absl::Status CheckServing(int port, absl::Duration timeout) {
  auto channel = MakeChannel(absl::StrCat("127.0.0.1:", port), ChannelOptions());
  if (!channel.ok()) return channel.status();
  return WaitForServing(*channel, timeout);
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_CLUSTER_UTIL_H_
