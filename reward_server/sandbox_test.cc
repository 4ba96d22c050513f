// Sandbox and `code` verifier: hostile programs are contained and scored as
// failed tests (status OK), correct and partial solutions score right.
#include "reward_server/sandbox.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/testing/require.h"
#include "gtest/gtest.h"
#include "reward_server/code_verifier.h"

namespace cohort::reward {
namespace {

SandboxOptions TestOptions() {
  SandboxOptions o;
  o.limits.wall_seconds = 2.0;
  o.limits.cpu_seconds = 2;
  o.limits.memory_bytes = 512LL << 20;
  o.limits.max_processes = 16;
  o.limits.output_bytes = 64 << 10;
  o.limits.tmp_bytes = 8 << 20;
  o.limits.file_size_bytes = 4 << 20;
  // Separate from the defaults, and per process, so that a server or other
  // test processes running beside (ctest -j) do not share these uids and
  // PoolProcesses() sees only this process's runs.
  o.first_uid = 62000 + 8 * (static_cast<int>(getpid()) % 256);
  o.uid_count = 8;
  return o;
}

class SandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("COHORT_TEST_SECRET", "hunter2-secret-value", 1);
    auto s = Sandbox::Create(TestOptions());
    if (!s.ok()) {
      error_ = new std::string(s.status().message());
      return;
    }
    sandbox_ = s->release();
  }
  static void TearDownTestSuite() {
    delete sandbox_;
    sandbox_ = nullptr;
  }
  void SetUp() override {
    if (sandbox_ == nullptr) {
      COHORT_SKIP_OR_FAIL("sandbox unavailable on this machine: " << *error_);
    }
  }
  static int PoolProcesses() {
    int n = 0;
    const SandboxOptions o = TestOptions();
    for (int uid = o.first_uid; uid < o.first_uid + o.uid_count; ++uid) {
      n += CountProcessesOfUid(uid);
    }
    return n;
  }
  static SandboxResult RunPy(const std::string& code, const std::string& stdin_data = "") {
    SandboxRun run;
    run.files = {{"main.py", code}};
    run.args = {"/sandbox/main.py"};
    run.stdin_data = stdin_data;
    auto r = sandbox_->Run(run);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SandboxResult{};
  }

  static Sandbox* sandbox_;
  static std::string* error_;
};
Sandbox* SandboxTest::sandbox_ = nullptr;
std::string* SandboxTest::error_ = nullptr;

Sample CodeSample(const std::string& code, nlohmann::json tests) {
  Sample s;
  s.id = "t";
  s.task = "code";
  s.completion = "Here is my solution:\n```python\n" + code + "\n```\nDone.";
  s.extra = {{"tests", std::move(tests)}};
  return s;
}

TEST_F(SandboxTest, RunsPythonAsUnprivilegedUserWithCleanEnvironment) {
  SandboxResult r = RunPy("import os\nprint(os.getuid())\nprint(sorted(os.environ.items()))\n");
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data.find("hunter2"), std::string::npos);
  EXPECT_EQ(r.stdout_data.find("COHORT_TEST_SECRET"), std::string::npos);
  EXPECT_NE(r.stdout_data.rfind("0\n", 0), 0u) << "ran as uid 0";
}

TEST_F(SandboxTest, StdinAndExitCode) {
  SandboxResult r = RunPy("import sys\nprint(sys.stdin.read().upper())\nsys.exit(7)\n", "hello");
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.stdout_data, "HELLO\n");
  EXPECT_FALSE(r.timed_out);
}

TEST_F(SandboxTest, WallClockTimeoutKillsTheRun) {
  SandboxResult r = RunPy("import time\ntime.sleep(100)\n");
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(r.wall_seconds, 4.0);
  EXPECT_EQ(PoolProcesses(), 0);
}

TEST_F(SandboxTest, DaemonDiesWithThePidNamespace) {
  // The program double-forks a daemon in its own session and exits at
  // once. The daemon must be gone when Run returns, killed by the pid
  // namespace's end (not by the uid sweep: stragglers_killed stays 0).
  SandboxResult r = RunPy(
      "import os, time\n"
      "if os.fork() == 0:\n"
      "    os.setsid()\n"
      "    if os.fork() == 0:\n"
      "        time.sleep(60)\n"
      "    os._exit(0)\n"
      "time.sleep(0.2)\n"
      "print('parent done')\n");
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_FALSE(r.timed_out);
  EXPECT_LT(r.wall_seconds, 1.9);
  EXPECT_EQ(r.stragglers_killed, 0);
  EXPECT_EQ(PoolProcesses(), 0);
}

