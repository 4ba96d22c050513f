// The `code` verifier: runs a completion's Python program against test
// cases in the sandbox. See docs/rewards.md for the test formats.
//
// sample.extra["tests"] is either
//   - a list of Python statements (usually asserts), run after the program
//     in the same interpreter, each on its own (try/except around each): a
//     test passes when its statement completes; or
//   - a list of {"input": str, "output": str} pairs: the program is run once
//     per pair with `input` on stdin, and passes when it exits 0 and its
//     stdout equals `output` line by line (each line's trailing whitespace
//     and the whole output's leading/trailing blank lines ignored).
// (A JSON string holding such a list is accepted too.) The component value
// is the fraction of tests passed. A malformed `tests` field is INVALID; no
// sandbox is ERROR; everything the program does (crash, loop, exit early,
// exceed a limit, print garbage) is an OK outcome with its tests failed.
//
// Statement tests report through fd 4 with a per-run random nonce read
// from fd 3 before the program runs; the harness installs an audit hook
// that blocks frame and object introspection, tracing and ctypes, so the
// program cannot read the nonce and forge passes. A program that ends
// before the tests (sys.exit, os._exit, an exception at top level) passes
// none.
//
// Thread-safe: pure function of its arguments; the sandbox is thread-safe.
#ifndef COHORT_REWARD_SERVER_CODE_VERIFIER_H_
#define COHORT_REWARD_SERVER_CODE_VERIFIER_H_

#include <string>
#include <string_view>

#include "reward_server/sample.h"
#include "reward_server/sandbox.h"

namespace cohort::reward {

// The last ```python (or ```py, ```python3, or untagged) fenced block of
// `completion`; the whole completion when there is none.
std::string ExtractPythonCode(std::string_view completion);

struct CodeVerifierOptions {
  int max_tests = 256;  // more is INVALID
  // Wall-clock budget for all sandbox runs of one sample; each run also
  // has the sandbox's own limit. Tests that cannot start within the budget
  // count as failed (the program was too slow).
  double budget_seconds = 10.0;
};

// `sandbox` may be null; then the result is ERROR with `sandbox_error` as
// the reason.
ComponentResult CodeAccuracy(const Sample& sample, Sandbox* sandbox,
                             const std::string& sandbox_error,
                             const CodeVerifierOptions& options = {});

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_CODE_VERIFIER_H_
