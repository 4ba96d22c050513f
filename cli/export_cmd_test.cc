// `cohort export`, run as the real binaries: a checkpoint written by the real
// trainer (one GRPO step on a tiny model with the addition task's
// tokenizer, learner::WriteCheckpoint) is exported; the directory loads with
// model::LoadModelDir to the trainer's weights bit for bit, carries the
// tokenizer, chat template and generation settings, and `cohort eval`
// accepts it. Also: sharding, the newest complete checkpoint of a run
// directory, the Jinja templates against core/chat_template, bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <ATen/core/grad_mode.h>

#include "core/chat_template.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/checkpoint.h"
#include "learner/trainer.h"
#include "model/aten.h"
#include "model/checkpoint.h"
#include "model/scoring.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::json;

struct Result {
  int code = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

Json ReadJson(const std::string& path) { return Json::parse(Slurp(path), nullptr, false); }

class ExportCmdTest : public ::testing::Test {
 protected:
  // A run directory with one checkpoint of a trainer that took a step.
  static void SetUpTestSuite() {
    dir_ = (fs::path(::testing::TempDir()) / ("export_cmd_test_" + std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/run");
    ASSERT_EQ(Run("task addition --eval_size 8 --train_size 8 --fresh_size 4 --sft_size 4 --out " +
                  dir_ + "/data")
                  .code,
              0);
    ASSERT_EQ(
        Run("init-model --preset tiny --tokenizer " + dir_ + "/data --out " + dir_ + "/init").code,
        0);
    auto init = model::LoadModelDir(dir_ + "/init", at::kFloat);
    ASSERT_TRUE(init.ok()) << init.status();
    model::TensorMap initial;  // deep copies: the trainer may train the given tensors in place
    for (const auto& [name, t] : init->weights) initial[name] = t.clone();
    learner::TrainerOptions o;
    o.optim.lr = 1e-2;
    o.max_completion_length = 8;
    auto trainer = learner::Trainer::Create(init->config, init->weights, o);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    // One GRPO step: the weights leave their initial values.
    std::vector<learner::TrainGroup> batch(1);
    batch[0].prompt_tokens = {5, 6, 7};
    for (int i = 0; i < 4; ++i) {
      learner::TrainSample s;
      s.tokens.assign(3, static_cast<int32_t>(10 + i));
      at::NoGradGuard no_grad;
      auto lp = model::CompletionLogProbs((*trainer)->policy(),
                                          {{batch[0].prompt_tokens, s.tokens}}, 1.0);
      ASSERT_TRUE(lp.ok()) << lp.status();
      s.logprobs = (*lp)[0];
      s.versions.assign(s.tokens.size(), 0);
      s.ok = true;
      s.reward = i % 2;
      batch[0].samples.push_back(s);
    }
    auto step = (*trainer)->TrainStep(batch);
    ASSERT_TRUE(step.ok()) << step.status();
    trained_ = new model::TensorMap((*trainer)->PolicyWeights());
    bool changed = false;
    for (const auto& [name, t] : *trained_) changed |= !at::equal(t, initial.at(name));
    ASSERT_TRUE(changed) << "the step did not change the weights";
    auto ck = learner::WriteCheckpoint(
        dir_ + "/run/checkpoints", {.step = 1, .version = 1, .keep_last = 3},
        [&](const std::string& d) { return (*trainer)->SaveCheckpoint(d); }, {{"loop", "{}"}});
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = ck->path;
    WriteFileAtomically(dir_ + "/run.yaml",
                        "model:\n  preset: tiny\n  chat_template: plain\n  tokenizer: " + dir_ +
                            "/data/tokenizer.json\nsampling:\n  max_new_tokens: 6\n  "
                            "temperature: 0.7\n")
        .IgnoreError();
  }
  static void TearDownTestSuite() {
    delete trained_;
    fs::remove_all(dir_);
  }

  static Result Run(const std::string& args) {
    std::string out = dir_ + "/stdout.txt", err = dir_ + "/stderr.txt";
    std::string cmd = std::string(COHORT_BINARY_DIR) + "/cli/cohort " + args + " > '" + out +
                      "' 2> '" + err + "'";
    int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }

  static void ExpectTrainedWeights(const std::string& model_dir) {
    auto loaded = model::LoadModelDir(model_dir, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->weights.size(), trained_->size());
    for (const auto& [name, t] : *trained_) {
      ASSERT_TRUE(loaded->weights.count(name)) << name;
      EXPECT_TRUE(at::equal(loaded->weights.at(name), t)) << name << " differs from the trainer's";
    }
  }

  static std::string dir_, checkpoint_;
  static model::TensorMap* trained_;
};

std::string ExportCmdTest::dir_, ExportCmdTest::checkpoint_;
model::TensorMap* ExportCmdTest::trained_ = nullptr;

TEST_F(ExportCmdTest, RunDirectoryExportsTheTrainersWeightsWithTokenizerAndTemplate) {
  Result r = Run("export " + dir_ + "/run --out " + dir_ + "/hf --config " + dir_ + "/run.yaml");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("step 1"));
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json",
                        "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(dir_ + "/hf/" + f)) << f;
  }
  ExpectTrainedWeights(dir_ + "/hf");
  EXPECT_EQ(Slurp(dir_ + "/hf/tokenizer.json"), Slurp(dir_ + "/data/tokenizer.json"));
  Json tok = ReadJson(dir_ + "/hf/tokenizer_config.json");
  EXPECT_EQ(tok.value("cohort_chat_template", ""), "plain");
  EXPECT_TRUE(tok.contains("chat_template") && tok["chat_template"].is_string());
  Json gen = ReadJson(dir_ + "/hf/generation_config.json");
  EXPECT_EQ(gen.value("max_new_tokens", 0), 6);
  EXPECT_DOUBLE_EQ(gen.value("temperature", 0.0), 0.7);
  // `cohort eval` takes the directory as it is.
  Result e = Run("eval --model " + dir_ + "/hf --dataset " + dir_ +
                 "/data/eval.jsonl --task addition --limit 3 --json");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_THAT(e.out, HasSubstr("\"chat_template\":\"plain\""));
}

TEST_F(ExportCmdTest, CheckpointDirectoryShardedAndBfloat16) {
  Result r = Run("export " + checkpoint_ + " --out " + dir_ + "/sharded --tokenizer " + dir_ +
                 "/data --max_shard_bytes 40000");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ + "/sharded/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir_ + "/sharded/model.safetensors"));
  ExpectTrainedWeights(dir_ + "/sharded");
  // Without a run config the template comes from the vocabulary.
  EXPECT_EQ(ReadJson(dir_ + "/sharded/tokenizer_config.json").value("cohort_chat_template", ""),
            "plain");
  r = Run("export " + checkpoint_ + " --out " + dir_ + "/bf16 --tokenizer " + dir_ +
          "/data --dtype bfloat16");
  ASSERT_EQ(r.code, 0) << r.err;
  Json cfg = ReadJson(dir_ + "/bf16/config.json");
  EXPECT_EQ(cfg.value("torch_dtype", ""), "bfloat16");
  uintmax_t fp32_bytes = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/sharded")) {
    if (e.path().extension() == ".safetensors") fp32_bytes += e.file_size();
  }
  EXPECT_LT(fs::file_size(dir_ + "/bf16/model.safetensors"), fp32_bytes * 6 / 10);
  auto bf16 = model::LoadModelDir(dir_ + "/bf16", at::kBFloat16);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  for (const auto& [name, t] : *trained_) {
    EXPECT_TRUE(at::equal(bf16->weights.at(name), t.to(at::kBFloat16))) << name;
  }
}

