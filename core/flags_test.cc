#include "core/flags.h"

#include <gtest/gtest.h>

namespace cohort {
namespace {

TEST(FlagSetTest, ParsesEveryForm) {
  std::string name = "x";
  int64_t port = 7;
  double rate = 0;
  bool verbose = false, color = true;
  std::vector<std::string> sets;
  FlagSet flags("prog", "desc", "FILE");
  flags.String("name", &name, "a name");
  flags.Int("port", &port, "a port");
  flags.Double("rate", &rate, "a rate");
  flags.Bool("verbose", &verbose, "chatty");
  flags.Bool("color", &color, "colors");
  flags.StringList("set", &sets, "overrides");
  auto pos = flags.Parse(std::vector<std::string>{"--name=abc", "--port", "9", "file.yaml",
                                                  "--rate=0.5", "--verbose", "--nocolor", "--set",
                                                  "a.b=1", "--set=c.d=2", "--", "--literal"});
  ASSERT_TRUE(pos.ok()) << pos.status();
  EXPECT_EQ(name, "abc");
  EXPECT_EQ(port, 9);
  EXPECT_DOUBLE_EQ(rate, 0.5);
  EXPECT_TRUE(verbose);
  EXPECT_FALSE(color);
  EXPECT_EQ(sets, (std::vector<std::string>{"a.b=1", "c.d=2"}));
  EXPECT_EQ(*pos, (std::vector<std::string>{"file.yaml", "--literal"}));
}

TEST(FlagSetTest, ErrorsNameTheFlag) {
  int64_t port = 0;
  FlagSet flags("prog", "desc");
  flags.Int("port", &port, "a port");
  auto bad = flags.Parse(std::vector<std::string>{"--port=abc"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--port"), std::string::npos);
  EXPECT_NE(bad.status().message().find("abc"), std::string::npos);
  auto unknown = flags.Parse(std::vector<std::string>{"--prot=1"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown flag --prot"), std::string::npos);
  auto missing = flags.Parse(std::vector<std::string>{"--port"});
  EXPECT_FALSE(missing.ok());
}

TEST(FlagSetTest, HelpListsEveryFlag) {
  int64_t port = 5;
  FlagSet flags("prog", "does things");
  flags.Int("port", &port, "the port to bind");
  std::string help = flags.Help();
  EXPECT_NE(help.find("--port (int; default: 5)"), std::string::npos);
  EXPECT_NE(help.find("the port to bind"), std::string::npos);
  EXPECT_TRUE(absl::IsCancelled(flags.Parse(std::vector<std::string>{"--help"}).status()));
}

TEST(FlagSetTest, ConfigFlags) {
  std::string config;
  std::vector<std::string> overrides;
  FlagSet flags("prog", "Does things.");
  AddConfigFlags(flags, &config, &overrides, "", "Also passed on.");
  auto rest = flags.Parse(
      std::vector<std::string>{"--config", "run.yaml", "--set", "a.b=1", "--set=c.d=2", "pos"});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(config, "run.yaml");
  EXPECT_EQ(overrides, (std::vector<std::string>{"a.b=1", "c.d=2"}));
  EXPECT_EQ(*rest, std::vector<std::string>{"pos"});
  std::string help = flags.Help();
  EXPECT_NE(help.find("--config"), std::string::npos) << help;
  EXPECT_NE(help.find("section.key=value"), std::string::npos) << help;
  EXPECT_NE(help.find("Also passed on."), std::string::npos) << help;

  // Without --config (a positional CONFIG instead).
  std::vector<std::string> only_set;
  FlagSet positional("prog", "Takes CONFIG.", "CONFIG");
  AddConfigFlags(positional, nullptr, &only_set);
  EXPECT_FALSE(positional.Parse(std::vector<std::string>{"--config", "x"}).ok());
  EXPECT_TRUE(positional.Parse(std::vector<std::string>{"--set", "a.b=1"}).ok());
}

}  // namespace
}  // namespace cohort