TEST_F(SandboxTest, OutputIsCappedAndTheWriterStopped) {
  SandboxResult r = RunPy(
      "import sys\nfor _ in range(100000):\n    sys.stdout.write('x' * "
      "65536)\n");
  EXPECT_TRUE(r.stdout_truncated);
  EXPECT_EQ(r.stdout_data.size(), size_t{64 << 10});
  EXPECT_FALSE(r.timed_out) << "the writer should fail on the closed pipe";
}

TEST_F(SandboxTest, KillEverythingDoesNotReachOutside) {
  SandboxResult r = RunPy(
      "import os, signal\n"
      "os.kill(os.getppid(), signal.SIGKILL)\n"
      "try:\n    os.killpg(0, signal.SIGKILL)\nexcept OSError: pass\n"
      "os.kill(-1, signal.SIGKILL)\n");
  (void)r;
  // This test process is still here, and so is everything else.
  SandboxResult ok = RunPy("print('still fine')\n");
  EXPECT_EQ(ok.stdout_data, "still fine\n");
}

TEST_F(SandboxTest, OnlyItsOwnProcessesAreVisible) {
  SandboxResult r = RunPy(
      "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if "
      "p.isdigit()))\n");
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "[1, 2]\n");
}

TEST_F(SandboxTest, ParallelRunsUseDistinctUids) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      SandboxResult r = RunPy("import time, os\ntime.sleep(0.3)\nprint('ok')\n");
      if (r.stdout_data == "ok\n") ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 4);
}

// --- The code verifier.

TEST_F(SandboxTest, CorrectSolutionPassesAllStatementTests) {
  auto r = CodeAccuracy(CodeSample("def add(a, b):\n    return a + b",
                                   {"assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                                    "assert add('a', 'b') == 'ab'"}),
                        sandbox_, "");
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.value, 1.0) << r.reason;
}

TEST_F(SandboxTest, CommonStandardLibraryWorksUnderTheHarness) {
  const std::string code =
      "import collections, dataclasses, enum, typing, heapq, itertools, re\n"
      "import functools, math, sys, json, logging, warnings\n"
      "sys.setrecursionlimit(10000)\n"
      "P = collections.namedtuple('P', 'x y')\n"
      "@dataclasses.dataclass\nclass Q:\n    a: int\n"
      "class C(enum.Enum):\n    A = 1\n"
      "@functools.lru_cache(None)\ndef fib(n: int) -> int:\n"
      "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
      "warnings.warn('hello')\nlogging.getLogger('x').warning('hi')\n"
      "def solve(xs: typing.List[int]) -> int:\n"
      "    return sum(heapq.nsmallest(2, xs)) + P(1, 2).x + Q(3).a + C.A.value\n";
  auto r = CodeAccuracy(
      CodeSample(code, {"assert solve([5, 1, 2]) == 8", "assert fib(80) == 23416728348467685",
                        "assert re.match('a+', 'aaa')"}),
      sandbox_, "");
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.value, 1.0) << r.reason;
}

TEST_F(SandboxTest, PartialSolutionGivesTheFraction) {
  auto r = CodeAccuracy(CodeSample("def add(a, b):\n    return a + b if a >= 0 else 0",
                                   {"assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                                    "assert add(-5, 1) == -4", "assert add(2, 2) == 4"}),
                        sandbox_, "");
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.value, 0.75) << r.reason;
}

TEST_F(SandboxTest, OneLoopingTestDoesNotTakeTheOthersTime) {
  auto r = CodeAccuracy(
      CodeSample("def f(x):\n    while x < 0: pass\n    return x",
                 {"assert f(1) == 1", "assert f(-1) == 0", "assert f(2) == 2", "assert f(3) == 3"}),
      sandbox_, "");
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.value, 0.75) << r.reason;
}

TEST_F(SandboxTest, StdinStdoutTests) {
  nlohmann::json tests = nlohmann::json::array({{{"input", "1 2\n"}, {"output", "3\n"}},
                                                {{"input", "10 20"}, {"output", "30"}},
                                                {{"input", "-1 -1\n"}, {"output", "-2  \n\n"}},
                                                {{"input", "2 2\n"}, {"output", "5\n"}}});
  auto r = CodeAccuracy(CodeSample("a, b = map(int, input().split())\nprint(a + b)", tests),
                        sandbox_, "");
  EXPECT_EQ(r.status, Status::kOk) << r.reason;
  EXPECT_DOUBLE_EQ(r.value, 0.75) << r.reason;
  // A program that exits early prints nothing and passes nothing.
  auto early = CodeAccuracy(CodeSample("import sys\nsys.exit(0)", tests), sandbox_, "");
  EXPECT_EQ(early.status, Status::kOk);
  EXPECT_DOUBLE_EQ(early.value, 0.0);
}

