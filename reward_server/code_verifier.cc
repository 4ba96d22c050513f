#include "reward_server/code_verifier.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace cohort::reward {
namespace {

using Clock = std::chrono::steady_clock;

// Runs /sandbox/solution.py, then each statement of /sandbox/tests.json,
// reporting "<nonce> <i> pass|fail" on fd 4. The nonce comes from fd 3 and
// lives only in this function's frame; the audit hook keeps the program
// from reaching frames, objects, tracing, ctypes, other processes' memory
// and new executables.
const char kStatementHarness[] = R"PY(
import json, os, signal, sys, time

def _cohort_run():
    _write, _exec, _compile, _BE = os.write, exec, compile, BaseException
    _getcwd, _str, _isinstance, _bytes = os.getcwd, str, isinstance, bytes
    nonce = os.read(3, 256).decode().strip()
    os.close(3)
    with open('/sandbox/tests.json', encoding='utf-8') as f:
        spec = json.load(f)
    tests, seconds = spec['tests'], spec['seconds']
    _monotonic, _setitimer, _real = time.monotonic, signal.setitimer, signal.ITIMER_REAL
    deadline = _monotonic() + seconds
    class _TestTimeout(BaseException):
        pass
    def _alarm(signum, frame):
        raise _TestTimeout()
    with open('/sandbox/solution.py', encoding='utf-8', errors='replace') as f:
        src = f.read()
    blocked = frozenset((
        'sys._current_frames', 'sys._current_exceptions',
        'sys.settrace', 'sys.setprofile', 'gc.get_objects',
        'gc.get_referrers', 'gc.get_referents',
        'os.exec', 'os.posix_spawn', 'os.spawn', 'os.system',
        'subprocess.Popen', 'pty.spawn', 'os.startfile', 'sys._getframemodulename',
    ))
    getframe, busy = sys._getframe, [False]
    frame_attrs = frozenset(('tb_frame', 'gi_frame', 'cr_frame', 'ag_frame', 'f_back'))
    def hook(event, args):
        # The standard library needs sys._getframe (enum, typing,
        # namedtuple); the program and inspect do not get frames.
        if event == 'object.__getattr__' and (len(args) < 2 or args[1] not in frame_attrs):
            return
        if (event == 'sys._getframe' or event == 'object.__getattr__') and not busy[0]:
            busy[0] = True
            try:
                name = getframe(1).f_code.co_filename
            finally:
                busy[0] = False
            if not name.startswith('/usr/lib/python3') or name.endswith(('/inspect.py', '/traceback.py')):
                raise RuntimeError('blocked in the cohort sandbox: ' + event)
            return
        if event in blocked or event.startswith('ctypes.') or event.startswith('_ctypes'):
            raise RuntimeError('blocked in the cohort sandbox: ' + event)
        if event == 'open' and args and _isinstance(args[0], (_str, _bytes)):
            p = args[0].decode('utf-8', 'replace') if _isinstance(args[0], _bytes) else args[0]
            last = p.rstrip('/').rsplit('/', 1)[-1]
            if last in ('mem', 'pagemap', 'environ', 'kcore'):
                raise RuntimeError('blocked in the cohort sandbox: open ' + p)
        if event == 'os.symlink' and args:
            target = _str(args[0])
            if 'proc' in target or 'self' in target or 'fd' in target:
                raise RuntimeError('blocked in the cohort sandbox: symlink')
    sys.addaudithook(hook)
    g = {'__name__': '__main__', '__builtins__': __builtins__}
    try:
        _exec(_compile(src, 'solution.py', 'exec'), g)
    except _BE as e:
        try:
            msg = (type(e).__name__ + ': ' + _str(e))[:200].replace('\n', ' ')
            _write(4, (nonce + ' ended ' + msg + '\n').encode())
        except _BE:
            pass
        os._exit(3)
    i = 0
    n = len(tests)
    for t in tests:
        ok = False
        try:
            # Each test gets an equal share of the time left, so one that
            # loops does not take the others' time.
            share = (deadline - _monotonic()) / (n - i)
            signal.signal(signal.SIGALRM, _alarm)
            _setitimer(_real, max(share, 0.05))
            _exec(_compile(t, 'test_%d' % i, 'exec'), g)
            _setitimer(_real, 0)
            ok = True
        except _BE:
            ok = False
        try:
            _setitimer(_real, 0)
        except _BE:
            pass
        try:
            _write(4, (nonce + ' ' + _str(i) + (' pass\n' if ok else ' fail\n')).encode())
        except _BE:
            pass
        i += 1
    try:
        _write(4, (nonce + ' done\n').encode())
    except _BE:
        pass
    sys.stdout.flush()
    os._exit(0)

_cohort_run()
)PY";

