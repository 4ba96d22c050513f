// Test prerequisites that a user's clone may lack but CI must have.
//
// A test that needs something outside the repository (the shared data
// directory ../shared/data, bubblewrap, promtool, openssl, Chromium,
// iproute2, ...) calls COHORT_SKIP_OR_FAIL when it is missing:
//
//   if (!std::ifstream(path).good()) {
//     COHORT_SKIP_OR_FAIL("shared data not found at " << path);
//   }
//
// Normally the test is skipped with that message, so a fresh clone passes.
// With COHORT_REQUIRE_DATA=1 in the environment (.ci/run sets it) the test
// fails instead, so CI cannot lose a test silently because its machine
// lacks a prerequisite. Tests that need a GPU keep plain GTEST_SKIP: CI
// machines need not have one.
//
// Like GTEST_SKIP, the macro returns from the current function, so use it
// in a TEST body, SetUp() or a helper returning void. `reason` is anything
// that can follow `<<` on a gtest message.
#ifndef COHORT_CORE_TESTING_REQUIRE_H_
#define COHORT_CORE_TESTING_REQUIRE_H_

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace cohort::testutil {

// True when COHORT_REQUIRE_DATA=1: missing prerequisites fail tests.
inline bool PrerequisitesRequired() {
  const char* v = std::getenv("COHORT_REQUIRE_DATA");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace cohort::testutil

#define COHORT_SKIP_OR_FAIL(reason)                                                            \
  do {                                                                                         \
    if (::cohort::testutil::PrerequisitesRequired()) {                                         \
      GTEST_FAIL() << reason << " (COHORT_REQUIRE_DATA=1: this prerequisite must be present)"; \
    } else {                                                                                   \
      GTEST_SKIP() << reason;                                                                  \
    }                                                                                          \
  } while (0)

#endif  // COHORT_CORE_TESTING_REQUIRE_H_
