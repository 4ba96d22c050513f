#include "core/config.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort {
namespace {

using ::testing::HasSubstr;

// Parses and expects INVALID_ARGUMENT; returns the message.
std::string ParseError(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  auto config = ParseConfig(yaml, overrides, "run.yaml");
  EXPECT_FALSE(config.ok()) << "parsed without error:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/cohort_config_test_XXXXXX";
    int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << content;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigTest, EmptyTextGivesDefaults) {
  auto config = ParseConfig("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run.name, "cohort");
  EXPECT_EQ(config->run.seed, 1);
  EXPECT_EQ(config->run.out_dir, "out");
  EXPECT_EQ(config->model.preset, "tiny");
  EXPECT_EQ(config->model.dtype, "float32");
  EXPECT_EQ(config->model.chat_template, "chatml");
  EXPECT_EQ(config->sampling.group_size, 8);
  EXPECT_EQ(config->sampling.temperature, 1.0);
  EXPECT_EQ(config->sampling.max_new_tokens, 256);
  EXPECT_TRUE(config->sampling.stop.empty());
  EXPECT_EQ(config->learner.host, "127.0.0.1");
  EXPECT_EQ(config->learner.lease_ttl_ms, 30000);
  EXPECT_EQ(config->actor.count, 2);
  EXPECT_EQ(config->reward.max_batch, 1024);
  EXPECT_EQ(config->reward.sample_timeout_seconds, 10.0);
  EXPECT_EQ(config->supervisor.max_restarts, 5);
  EXPECT_FALSE(config->security.tls.require_client_cert);
  ASSERT_EQ(config->reward.tasks.size(), 4u);
  for (const char* name : {"math", "gsm8k", "countdown", "code"}) {
    ASSERT_TRUE(config->reward.tasks.count(name)) << name;
    const RewardTaskSpec& task = config->reward.tasks.at(name);
    EXPECT_EQ(task.verifier, name);
    EXPECT_EQ(task.format, "none");
    EXPECT_EQ(task.weights, (std::map<std::string, double>{{"accuracy", 1.0}}));
  }
  EXPECT_TRUE(*config == RunConfig{});
  EXPECT_TRUE(ValidateConfig(RunConfig{}).ok());
  // An explicit empty section is the same as none.
  auto empty_sections = ParseConfig("run:\nsampling: {}\n");
  ASSERT_TRUE(empty_sections.ok()) << empty_sections.status();
  EXPECT_TRUE(*empty_sections == RunConfig{});
}

TEST(ConfigTest, FileAndOverrides) {
  TempFile file(R"(
run:
  name: gsm8k-r1
  seed: 42
sampling:
  group_size: 16
  temperature: 0.7
  stop: ["</answer>", "\n\n"]
reward:
  tasks:
    gsm8k:
      format: r1
      weights: {accuracy: 1.0, format: 0.1}
    my_math:
      verifier: math
      endpoint: reward.example:50051
security:
  tls:
    cert_file: /etc/cohort/tls.crt
    key_file: /etc/cohort/tls.key
)");
  auto config = LoadConfig(
      file.path(), {"sampling.temperature=0.9", "run.seed=7",
                    "reward.tasks.gsm8k.weights.format=0.2", "reward.tasks.gsm8k.language=en",
                    "reward.tasks.code.max_length=512", "sampling.stop=[STOP]", "actor.count=0"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run.name, "gsm8k-r1");
  EXPECT_EQ(config->run.seed, 7);
  EXPECT_EQ(config->sampling.group_size, 16);
  EXPECT_EQ(config->sampling.temperature, 0.9);
  EXPECT_EQ(config->sampling.stop, std::vector<std::string>{"STOP"});
  EXPECT_EQ(config->actor.count, 0);
  EXPECT_EQ(config->security.tls.cert_file, "/etc/cohort/tls.crt");
  // A tasks map in the file replaces the defaults.
  ASSERT_EQ(config->reward.tasks.size(), 3u);  // gsm8k, my_math, code (override)
  const RewardTaskSpec& gsm8k = config->reward.tasks.at("gsm8k");
  EXPECT_EQ(gsm8k.verifier, "gsm8k");  // from the task's name
  EXPECT_EQ(gsm8k.format, "r1");
  EXPECT_EQ(gsm8k.language, "en");
  // --set merges into a map rather than replacing it.
  EXPECT_EQ(gsm8k.weights, (std::map<std::string, double>{{"accuracy", 1.0}, {"format", 0.2}}));
  EXPECT_EQ(config->reward.tasks.at("my_math").verifier, "math");
  EXPECT_EQ(config->reward.tasks.at("my_math").endpoint, "reward.example:50051");
  EXPECT_EQ(config->reward.tasks.at("code").verifier, "code");
  EXPECT_EQ(config->reward.tasks.at("code").max_length, 512);
}

TEST(ConfigTest, GpuKeys) {
  auto config = ParseConfig(
      "learner:\n  device: cuda\nactor:\n  device: cuda\n  kv_cache_fraction: 0.9\n"
      "weights:\n  transport: nccl\n  nccl_timeout_seconds: 30\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->learner.device, "cuda");
  EXPECT_DOUBLE_EQ(config->actor.kv_cache_fraction, 0.9);
  EXPECT_EQ(config->weights.transport, "nccl");
  EXPECT_EQ(config->weights.nccl_timeout_seconds, 30);
  EXPECT_EQ(ParseConfig("")->weights.transport, "grpc");
  // NCCL between GPU roles only; the fraction is a fraction.
  EXPECT_THAT(ParseError("weights:\n  transport: nccl\n"),
              HasSubstr("weights.transport: nccl needs learner.device and actor.device cuda"));
  EXPECT_THAT(ParseError("actor:\n  kv_cache_fraction: 1.5\n"), HasSubstr("kv_cache_fraction"));
  EXPECT_THAT(ParseError("weights:\n  transport: ib\n"), HasSubstr("grpc|nccl"));
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto config = LoadConfig("/nonexistent/run.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("/nonexistent/run.yaml"));
}

TEST(ConfigTest, UnknownKeys) {
  EXPECT_EQ(ParseError("run:\n  name: x\nsampling:\n  temprature: 0.5\n"),
            "run.yaml:4: sampling.temprature: unknown key (did you mean \"temperature\"?); "
            "valid keys under sampling: group_size, temperature, top_p, top_k, "
            "max_new_tokens, stop");
  EXPECT_THAT(ParseError("runn:\n  name: x\n"),
              HasSubstr("run.yaml:1: runn: unknown key (did you mean \"run\"?); valid keys "
                        "at the top level: run, model, sampling"));
  EXPECT_THAT(ParseError("security:\n  tls:\n    ca: x\n"),
              HasSubstr("run.yaml:3: security.tls.ca: unknown key; valid keys under "
                        "security.tls: cert_file, key_file, ca_file, require_client_cert"));
  EXPECT_EQ(ParseError("sampling:\n  top_k: 1\n  top_k: 2\n"),
            "run.yaml:3: sampling.top_k: duplicate key");
  EXPECT_THAT(ParseError("reward:\n  tasks:\n    math:\n      wieghts: {accuracy: 1}\n"),
              HasSubstr("run.yaml:4: reward.tasks.math.wieghts: unknown key (did you mean "
                        "\"weights\"?)"));
}

TEST(ConfigTest, WrongTypes) {
  EXPECT_EQ(ParseError("sampling:\n  group_size: many\n"),
            "run.yaml:2: sampling.group_size: expected an integer >= 1, got \"many\"");
  EXPECT_EQ(ParseError("sampling:\n  group_size: 2.5\n"),
            "run.yaml:2: sampling.group_size: expected an integer >= 1, got \"2.5\"");
  EXPECT_EQ(ParseError("sampling:\n  temperature: [1]\n"),
            "run.yaml:2: sampling.temperature: expected a number > 0, got a list");
  EXPECT_EQ(
      ParseError("sampling:\n  stop: 5\n"),
      "run.yaml:2: sampling.stop: expected a list of strings, e.g. [\"a\", \"b\"], got \"5\"");
  EXPECT_EQ(ParseError("sampling: 3\n"), "run.yaml:1: sampling: expected a map, got \"3\"");
  EXPECT_EQ(ParseError("security:\n  tls:\n    require_client_cert: maybe\n"),
            "run.yaml:3: security.tls.require_client_cert: expected true or false, got \"maybe\"");
  EXPECT_EQ(ParseError("run:\n  name: {a: 1}\n"),
            "run.yaml:2: run.name: expected a non-empty string, got a map");
  EXPECT_EQ(ParseError("reward:\n  tasks:\n    math:\n      weights: {accuracy: high}\n"),
            "run.yaml:4: reward.tasks.math.weights.accuracy: expected a finite number, got "
            "\"high\"");
  EXPECT_THAT(ParseError("- a\n- b\n"), HasSubstr("run.yaml: expected a map of sections"));
}

TEST(ConfigTest, OutOfRange) {
  EXPECT_EQ(ParseError("sampling:\n  temperature: -1\n"),
            "run.yaml:2: sampling.temperature: expected a number > 0, got \"-1\"");
  EXPECT_EQ(ParseError("sampling:\n  top_p: 2\n"),
            "run.yaml:2: sampling.top_p: expected a number in (0, 1], got \"2\"");
  EXPECT_EQ(ParseError("sampling:\n  group_size: 0\n"),
            "run.yaml:2: sampling.group_size: expected an integer >= 1, got \"0\"");
  EXPECT_EQ(ParseError("learner:\n  port: 70000\n"),
            "run.yaml:2: learner.port: expected an integer in [0, 65535], got \"70000\"");
  EXPECT_EQ(ParseError("sampling:\n  temperature: .nan\n"),
            "run.yaml:2: sampling.temperature: expected a number > 0, got \".nan\"");
  EXPECT_EQ(ParseError("model:\n  dtype: float16\n"),
            "run.yaml:2: model.dtype: expected one of float32|bfloat16, got \"float16\"");
  EXPECT_EQ(ParseError("reward:\n  address: localhost\n"),
            "run.yaml:2: reward.address: expected \"\" or host:port, got \"localhost\"");
  EXPECT_EQ(ParseError("reward:\n  tasks:\n    math: {language: fr}\n"),
            "run.yaml:3: reward.tasks.math.language: expected one of \"\"|en|zh, got \"fr\"");
  EXPECT_EQ(ParseError("sampling:\n  max_new_tokens: 99999999999\n"),
            "run.yaml:2: sampling.max_new_tokens: expected an integer >= 1, got \"99999999999\"");
  // A task whose name is not a verifier must say which verifier it uses.
  EXPECT_EQ(ParseError("reward:\n  tasks:\n    mine: {format: r1}\n"),
            "run.yaml: reward.tasks.mine.verifier: expected one of math|gsm8k|countdown|code, "
            "got \"\"");
  // Cross-field checks.
  EXPECT_THAT(ParseError("security:\n  tls:\n    cert_file: a.pem\n"),
              HasSubstr("security.tls: cert_file and key_file must be set together"));
  EXPECT_THAT(ParseError("security:\n  tls:\n    require_client_cert: true\n"),
              HasSubstr("require_client_cert: true needs security.tls.ca_file"));
  EXPECT_THAT(ParseError("supervisor:\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n"),
              HasSubstr("supervisor.backoff_max_ms: expected an integer >= "
                        "supervisor.backoff_initial_ms (500), got 100"));
}

TEST(ConfigTest, MalformedYaml) {
  std::string message = ParseError("run:\n  name: [unclosed\nsampling:\n");
  EXPECT_THAT(message, HasSubstr("run.yaml:"));
  EXPECT_THAT(message, HasSubstr("malformed YAML"));
  EXPECT_THAT(ParseError("run:\n\tname: x\n"), HasSubstr("run.yaml:2:"));
}

TEST(ConfigTest, BadOverrides) {
  EXPECT_EQ(ParseError("", {"sampling.temperature"}),
            "--set sampling.temperature: expected section.key=value, e.g. "
            "sampling.temperature=0.7");
  EXPECT_EQ(ParseError("", {"sampling..temperature=1"}),
            "--set sampling..temperature=1: expected a key path like section.key before '=', "
            "got \"sampling..temperature\"");
  EXPECT_EQ(ParseError("", {"sampling.temperature=-1"}),
            "--set sampling.temperature=-1: sampling.temperature: expected a number > 0, got "
            "\"-1\"");
  EXPECT_EQ(ParseError("", {"sampling.temprature=1"}),
            "--set sampling.temprature=1: sampling.temprature: unknown key (did you mean "
            "\"temperature\"?); valid keys under sampling: group_size, temperature, top_p, "
            "top_k, max_new_tokens, stop");
  EXPECT_THAT(ParseError("", {"sampling.stop=[a,"}),
              HasSubstr("--set sampling.stop=[a,: malformed value"));
  EXPECT_EQ(ParseError("", {"sampling=1"}),
            "--set sampling=1: sampling: expected a map, got \"1\"");
  EXPECT_EQ(ParseError("", {"reward.tasks.math.weights.format=x"}),
            "--set reward.tasks.math.weights.format=x: reward.tasks.math.weights.format: "
            "expected a finite number, got \"x\"");
  // A value that is only wrong in combination is reported with the source.
  EXPECT_THAT(ParseError("", {"security.tls.key_file=k.pem"}),
              HasSubstr("run.yaml: security.tls: cert_file and key_file must be set together"));
}

TEST(ConfigTest, PrintThenParseRoundTrips) {
  RunConfig config;
  config.run.name = "a: b # not a comment";
  config.run.seed = 1234567890123;
  config.model.path = "";
  config.model.tokenizer = "null";
  config.sampling.temperature = 0.1;
  config.sampling.top_p = 0.95;
  config.sampling.stop = {"</answer>", "\n\n", "", " lead", "'quote\"", "true", "- x"};
  config.reward.sample_timeout_seconds = 2.5e-3;
  config.reward.tasks["custom"] = RewardTaskSpec{};
  config.reward.tasks["custom"].verifier = "countdown";
  config.reward.tasks["custom"].weights = {{"accuracy", 0.9}, {"format", 1.0 / 3.0}};
  config.reward.tasks["custom"].endpoint = "10.0.0.1:50051";
  config.security.tls.require_client_cert = true;
  config.security.tls.ca_file = "/ca.pem";
  config.security.tls.cert_file = "/c.pem";
  config.security.tls.key_file = "/k.pem";
  ASSERT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config);

  std::string text = ConfigToYaml(config);
  auto parsed = ParseConfig(text, {}, "printed");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  EXPECT_EQ(ConfigToYaml(*parsed), text);
  EXPECT_EQ(parsed->run.name, config.run.name);
  EXPECT_EQ(parsed->model.tokenizer, "null");
  EXPECT_EQ(parsed->sampling.stop, config.sampling.stop);
  EXPECT_EQ(parsed->sampling.temperature, 0.1);
  EXPECT_EQ(parsed->reward.tasks.at("custom").weights.at("format"), 1.0 / 3.0);
  EXPECT_TRUE(*parsed == config);

  // An empty tasks map survives printing (it is not the default).
  config.reward.tasks.clear();
  auto empty_tasks = ParseConfig(ConfigToYaml(config));
  ASSERT_TRUE(empty_tasks.ok()) << empty_tasks.status();
  EXPECT_TRUE(empty_tasks->reward.tasks.empty());

  // The defaults print every key (list entries only when the list has some).
  std::string defaults = ConfigToYaml(RunConfig{});
  for (const auto& key : ConfigKeys()) {
    if (key.path.find("[]") != std::string::npos) continue;
    std::string leaf = key.path.substr(key.path.rfind('.') + 1);
    EXPECT_THAT(defaults, HasSubstr(leaf + ":")) << key.path;
  }
}

// configs/example.yaml documents every key with its default value.
TEST(ConfigTest, ExampleConfigShowsEveryKeyWithItsDefault) {
  const std::string path = COHORT_SOURCE_DIR "/configs/example.yaml";
  auto config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(*config == RunConfig{}) << "example.yaml differs from the defaults:\n"
                                      << ConfigToYaml(*config);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  for (const auto& key : ConfigKeys()) {
    std::string leaf = key.path.substr(key.path.rfind('.') + 1);
    EXPECT_THAT(text.str(), HasSubstr(leaf + ":")) << key.path << " is not in example.yaml";
  }
}

TEST(ConfigTest, KeyTableListsEveryKeyWithConstraints) {
  std::map<std::string, ConfigKeyInfo> keys;
  for (const auto& key : ConfigKeys()) keys[key.path] = key;
  ASSERT_TRUE(keys.count("sampling.temperature"));
  EXPECT_EQ(keys["sampling.temperature"].type, "number");
  EXPECT_EQ(keys["sampling.temperature"].default_value, "1.0");
  EXPECT_EQ(keys["sampling.temperature"].expected, "a number > 0");
  ASSERT_TRUE(keys.count("reward.tasks.<name>.weights"));
  EXPECT_EQ(keys["reward.tasks.<name>.weights"].default_value, "{accuracy: 1.0}");
  ASSERT_TRUE(keys.count("security.tls.require_client_cert"));
  EXPECT_EQ(keys["security.tls.require_client_cert"].type, "bool");
  EXPECT_EQ(keys["supervisor.ready_timeout_seconds"].default_value, "60");
}

// Every key carries its help text, and docs/config.md holds exactly the
// generated table (regenerate: `cohort config keys --markdown`).
TEST(ConfigTest, DocsTableIsGeneratedFromTheSchema) {
  for (const auto& key : ConfigKeys()) EXPECT_FALSE(key.help.empty()) << key.path << " has no help";
  std::ifstream in(COHORT_SOURCE_DIR "/docs/config.md");
  std::stringstream text;
  text << in.rdbuf();
  const std::string table = ConfigKeysMarkdown();
  EXPECT_THAT(text.str(), HasSubstr(table))
      << "docs/config.md's key table is out of date; replace it with the output of "
         "`cohort config keys --markdown`:\n"
      << table;
}

}  // namespace
}  // namespace cohort
