// The names of the built-in reward verifiers: the one list that the config
// (reward.tasks.*.verifier, the default tasks, docs/config.md) and the
// reward server's scorer both use.
//
// A list of names rather than a registry the verifiers fill in: core/ (the
// config) cannot depend on reward_server/, tools that only read a config
// (`cohort config`) should not link the verifiers, and a static-init
// registry would make the valid names depend on what a binary links. The
// scorer dispatches on these names, and scorer_test checks that it accepts
// and scores every one of them, so adding a verifier means adding its name
// here and its branch in reward_server/scorer.cc.
//
// Thread-safety: constants.
#ifndef COHORT_CORE_VERIFIER_NAMES_H_
#define COHORT_CORE_VERIFIER_NAMES_H_

#include <array>
#include <string>
#include <string_view>

namespace cohort {

inline constexpr std::array<std::string_view, 4> kVerifierNames = {"math", "gsm8k", "countdown",
                                                                   "code"};

inline bool IsVerifierName(std::string_view name) {
  for (std::string_view v : kVerifierNames) {
    if (v == name) return true;
  }
  return false;
}

// "math, gsm8k, countdown or code", for error messages.
inline std::string VerifierNamesText() {
  std::string out;
  for (size_t i = 0; i < kVerifierNames.size(); ++i) {
    if (i > 0) out += i + 1 == kVerifierNames.size() ? " or " : ", ";
    out += kVerifierNames[i];
  }
  return out;
}

}  // namespace cohort

#endif  // COHORT_CORE_VERIFIER_NAMES_H_