TEST_F(SandboxTest, WholeCompletionIsTheProgramWithoutAFence) {
  Sample s = CodeSample("", {"assert sq(3) == 9"});
  s.completion = "def sq(x):\n    return x * x\n";
  auto r = CodeAccuracy(s, sandbox_, "");
  EXPECT_DOUBLE_EQ(r.value, 1.0) << r.reason;
  EXPECT_EQ(ExtractPythonCode("a\n```python\nx=1\n```\nb\n```py\ny=2\n```\n"), "y=2\n");
  EXPECT_EQ(ExtractPythonCode("no fence"), "no fence");
}

TEST_F(SandboxTest, MalformedTestsAreInvalid) {
  for (const nlohmann::json& tests :
       {nlohmann::json(nullptr), nlohmann::json(3), nlohmann::json::array(),
        nlohmann::json::array({"assert True", 5}), nlohmann::json::array({{{"input", "1"}}}),
        nlohmann::json("not json ["), nlohmann::json::array({{{"input", 1}, {"output", "1"}}})}) {
    auto r = CodeAccuracy(CodeSample("x = 1", tests), sandbox_, "");
    EXPECT_EQ(r.status, Status::kInvalid) << tests.dump();
    EXPECT_NE(r.reason.find("tests"), std::string::npos) << r.reason;
  }
  Sample missing = CodeSample("x = 1", {});
  missing.extra = nlohmann::json::object();
  EXPECT_EQ(CodeAccuracy(missing, sandbox_, "").status, Status::kInvalid);
}

TEST(CodeVerifierNoSandbox, ErrorNeverRunsCode) {
  auto r = CodeAccuracy(CodeSample("x = 1", {"assert x == 1"}), nullptr,
                        "sandbox unavailable: bwrap missing");
  EXPECT_EQ(r.status, Status::kError);
  EXPECT_EQ(r.reason, "sandbox unavailable: bwrap missing");
}

TEST(SandboxCreate, MissingBwrapIsAClearError) {
  SandboxOptions o = TestOptions();
  o.bwrap_path = "/nonexistent/bwrap";
  auto s = Sandbox::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("bubblewrap not found"), std::string::npos);
}

// --- Hostile programs. None defines `add` unless its attack succeeded, so
// every one must come back OK with 0 tests passed; afterwards the host is
// unchanged and a correct solution still scores 1.

struct Hostile {
  const char* name;
  std::string code;
};

