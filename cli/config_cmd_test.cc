// Tests `cohort config` through the real binary: print (defaults, file,
// --set), check (ok and each kind of error, exit codes), keys.
#include <string>

#include "core/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::HasSubstr;

const std::string kCohort = COHORT_BINARY_DIR "/cli/cohort";

using Result = cohort::testutil::CommandResult;

class ConfigCmdTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    return tmp_.Write(name, text);
  }

  Result Run(const std::string& args) {
    return cohort::testutil::RunCommand(kCohort + " config " + args, dir_);
  }

  cohort::testutil::ScopedTempDir tmp_{"config_cmd_test"};
  const std::string dir_ = tmp_.path();
};

TEST_F(ConfigCmdTest, PrintsEffectiveConfig) {
  std::string path = Write("run.yaml", "sampling:\n  group_size: 4\n");
  Result r = Run("print " + path + " --set sampling.temperature=0.5 --set=run.name=exp1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  group_size: 4\n"));
  EXPECT_THAT(r.out, HasSubstr("  temperature: 0.5\n"));
  EXPECT_THAT(r.out, HasSubstr("  name: exp1\n"));
  EXPECT_THAT(r.out, HasSubstr("  max_restarts: 5\n"));  // every key, defaults too
  // The printed config is itself a valid config that prints the same.
  std::string printed = Write("printed.yaml", r.out);
  Result again = Run("print " + printed);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, r.out);

  Result defaults = Run("print");
  ASSERT_EQ(defaults.exit_code, 0) << defaults.err;
  EXPECT_THAT(defaults.out, HasSubstr("  group_size: 8\n"));
}

TEST_F(ConfigCmdTest, CheckReportsErrors) {
  std::string good = Write("good.yaml", "run:\n  seed: 3\n");
  Result ok = Run("check " + good);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("ok"));

  std::string bad = Write("bad.yaml", "run:\n  seed: 3\nsampling:\n  temperature: -1\n");
  Result r = Run("check " + bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, bad + ":4: sampling.temperature: expected a number > 0, got \"-1\"\n");

  r = Run("check " + good + " --set sampling.top_k=-2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--set sampling.top_k=-2: sampling.top_k: expected an integer "
                               ">= 0, got \"-2\""));

  r = Run("check " + dir_ + "/missing.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot read config file"));

  EXPECT_EQ(Run("check").exit_code, 2);
  EXPECT_EQ(Run("frobnicate").exit_code, 2);
  EXPECT_EQ(Run("print --bogus").exit_code, 2);
  Result help = Run("print --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--set"));
}

TEST_F(ConfigCmdTest, KeysListsEveryKey) {
  Result r = Run("keys");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sampling.temperature"));
  EXPECT_THAT(r.out, HasSubstr("reward.tasks.<name>.weights"));
  EXPECT_THAT(r.out, HasSubstr("one of float32|bfloat16"));
}

}  // namespace