TEST_F(ExportCmdTest, NewestCompleteCheckpointOfARunIsExported) {
  // A run with step 1 (complete) and step 2 (its COMPLETE marker missing).
  fs::copy(dir_ + "/run", dir_ + "/run2", fs::copy_options::recursive);
  fs::copy(checkpoint_, dir_ + "/run2/checkpoints/step-0000000002", fs::copy_options::recursive);
  fs::remove(dir_ + "/run2/checkpoints/step-0000000002/COMPLETE");
  Result r = Run("export " + dir_ + "/run2 --out " + dir_ + "/hf2 --config " + dir_ + "/run.yaml");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("step-0000000001"));
  // Named directly, the incomplete one is refused.
  r = Run("export " + dir_ + "/run2/checkpoints/step-0000000002 --out " + dir_ + "/hf3 --config " +
          dir_ + "/run.yaml");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("is incomplete: no COMPLETE"));
  EXPECT_FALSE(fs::exists(dir_ + "/hf3"));
}

TEST_F(ExportCmdTest, BadInputIsNamed) {
  Result r = Run("export " + dir_ + "/nowhere --out " + dir_ + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("does not exist"));
  fs::create_directories(dir_ + "/empty_run");
  r = Run("export " + dir_ + "/empty_run --out " + dir_ + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("no checkpoints/"));
  fs::create_directories(dir_ + "/no_ck/checkpoints");
  r = Run("export " + dir_ + "/no_ck --out " + dir_ + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("no complete checkpoint under"));
  r = Run("export " + dir_ + "/run");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--out DIR is required"));
  // The trainer's model/ has no tokenizer and neither has the run.
  r = Run("export " + checkpoint_ + " --out " + dir_ + "/x");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("no tokenizer.json"));
  r = Run("export " + checkpoint_ + " --out " + dir_ + "/x --tokenizer " + dir_ +
          "/data --chat_template jinja");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("unknown chat template \"jinja\""));
  r = Run("export " + checkpoint_ + " --out " + dir_ + "/x --tokenizer " + dir_ +
          "/data --dtype int8");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--dtype is 'int8'"));
  EXPECT_FALSE(fs::exists(dir_ + "/x"));
}

