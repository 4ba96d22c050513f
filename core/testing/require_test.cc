#include "core/testing/require.h"

#include <cstdlib>

#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace cohort::testutil {
namespace {

void SkipOrFail() { COHORT_SKIP_OR_FAIL("missing thing " << 42); }

// Runs SkipOrFail() with COHORT_REQUIRE_DATA set to `value` (nullptr:
// unset) and returns the one result it reported.
::testing::TestPartResult RunWith(const char* value) {
  if (value == nullptr) {
    unsetenv("COHORT_REQUIRE_DATA");
  } else {
    setenv("COHORT_REQUIRE_DATA", value, 1);
  }
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    SkipOrFail();
  }
  EXPECT_EQ(results.size(), 1);
  return results.GetTestPartResult(0);
}

class RequireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* v = std::getenv("COHORT_REQUIRE_DATA");
    had_ = v != nullptr;
    if (had_) saved_ = v;
  }
  void TearDown() override {
    if (had_) {
      setenv("COHORT_REQUIRE_DATA", saved_.c_str(), 1);
    } else {
      unsetenv("COHORT_REQUIRE_DATA");
    }
  }
  bool had_ = false;
  std::string saved_;
};

TEST_F(RequireTest, SkipsByDefault) {
  ::testing::TestPartResult r = RunWith(nullptr);
  EXPECT_TRUE(r.skipped());
  EXPECT_NE(std::string(r.message()).find("missing thing 42"), std::string::npos) << r.message();
}

TEST_F(RequireTest, SkipsForOtherValues) {
  EXPECT_TRUE(RunWith("0").skipped());
  EXPECT_TRUE(RunWith("").skipped());
}

TEST_F(RequireTest, FailsWhenRequired) {
  ::testing::TestPartResult r = RunWith("1");
  EXPECT_TRUE(r.fatally_failed());
  EXPECT_NE(std::string(r.message()).find("missing thing 42"), std::string::npos) << r.message();
  EXPECT_NE(std::string(r.message()).find("COHORT_REQUIRE_DATA=1"), std::string::npos)
      << r.message();
}

}  // namespace
}  // namespace cohort::testutil
