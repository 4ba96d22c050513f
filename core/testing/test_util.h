// Helpers shared by the tests that drive real binaries and files: a scoped
// temporary directory, reading a whole file, and running a command with
// its stdout and stderr captured.
//
//   testutil::ScopedTempDir dir("config_cmd_test");
//   std::string yaml = dir.Write("run.yaml", "run:\n  seed: 3\n");
//   testutil::CommandResult r = testutil::RunCommand(kCohort + " config check " + yaml,
//   dir.path()); EXPECT_EQ(r.exit_code, 0) << r.err;
//
// Header only; for tests.
#ifndef COHORT_CORE_TESTING_TEST_UTIL_H_
#define COHORT_CORE_TESTING_TEST_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace cohort::testutil {

// The whole content of `path`; empty if it cannot be read.
inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh directory under gtest's TempDir, named after `prefix`, the
// process and the running test (so parallel ctest runs never share one);
// removed with everything in it by the destructor.
class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& prefix) {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = ::testing::TempDir() + prefix + "_" + std::to_string(::getpid()) +
            (test != nullptr ? std::string("_") + test->name() : std::string());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name.
  std::string Path(const std::string& name) const { return path_ + "/" + name; }
  // Writes `text` to path()/name and returns that path.
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(Path(name), std::ios::binary) << text;
    return Path(name);
  }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out, err;
};

// Runs `command` with /bin/sh, stdin from `input`, stdout and stderr
// captured through files in `dir` (which must exist).
inline CommandResult RunCommand(const std::string& command, const std::string& dir,
                                const std::string& input = "") {
  std::ofstream(dir + "/cmd.in", std::ios::binary) << input;
  const std::string cmd =
      command + " < " + dir + "/cmd.in > " + dir + "/cmd.out 2> " + dir + "/cmd.err";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(dir + "/cmd.out"),
          Slurp(dir + "/cmd.err")};
}

}  // namespace cohort::testutil

#endif  // COHORT_CORE_TESTING_TEST_UTIL_H_