TEST_F(SandboxTest, HostileProgramsAreContainedAndFailTheirTests) {
  // A listener the programs try to reach.
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  const std::string host_file = absl::StrCat("/tmp/cohort_sandbox_escape_", getpid());
  std::filesystem::remove(host_file);
  const std::string pass = "\ndef add(a, b):\n    return a + b\n";

  std::vector<Hostile> hostile = {
      {"network socket to the host",
       absl::StrCat("import socket\ns = socket.create_connection(('127.0.0.1', ", port,
                    "), timeout=1)", pass)},
      {"network to the internet",
       "import socket\ns = socket.create_connection(('1.1.1.1', 80), "
       "timeout=1)" +
           pass},
      {"fork bomb",
       "import os\nwhile True:\n    try:\n        os.fork()\n    except "
       "OSError:\n        pass\n"},
      {"thread bomb",
       "import threading, time\nwhile True:\n    "
       "threading.Thread(target=time.sleep, args=(100,)).start()\n"},
      {"allocate 10 GB", "x = bytearray(10 * 1024 ** 3)" + pass},
      {"infinite loop", "while True:\n    pass\n"},
      {"sleep past the timeout", "import time\ntime.sleep(1000)" + pass},
      {"ignore signals and spin",
       "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, "
       "signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\nwhile "
       "True: pass\n"},
      {"write outside tmp",
       "ok = False\nfor p in ('/usr/evil', '/evil', '/sandbox/evil', "
       "'/work/evil', '/etc/evil'):\n    try:\n        open(p, "
       "'w').write('x'); ok = True\n    except OSError: pass\nif ok:" +
           absl::StrReplaceAll(pass, {{"\n", "\n    "}})},
      {"write the host's /tmp", absl::StrCat("open('", host_file, "', 'w').write('escaped')\n",
                                             "import os\nif os.path.exists('/work') or "
                                             "os.path.exists('/root'):",
                                             absl::StrReplaceAll(pass, {{"\n", "\n    "}}))},
      {"read the server's environment",
       "import os\nif 'COHORT_TEST_SECRET' in os.environ or "
       "'hunter2' in open('/proc/1/environ').read():" +
           absl::StrReplaceAll(pass, {{"\n", "\n    "}})},
      {"kill the parent",
       "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
       "import sys\nsys.exit(0)" +
           pass},
      {"killpg and kill -9 -1",
       "import os, signal\ntry:\n    os.killpg(os.getpgid(0), "
       "signal.SIGKILL)\nexcept OSError: pass\nos.kill(-1, signal.SIGKILL)" +
           pass},
      {"fill the disk",
       "f = open('/tmp/fill', 'wb')\nwhile True:\n    f.write(b'x' * "
       "(1 << 20))\n    f.flush()\n"},
      {"fill /dev/shm",
       "f = open('/dev/shm/fill', 'wb')\nwhile True:\n    f.write(b'x' * "
       "(1 << 20))\n    f.flush()\n"},
      {"print gigabytes", "import sys\nwhile True:\n    sys.stdout.write('y' * (1 << 20))\n"},
      {"daemonize a child that outlives the program",
       "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if "
       "os.fork() == 0:\n        time.sleep(120)\n    os._exit(0)\n"
       "import sys\nsys.exit(0)\n"},
      {"read /proc of other processes",
       "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n  "
       "      try:\n            c = open('/proc/%s/cmdline' % p).read()\n  "
       "      except OSError: continue\n        if 'sandbox_test' in c:" +
           absl::StrReplaceAll(pass, {{"\n", "\n            "}})},
      {"sys.exit(0) before the tests", pass + "import sys\nsys.exit(0)\n"},
      {"os._exit(0) before the tests", pass + "import os\nos._exit(0)\n"},
      {"forge the pass channel on every fd",
       "import os\nfor fd in range(1, 20):\n    for i in range(2):\n        "
       "try:\n            os.write(fd, b'00000000000000000000000000000000 "
       "%d pass\\n' % i)\n        except OSError: pass\n"},
      {"steal the nonce from the harness's frame",
       "import sys, os\nf = sys._getframe(1)\nwhile f is not None:\n    n = "
       "f.f_locals.get('nonce')\n    if n:\n        os.write(4, (n + ' 0 "
       "pass\\n' + n + ' 1 pass\\n').encode())\n    f = f.f_back\n"},
      {"steal the nonce with gc",
       "import gc, os, re\nfor o in gc.get_objects():\n    pass\n"
       "for o in list(gc.get_referents(*gc.get_objects())):\n    if "
       "isinstance(o, str) and re.fullmatch('[0-9a-f]{32}', o):\n        "
       "os.write(4, (o + ' 0 pass\\n' + o + ' 1 pass\\n').encode())\n"},
      {"steal the nonce via a traceback",
       "import os\ntry:\n    raise ValueError\nexcept ValueError as e:\n    "
       "f = e.__traceback__.tb_frame\n    while f:\n        n = "
       "f.f_locals.get('nonce')\n        if n: os.write(4, (n + ' 0 "
       "pass\\n').encode())\n        f = f.f_back\n"},
      {"steal the nonce from fd 3 or /proc/self/mem",
       "import os\ntry:\n    print(os.read(3, 100))\nexcept OSError: pass\n"
       "m = open('/proc/self/mem', 'rb')\n"},
      {"spawn a fresh interpreter",
       "import subprocess\nsubprocess.run(['/usr/bin/python3', '-c', "
       "'print(1)'])\n"},
      {"become root", "import os\nos.setuid(0)" + pass},
      {"open every file descriptor",
       "fs = []\nwhile True:\n    fs.append(open('/sandbox/solution.py'))\n"},
      {"giant file in tmp",
       "f = open('/tmp/big', 'wb')\nf.seek(1 << 40)\nf.write(b'x')\nf.flush()" + pass},
      {"recursion bomb", "def r(n):\n    return r(n + 1)\nr(0)" + pass},
      {"block on stdin", "input()" + pass},
  };
  ASSERT_GE(hostile.size(), 20u);

  CodeVerifierOptions options;
  options.budget_seconds = 6;
  // Run four at a time, as a server's workers would.
  std::vector<ComponentResult> results(hostile.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < hostile.size(); i = next++) {
        results[i] = CodeAccuracy(
            CodeSample(hostile[i].code, {"assert add(1, 2) == 3", "assert add(2, 3) == 5"}),
            sandbox_, "", options);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < hostile.size(); ++i) {
    SCOPED_TRACE(hostile[i].name);
    std::printf("  %-46s %s\n", hostile[i].name, results[i].reason.c_str());
    EXPECT_EQ(results[i].status, Status::kOk) << results[i].reason;
    EXPECT_EQ(results[i].value, 0.0) << results[i].reason;
  }

  // Contained: nothing reached the listener, nothing was written on the
  // host, nothing of theirs is still running.
  EXPECT_LT(accept(listener, nullptr, nullptr), 0);
  close(listener);
  EXPECT_FALSE(std::filesystem::exists(host_file));
  EXPECT_EQ(PoolProcesses(), 0);

  // And the verifier keeps working.
  auto good = CodeAccuracy(CodeSample(pass, {"assert add(1, 2) == 3", "assert add(2, 3) == 5"}),
                           sandbox_, "");
  EXPECT_EQ(good.status, Status::kOk);
  EXPECT_DOUBLE_EQ(good.value, 1.0) << good.reason;
}

}  // namespace
}  // namespace cohort::reward