// The Jinja template written for transformers formats as core/chat_template
// does (rendered with Python's jinja2 when it is installed).
TEST_F(ExportCmdTest, JinjaTemplatesFormatAsTheRunDid) {
  if (std::system("python3 -c 'import jinja2' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 with jinja2 is not installed";
  }
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", " 2+3? "}};
  const std::vector<ChatMessage> single = {{"user", "2+3"}};
  for (const std::string name : {"chatml", "llama3", "r1-zero", "plain"}) {
    const std::string out = dir_ + "/jinja-" + name;
    Result r = Run("export " + checkpoint_ + " --out " + out + " --tokenizer " + dir_ +
                   "/data --chat_template " + name);
    ASSERT_EQ(r.code, 0) << r.err;
    const std::vector<ChatMessage>& messages = name == "r1-zero" ? single : chat;
    auto want = FormatChat(name, messages, /*add_generation_prompt=*/true);
    ASSERT_TRUE(want.ok()) << want.status();
    Json msgs = Json::array();
    for (const ChatMessage& m : messages)
      msgs.push_back({{"role", m.role}, {"content", m.content}});
    WriteFileAtomically(out + "/messages.json", msgs.dump()).IgnoreError();
    const std::string script =
        "import json,sys,jinja2\n"
        "t=json.load(open(sys.argv[1]))['chat_template']\n"
        "m=json.load(open(sys.argv[2]))\n"
        "sys.stdout.write(jinja2.Environment().from_string(t).render(messages=m, "
        "add_generation_prompt=True))\n";
    WriteFileAtomically(out + "/render.py", script).IgnoreError();
    std::string cmd = "python3 " + out + "/render.py " + out + "/tokenizer_config.json " + out +
                      "/messages.json > " + out + "/rendered.txt";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << name;
    EXPECT_EQ(Slurp(out + "/rendered.txt"), *want) << name;
  }
}

}  // namespace
}  // namespace cohort::cli