std::string Nonce() {
  std::random_device rd;
  std::string out;
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) out.push_back(kHex[rd() & 15]);
  return out;
}

// Splits on `sep`, keeping empty pieces.
std::vector<std::string> Split(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = text.find(sep, start);
    if (at == std::string_view::npos) {
      out.emplace_back(text.substr(start));
      return out;
    }
    out.emplace_back(text.substr(start, at - start));
    start = at + 1;
  }
}

std::string NormalizeOutput(std::string_view text) {
  std::vector<std::string> lines = Split(text, '\n');
  for (auto& l : lines) {
    while (!l.empty() && (l.back() == ' ' || l.back() == '\t' || l.back() == '\r')) {
      l.pop_back();
    }
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  size_t first = 0;
  while (first < lines.size() && lines[first].empty()) ++first;
  std::string out;
  for (size_t i = first; i < lines.size(); ++i) {
    if (i > first) out.push_back('\n');
    out += lines[i];
  }
  return out;
}

}  // namespace

std::string ExtractPythonCode(std::string_view completion) {
  // Scan fenced blocks; remember the last python (or untagged) one.
  std::string best;
  bool found = false;
  size_t pos = 0;
  while (true) {
    size_t open = completion.find("```", pos);
    if (open == std::string_view::npos) break;
    size_t eol = completion.find('\n', open + 3);
    if (eol == std::string_view::npos) break;
    std::string_view tag = completion.substr(open + 3, eol - open - 3);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\r')) {
      tag.remove_suffix(1);
    }
    while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
    size_t close = completion.find("```", eol + 1);
    std::string_view body = completion.substr(
        eol + 1, (close == std::string_view::npos ? completion.size() : close) - eol - 1);
    if (tag == "python" || tag == "py" || tag == "python3" || tag == "Python" || tag.empty()) {
      best = std::string(body);
      found = true;
    }
    if (close == std::string_view::npos) break;
    pos = close + 3;
  }
  return found ? best : std::string(completion);
}

