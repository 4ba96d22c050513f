#include "core/pipeline_config.h"

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

constexpr char kRecipe[] = R"(
task: {name: addition}
reward:
  tasks:
    addition: {verifier: math, format: r1-zero, weights: {accuracy: 1.0, format: 0.2}}
datasets:
  extra: {path: extra.jsonl, task: addition}
pipeline:
  - {name: cold_start, kind: sft, model: base, dataset: sft, epochs: 30, set: {optim.lr: 0.002}}
  - {name: rl, kind: grpo, dataset: train, steps: 100, set: {optim.lr: 1e-4, grpo.beta: 0.02}}
  - {name: sample, kind: generate, model: rl, dataset: train, samples: 4, threshold: 1.2}
  - {name: sft2, kind: sft, model: cold_start, dataset: sample, steps: 50}
  - {name: final_eval, kind: eval, dataset: fresh}
)";

TEST(PipelineConfigTest, PlansNamesOverridesAndDatasets) {
  auto config = ParseConfig(kRecipe);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->pipeline.size(), 5u);
  auto plan = PlanPipeline(*config, "/run/data");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& s = plan->stages;
  EXPECT_EQ(s[0].model, "base");
  EXPECT_EQ(s[0].output, "cold_start");
  EXPECT_DOUBLE_EQ(s[0].config.optim.lr, 0.002);
  EXPECT_EQ(s[0].config.data.train, "/run/data/sft.jsonl");
  EXPECT_EQ(s[1].model, "cold_start");  // the latest model
  EXPECT_DOUBLE_EQ(s[1].config.optim.lr, 1e-4);
  EXPECT_DOUBLE_EQ(s[1].config.grpo.beta, 0.02);
  EXPECT_DOUBLE_EQ(config->optim.lr, 1e-6);  // the run's own config is untouched
  EXPECT_EQ(s[1].config.data.task, "addition");
  EXPECT_EQ(s[2].output, "sample");
  EXPECT_EQ(plan->datasets.at("sample").spec.path, "/run/data/sample.jsonl");
  EXPECT_EQ(plan->datasets.at("sample").made_by, "sample");
  EXPECT_EQ(s[3].model, "cold_start");
  EXPECT_EQ(s[4].model, "sft2");
  EXPECT_EQ(s[4].output, "");
  EXPECT_EQ(plan->final_model, "sft2");

  // Printing and parsing keep the pipeline.
  auto again = ParseConfig(ConfigToYaml(*config));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(*again == *config);
  EXPECT_EQ(again->pipeline[1].set.at("grpo.beta"), "0.02");
}

struct BadCase {
  const char* name;
  const char* pipeline;
  const char* message;
};

class PipelineRefusesTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(PipelineRefusesTest, NamesTheStageAndKey) {
  std::string yaml = std::string(R"(
task: {name: addition}
reward: {tasks: {addition: {verifier: math}}}
datasets: {gsm: {path: g.jsonl, task: gsm8k, completion_key: ""}}
pipeline:
)") + GetParam().pipeline;
  auto config = ParseConfig(yaml);
  ASSERT_FALSE(config.ok()) << GetParam().name;
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PipelineRefusesTest,
    ::testing::Values(
        BadCase{"unknown_model",
                "  - {name: rl, kind: grpo, model: sft_model, dataset: train, steps: 5}",
                "pipeline[0] (rl).model: \"sft_model\" is made by no earlier stage"},
        BadCase{"later_model",
                "  - {name: rl, kind: grpo, model: cold, dataset: train, steps: 5}\n"
                "  - {name: cold, kind: sft, dataset: sft, steps: 5}",
                "pipeline[0] (rl).model: \"cold\" is made by no earlier stage"},
        BadCase{"unknown_dataset", "  - {name: rl, kind: grpo, dataset: gsm8k, steps: 5}",
                "pipeline[0] (rl).dataset: \"gsm8k\" is made by no earlier stage"},
        BadCase{"sft_without_completions", "  - {name: s, kind: sft, dataset: train, steps: 5}",
                "pipeline[0] (s).dataset: \"train\" has no completions"},
        BadCase{"task_not_in_reward", "  - {name: rl, kind: grpo, dataset: gsm, steps: 5}",
                "has task \"gsm8k\", which is not in reward.tasks"},
        BadCase{"no_length", "  - {name: rl, kind: grpo, dataset: train}",
                "pipeline[0] (rl).steps: give the stage's length"},
        BadCase{"both_lengths", "  - {name: rl, kind: grpo, dataset: train, steps: 3, epochs: 1}",
                "exactly one"},
        BadCase{"duplicate_name", "  - {name: a, kind: eval}\n  - {name: a, kind: eval}",
                "pipeline[1] (a).name: \"a\" is used by an earlier stage"},
        BadCase{"bad_kind", "  - {name: a, kind: train}",
                "pipeline[0].kind: expected one of sft|grpo|generate|eval"},
        BadCase{"unknown_stage_key", "  - {name: a, kind: eval, modle: base}",
                "pipeline[0].modle: unknown key (did you mean \"model\"?)"},
        BadCase{"set_outside_sections",
                "  - {name: rl, kind: grpo, dataset: train, steps: 5, set: {run.seed: 3}}",
                "pipeline[0] (rl).set.run.seed: per-stage overrides are"},
        BadCase{"set_bad_value",
                "  - {name: rl, kind: grpo, dataset: train, steps: 5, set: {optim.lr: -1}}",
                "pipeline[0] (rl).set.optim.lr: "},
        BadCase{"until_on_the_held_out_set",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_accuracy: 0.4, "
                "until_dataset: eval}",
                "pipeline[0] (s).until_dataset: \"eval\" is the held-out eval.dataset"},
        BadCase{"until_without_dataset",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_accuracy: 0.4}",
                "pipeline[0] (s).until_dataset: `until_accuracy` needs the prompt set"},
        BadCase{"until_unknown_dataset",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_accuracy: 0.4, "
                "until_dataset: dev}",
                "pipeline[0] (s).until_dataset: \"dev\" is made by no earlier stage"},
        BadCase{"until_without_answers",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_accuracy: 0.4, "
                "until_dataset: gsm}",
                "pipeline[0] (s).until_dataset: \"gsm\" needs prompts with reference answers"},
        BadCase{"until_on_grpo",
                "  - {name: rl, kind: grpo, dataset: train, steps: 5, until_accuracy: 0.4, "
                "until_dataset: train}",
                "pipeline[0] (rl).until_accuracy: only an sft stage"},
        BadCase{"until_dataset_alone",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_dataset: train}",
                "pipeline[0] (s).until_dataset: set `until_accuracy` too"},
        BadCase{"until_above_one",
                "  - {name: s, kind: sft, dataset: sft, steps: 5, until_accuracy: 1.5, "
                "until_dataset: train}",
                "until_accuracy"},
        BadCase{"set_unknown_key",
                "  - {name: rl, kind: grpo, dataset: train, steps: 5, set: {optim.lrr: 1}}",
                "unknown key (did you mean \"lr\"?)"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PipelineConfigTest, InputFilesMissingKeysAreRefusedAtStart) {
  std::string dir = ::testing::TempDir() + "/pipeline_inputs";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/q.jsonl", "{\"question\": \"1+1=\", \"answer\": \"2\"}\n").ok());
  auto config = ParseConfig(absl::StrCat(R"(
reward: {tasks: {math: {verifier: math}}}
eval: {dataset: ""}
datasets:
  q: {path: )",
                                         dir, R"(/q.jsonl, task: math, completion_key: ""}
pipeline:
  - {name: rl, kind: grpo, dataset: q, steps: 5}
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto plan = PlanPipeline(*config, dir);
  ASSERT_TRUE(plan.ok()) << plan.status();
  absl::Status st = CheckPipelineInputs(*plan);
  EXPECT_THAT(std::string(st.message()), HasSubstr("pipeline[0] (rl): dataset \"q\" (" + dir +
                                                   "/q.jsonl) line 1 has no key \"prompt\""));
  ASSERT_TRUE(ApplyOverride("datasets.q.prompt_key=question", &*config).ok());
  plan = PlanPipeline(*config, dir);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(CheckPipelineInputs(*plan).ok()) << CheckPipelineInputs(*plan);
  ASSERT_TRUE(ApplyOverride("datasets.q.path=" + dir + "/missing.jsonl", &*config).ok());
  plan = PlanPipeline(*config, dir);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(std::string(CheckPipelineInputs(*plan).message()), HasSubstr("cannot read"));
  std::filesystem::remove_all(dir);
}

TEST(PipelineConfigTest, AnSftStageEndsAtAnAccuracyTargetOnTrainingPrompts) {
  auto config = ParseConfig(R"(
task: {name: addition}
reward: {tasks: {addition: {verifier: math}}}
pipeline:
  - {name: cold, kind: sft, dataset: sft, steps: 600, until_accuracy: 0.4, until_dataset: train,
     until_problems: 300, until_every: 20}
  - {name: rl, kind: grpo, dataset: train, steps: 5}
)");
  ASSERT_TRUE(config.ok()) << config.status();
  auto plan = PlanPipeline(*config, "/run/data");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages[0].until.spec.path, "/run/data/train.jsonl");
  EXPECT_EQ(plan->stages[0].until.spec.task, "addition");
  EXPECT_EQ(plan->stages[0].stage.until_problems, 300);
  EXPECT_EQ(plan->stages[0].stage.until_every, 20);
  EXPECT_TRUE(plan->stages[1].until.spec.path.empty());
  auto again = ParseConfig(ConfigToYaml(*config));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(*again == *config);
}

TEST(PipelineConfigTest, EvalDatasetMustExist) {
  auto config = ParseConfig("pipeline:\n  - {name: e, kind: eval, model: base}\n");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("eval.dataset: \"eval\""));
}

}  // namespace
}  // namespace cohort