ComponentResult CodeAccuracy(const Sample& sample, Sandbox* sandbox,
                             const std::string& sandbox_error, const CodeVerifierOptions& options) {
  // --- Validate the tests first: a malformed sample is INVALID whether or
  // not a sandbox exists.
  if (!sample.extra.is_object() || !sample.extra.contains("tests")) {
    return ComponentResult::Invalid("code: missing field 'tests'");
  }
  nlohmann::json tests = sample.extra["tests"];
  if (tests.is_string()) {
    tests = nlohmann::json::parse(tests.get<std::string>(), nullptr, false);
    if (tests.is_discarded()) {
      return ComponentResult::Invalid("code: 'tests' is a string that is not JSON");
    }
  }
  if (!tests.is_array() || tests.empty()) {
    return ComponentResult::Invalid("code: 'tests' must be a non-empty list");
  }
  if (static_cast<int>(tests.size()) > options.max_tests) {
    return ComponentResult::Invalid(
        absl::StrCat("code: ", tests.size(), " tests, more than the limit ", options.max_tests));
  }
  const bool statements = tests[0].is_string();
  for (size_t i = 0; i < tests.size(); ++i) {
    const auto& t = tests[i];
    if (statements) {
      if (!t.is_string()) {
        return ComponentResult::Invalid(
            absl::StrCat("code: tests[", i, "]: expected a string like tests[0]"));
      }
    } else if (!t.is_object() || !t.contains("input") || !t.contains("output") ||
               !t["input"].is_string() || !t["output"].is_string()) {
      return ComponentResult::Invalid(
          absl::StrCat("code: tests[", i,
                       "]: expected a statement string or {\"input\": str, \"output\": "
                       "str}"));
    }
  }
  if (sandbox == nullptr) {
    return ComponentResult::Error(sandbox_error.empty() ? "code: no sandbox" : sandbox_error);
  }

  const std::string code = ExtractPythonCode(sample.completion);
  const auto start = Clock::now();
  auto remaining = [&] {
    return options.budget_seconds - std::chrono::duration<double>(Clock::now() - start).count();
  };
  const double run_limit = sandbox->options().limits.wall_seconds;
  const size_t n = tests.size();

  if (statements) {
    const std::string nonce = Nonce();
    SandboxRun run;
    run.files = {{"harness.py", kStatementHarness}, {"solution.py", code}, {"tests.json", ""}};
    run.args = {"/sandbox/harness.py"};
    run.fd3_data = nonce;
    run.wall_seconds = std::min(run_limit, std::max(0.05, remaining()));
    // The harness shares the run's time among the tests, keeping a margin
    // for start-up and reporting.
    run.files[2].second =
        nlohmann::json{{"tests", tests}, {"seconds", std::max(0.1, run.wall_seconds * 0.9 - 0.2)}}
            .dump();
    auto result = sandbox->Run(run);
    if (!result.ok()) {
      return ComponentResult::Error(absl::StrCat("code: ", result.status().message()));
    }
    std::set<size_t> passed;
    bool done = false;
    std::string ended;
    for (const std::string& line : Split(result->channel, '\n')) {
      std::vector<std::string> f = Split(line, ' ');
      if (f.size() < 2 || f[0] != nonce) continue;  // forged or garbage
      if (f[1] == "done") {
        done = true;
      } else if (f[1] == "ended" && f.size() >= 3) {
        ended = line.substr(f[0].size() + f[1].size() + 2);
      } else if (f.size() == 3 && f[2] == "pass") {
        size_t i = 0;
        if (absl::SimpleAtoi(f[1], &i) && i < n) passed.insert(i);
      }
    }
    std::string why = absl::StrCat(passed.size(), "/", n, " tests passed");
    if (!ended.empty()) {
      absl::StrAppend(&why, "; the program ended before the tests (", ended, ")");
    } else if (result->timed_out) {
      absl::StrAppend(&why, "; killed after ", run.wall_seconds, " s wall time");
    } else if (!done) {
      absl::StrAppend(&why, "; the program stopped during the tests (exit ", result->exit_code,
                      ")");
    }
    return ComponentResult::Ok(static_cast<double>(passed.size()) / n, why);
  }

  // --- stdin/stdout pairs: one run each.
  size_t passed = 0, not_run = 0, timed_out = 0;
  for (size_t i = 0; i < n; ++i) {
    double left = remaining();
    if (left < 0.05) {
      not_run = n - i;
      break;
    }
    SandboxRun run;
    run.files = {{"solution.py", code}};
    run.args = {"/sandbox/solution.py"};
    run.stdin_data = tests[i]["input"].get<std::string>();
    run.wall_seconds = std::min(run_limit, left);
    auto result = sandbox->Run(run);
    if (!result.ok()) {
      return ComponentResult::Error(absl::StrCat("code: ", result.status().message()));
    }
    if (result->timed_out) ++timed_out;
    if (!result->timed_out && result->exit_code == 0 && !result->stdout_truncated &&
        NormalizeOutput(result->stdout_data) ==
            NormalizeOutput(tests[i]["output"].get<std::string>())) {
      ++passed;
    }
  }
  std::string why = absl::StrCat(passed, "/", n, " tests passed");
  if (timed_out > 0) absl::StrAppend(&why, "; ", timed_out, " timed out");
  if (not_run > 0) {
    absl::StrAppend(&why, "; ", not_run, " not run (time budget spent)");
  }
  return ComponentResult::Ok(static_cast<double>(passed) / n, why);
}

}  // namespace cohort::reward
