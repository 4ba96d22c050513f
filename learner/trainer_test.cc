#include "learner/trainer.h"

#include <cmath>
#include <cstdlib>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/file.h"
#include "model/checkpoint.h"
#include "model/scoring.h"
#include "model/tiny_model.h"

namespace cohort::learner {
namespace {

using model::testing::TinyConfig;
using model::testing::Variant;

TrainerOptions BaseOptions() {
  TrainerOptions o;
  o.optim.lr = 1e-2;
  o.optim.max_grad_norm = 1.0;
  o.optim.micro_batch_tokens = 4096;
  o.grpo.epsilon = 0.2;
  o.grpo.epsilon_high = 0.28;
  o.max_completion_length = 8;
  return o;
}

std::unique_ptr<Trainer> MakeTrainer(const TrainerOptions& o, uint64_t seed = 1,
                                     Variant variant = Variant::kQwen3) {
  const model::ModelConfig config = TinyConfig(variant);
  auto t = Trainer::Create(config, model::testing::RandomWeights(config, seed), o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// Behaviour log-probs as the actor's engine would report them.
std::vector<float> Behaviour(const Trainer& t, const std::vector<int32_t>& prompt,
                             const std::vector<int32_t>& completion, double temperature = 1.0) {
  at::NoGradGuard no_grad;
  auto lp = model::CompletionLogProbs(t.policy(), {{prompt, completion}}, temperature);
  EXPECT_TRUE(lp.ok()) << lp.status();
  return (*lp)[0];
}

// Groups of `g` samples: sample i's completion is token (10 + i) repeated,
// rewarded 1 when i is even; deterministic.
std::vector<TrainGroup> Batch(const Trainer& t, int groups, int g, int len = 4) {
  std::vector<TrainGroup> batch;
  for (int k = 0; k < groups; ++k) {
    TrainGroup group;
    group.prompt_id = k;
    group.prompt_uid = "p" + std::to_string(k);
    group.prompt_tokens = {1, static_cast<int32_t>(2 + k), 3};
    for (int i = 0; i < g; ++i) {
      TrainSample s;
      s.tokens.assign(len - (i % 2), static_cast<int32_t>(10 + i));
      s.logprobs = Behaviour(t, group.prompt_tokens, s.tokens);
      s.versions.assign(s.tokens.size(), 0);
      s.ok = true;
      s.reward = i % 2 == 0 ? 1.0 : 0.0;
      s.components["accuracy"] = s.reward;
      group.samples.push_back(s);
    }
    batch.push_back(group);
  }
  return batch;
}

double MaxAbsDiff(const model::TensorMap& a, const model::TensorMap& b) {
  double m = 0;
  for (const auto& [name, t] : a) m = std::max(m, (t - b.at(name)).abs().max().item<double>());
  return m;
}

bool BitIdentical(const model::TensorMap& a, const model::TensorMap& b) {
  for (const auto& [name, t] : a) {
    if (!at::equal(t, b.at(name))) return false;
  }
  return a.size() == b.size();
}

double CompletionLogProb(const Trainer& t, const std::vector<int32_t>& prompt,
                         const std::vector<int32_t>& completion) {
  double sum = 0;
  for (float v : Behaviour(t, prompt, completion)) sum += v;
  return sum;
}

TEST(TrainerTest, GrpoStepsRaiseTheRewardedCompletions) {
  std::unique_ptr<Trainer> t = MakeTrainer(BaseOptions());
  const std::vector<int32_t> prompt = {1, 2, 3};
  const double good0 = CompletionLogProb(*t, prompt, {10, 10, 10, 10});
  const double bad0 = CompletionLogProb(*t, prompt, {11, 11, 11});
  for (int step = 0; step < 5; ++step) {
    auto r = t->TrainStep(Batch(*t, 2, 4));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->skipped) << r->skip_reason;
    EXPECT_EQ(r->optimizer_steps, 1);
    EXPECT_EQ(r->tokens, 2 * (4 + 3 + 4 + 3));
    // Behaviour log-probs come from the same weights: no mismatch, ratio 1.
    EXPECT_LT(r->metrics.at("mismatch_kl"), 1e-6);
    EXPECT_NEAR(r->metrics.at("ratio_mean"), 1.0, 1e-4);
    EXPECT_EQ(r->metrics.at("reward_mean"), 0.5);
    EXPECT_EQ(r->metrics.at("accuracy"), 0.5);
    EXPECT_GT(r->metrics.at("entropy"), 0.0);
    EXPECT_GT(r->metrics.at("grad_norm"), 0.0);
  }
  EXPECT_EQ(t->optimizer_steps(), 5);
  EXPECT_GT(CompletionLogProb(*t, prompt, {10, 10, 10, 10}), good0 + 0.5);
  EXPECT_LT(CompletionLogProb(*t, prompt, {11, 11, 11}), bad0 - 0.5);
}

// The chunked two-pass output projection and several micro-batches give the
// same update as one pass over one micro-batch, for every loss type.
TEST(TrainerTest, ChunkedLogitsAndMicroBatchesMatchOnePass) {
  for (const std::string type : {"grpo", "dapo", "bnpo", "dr_grpo"}) {
    for (const std::string level : {"token", "sequence"}) {
      TrainerOptions one = BaseOptions();
      // lr 1 and eps 1: the first AdamW update is g / (|g| + 1) ~ g, so
      // weights differ by about as much as the gradients do (with the
      // default eps the first update is ~lr * sign(g)).
      one.optim.lr = 1.0;
      one.optim.eps = 1.0;
      one.optim.max_grad_norm = 0;
      one.grpo.loss_type = type;
      one.grpo.importance_sampling_level = level;
      one.grpo.beta = 0.1;
      TrainerOptions chunked = one;
      chunked.logit_chunk_elements = 256 * 3;  // 3 rows of the 256-token vocabulary
      std::unique_ptr<Trainer> a = MakeTrainer(one), b = MakeTrainer(chunked);
      std::vector<TrainGroup> batch = Batch(*a, 3, 4);
      auto ra = a->TrainStep(batch);
      auto rb = b->TrainStep(batch);
      ASSERT_TRUE(ra.ok() && rb.ok());
      EXPECT_NEAR(ra->metrics.at("loss"), rb->metrics.at("loss"), 1e-6) << type << level;
      EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), b->PolicyWeights()), 1e-5) << type << level;
      if (type == "bnpo") continue;  // bnpo's loss depends on the micro-batch split by definition
      TrainerOptions split = one;
      split.optim.micro_batch_tokens = 16;  // two sequences (<= 7 tokens) per micro-batch
      std::unique_ptr<Trainer> c = MakeTrainer(split);
      auto rc = c->TrainStep(batch);
      ASSERT_TRUE(rc.ok());
      EXPECT_GT(rc->metrics.at("micro_batches"), 5);
      EXPECT_NEAR(ra->metrics.at("loss"), rc->metrics.at("loss"), 1e-6) << type << level;
      EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), c->PolicyWeights()), 1e-5) << type << level;
    }
  }
}

// Groups whose completions have lengths 1..9, so padding-free rows hold
// several sequences.
std::vector<TrainGroup> VariedBatch(const Trainer& t, int groups, int g) {
  std::vector<TrainGroup> batch = Batch(t, groups, g);
  for (int k = 0; k < groups; ++k) {
    for (int i = 0; i < g; ++i) {
      TrainSample& s = batch[k].samples[i];
      s.tokens.assign(1 + (k * g + i * 5) % 9, static_cast<int32_t>(20 + i + k));
      s.logprobs = Behaviour(t, batch[k].prompt_tokens, s.tokens);
      s.versions.assign(s.tokens.size(), 0);
    }
  }
  return batch;
}

// Padding-free rows (several sequences per row, positions restarting,
// attention kept inside each sequence) and activation checkpointing give
// the loss and the update of one padded row per sequence.
TEST(TrainerTest, PackedRowsAndCheckpointingMatchPaddedRows) {
  for (const std::string type : {"grpo", "dapo", "bnpo", "dr_grpo"}) {
    TrainerOptions padded = BaseOptions();
    padded.optim.lr = 1.0;  // the update ~ the gradient (see above)
    padded.optim.eps = 1.0;
    padded.optim.max_grad_norm = 0;
    padded.grpo.loss_type = type;
    padded.grpo.beta = 0.1;
    padded.padding_free = false;
    TrainerOptions packed = padded;
    packed.padding_free = true;
    TrainerOptions checkpointed = packed;
    checkpointed.activation_checkpointing = true;
    checkpointed.logit_chunk_elements = 256 * 5;  // and the chunked two-pass head
    std::unique_ptr<Trainer> a = MakeTrainer(padded), b = MakeTrainer(packed),
                             c = MakeTrainer(checkpointed);
    std::vector<TrainGroup> batch = VariedBatch(*a, 3, 4);
    auto ra = a->TrainStep(batch);
    auto rb = b->TrainStep(batch);
    auto rc = c->TrainStep(batch);
    ASSERT_TRUE(ra.ok() && rb.ok() && rc.ok());
    ASSERT_FALSE(ra->skipped || rb->skipped || rc->skipped);
    EXPECT_EQ(ra->tokens, rb->tokens);
    EXPECT_EQ(ra->metrics.at("micro_batches"), 1);
    EXPECT_EQ(rb->metrics.at("micro_batches"), 1);
    // Packing computed fewer row positions than padding.
    EXPECT_LE(rb->metrics.at("row_tokens"), 0.75 * ra->metrics.at("row_tokens"))
        << type;  // 108 vs 144
    EXPECT_NEAR(ra->metrics.at("loss"), rb->metrics.at("loss"), 1e-6) << type;
    EXPECT_NEAR(ra->metrics.at("kl"), rb->metrics.at("kl"), 1e-7) << type;
    EXPECT_NEAR(ra->metrics.at("entropy"), rb->metrics.at("entropy"), 1e-5) << type;
    EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), b->PolicyWeights()), 1e-5) << type;
    EXPECT_NEAR(rb->metrics.at("loss"), rc->metrics.at("loss"), 1e-6) << type;
    EXPECT_LT(MaxAbsDiff(b->PolicyWeights(), c->PolicyWeights()), 1e-5) << type;
    // A second step (now with a moved reference gap) still agrees.
    auto ra2 = a->TrainStep(batch);
    auto rc2 = c->TrainStep(batch);
    ASSERT_TRUE(ra2.ok() && rc2.ok());
    EXPECT_NEAR(ra2->metrics.at("loss"), rc2->metrics.at("loss"), 1e-5) << type;
    EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), c->PolicyWeights()), 1e-4) << type;
  }
}

// The fused kernels (model/fused_ops.h: trunk, head, AdamW) give the loss,
// metrics and update of the plain ATen ops, in every layout, on packed rows,
// with the chunked two-pass head and with several updates per batch.
TEST(TrainerTest, FusedKernelsMatchPlainOps) {
  for (Variant variant : {Variant::kQwen2, Variant::kQwen3, Variant::kLlama3}) {
    for (bool chunked : {false, true}) {
      TrainerOptions plain = BaseOptions();
      plain.optim.lr = 0.05;  // with eps 1 the update ~ 0.05 x the gradient
      plain.optim.eps = 1.0;
      plain.optim.max_grad_norm = 0;
      plain.optim.weight_decay = 0.01;
      plain.grpo.beta = 0.1;
      plain.grpo.num_iterations = 2;
      plain.temperature = 0.8;
      if (chunked) plain.logit_chunk_elements = 256 * 5;
      plain.fused_kernels = false;
      TrainerOptions fused = plain;
      fused.fused_kernels = true;
      std::unique_ptr<Trainer> a = MakeTrainer(plain, 1, variant),
                               b = MakeTrainer(fused, 1, variant);
      EXPECT_FALSE(a->policy().fused_stack());
      EXPECT_TRUE(b->policy().fused_stack());
      std::vector<TrainGroup> batch = VariedBatch(*a, 3, 4);
      for (int step = 0; step < 2; ++step) {
        auto ra = a->TrainStep(batch);
        auto rb = b->TrainStep(batch);
        ASSERT_TRUE(ra.ok() && rb.ok());
        ASSERT_FALSE(ra->skipped || rb->skipped);
        const std::string what = model::testing::VariantName(variant) +
                                 (chunked ? " chunked" : "") + " step " + std::to_string(step);
        for (const char* m : {"loss", "kl", "entropy", "ratio_mean", "mismatch_kl"}) {
          const double x = ra->metrics.at(m);
          EXPECT_NEAR(x, rb->metrics.at(m), 1e-5 * (1 + std::abs(x))) << m << " " << what;
        }
        EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), b->PolicyWeights()), 1e-4) << what;
      }
      // SFT goes through the same head and optimizer.
      auto sa = a->SftStep(batch);
      auto sb = b->SftStep(batch);
      ASSERT_TRUE(sa.ok() && sb.ok());
      const double x = sa->metrics.at("loss");
      EXPECT_NEAR(x, sb->metrics.at("loss"), 1e-5 * (1 + std::abs(x)));
      EXPECT_LT(MaxAbsDiff(a->PolicyWeights(), b->PolicyWeights()), 1e-4);
    }
  }
}

// The packed layout itself: a row holding several sequences gives each the
// hidden states it has alone (Transformer::PrepareStack's segments).
TEST(TrainerTest, PackedRowEqualsSequencesAlone) {
  std::unique_ptr<Trainer> t = MakeTrainer(BaseOptions());
  const model::Transformer& m = t->policy();
  at::NoGradGuard no_grad;
  const std::vector<std::vector<int64_t>> seqs = {{5, 6, 7, 8, 9}, {11, 12}, {13, 14, 15}};
  std::vector<int64_t> row, seg;
  for (size_t k = 0; k < seqs.size(); ++k) {
    for (int64_t id : seqs[k]) {
      row.push_back(id);
      seg.push_back(static_cast<int64_t>(k) + 1);
    }
  }
  row.push_back(0);  // one padding position at the end
  seg.push_back(0);
  auto run = [&](const std::vector<int64_t>& ids, const std::vector<int64_t>& segments) {
    at::Tensor tok = at::tensor(at::ArrayRef<int64_t>(ids)).unsqueeze(0);
    at::Tensor sg = at::tensor(at::ArrayRef<int64_t>(segments)).unsqueeze(0);
    auto in = m.PrepareStack(tok, sg);
    EXPECT_TRUE(in.ok()) << in.status();
    at::Tensor h = at::embedding(m.token_embedding(), tok);
    for (int64_t l = 0; l < m.num_layers(); ++l) h = m.StackLayer(l, h, *in);
    return m.FinalNorm(h)[0];
  };
  at::Tensor packed = run(row, seg);
  int64_t at_col = 0;
  for (const auto& q : seqs) {
    const int64_t n = static_cast<int64_t>(q.size());
    at::Tensor alone = run(q, std::vector<int64_t>(q.size(), 1));
    auto reference = m.ForwardHidden(at::tensor(at::ArrayRef<int64_t>(q)).unsqueeze(0),
                                     at::ones({1, n}, at::kLong));
    ASSERT_TRUE(reference.ok());
    EXPECT_LT((packed.narrow(0, at_col, n) - alone).abs().max().item<double>(), 1e-5);
    // The stack runs the fused kernels, ForwardHidden the plain ops: equal
    // up to rounding.
    EXPECT_LT((alone - (*reference)[0]).abs().max().item<double>(), 1e-5);
    at_col += n;
  }
  EXPECT_FALSE(m.PrepareStack(at::zeros({1, 3}, at::kLong), at::zeros({2, 3}, at::kLong)).ok());
  EXPECT_FALSE(m.PrepareStack(at::full({1, 2}, 9999, at::kLong), at::ones({1, 2}, at::kLong)).ok());
}

TEST(TrainerTest, ReferenceKlStartsAtZeroAndGrows) {
  TrainerOptions o = BaseOptions();
  o.grpo.beta = 0.04;
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  auto r = t->TrainStep(Batch(*t, 2, 4));
  ASSERT_TRUE(r.ok());
  EXPECT_LT(r->metrics.at("kl"), 1e-9);
  r = t->TrainStep(Batch(*t, 2, 4));
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->metrics.at("kl"), 1e-6);
}

TEST(TrainerTest, NumIterationsAppliesSeveralUpdatesAndClips) {
  TrainerOptions o = BaseOptions();
  o.grpo.num_iterations = 3;
  o.optim.lr = 5e-2;
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  auto r = t->TrainStep(Batch(*t, 2, 4));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->optimizer_steps, 3);
  EXPECT_EQ(t->optimizer_steps(), 3);
  // Later iterations move away from the behaviour policy: some tokens clip.
  EXPECT_GT(r->metrics.at("clip_high") + r->metrics.at("clip_low"), 0.0);
  EXPECT_NE(r->metrics.at("ratio_mean"), 1.0);
}

TEST(TrainerTest, NonOkTruncatedAndEmptySamplesAreLeftOut) {
  TrainerOptions o = BaseOptions();
  o.grpo.mask_truncated_completions = true;
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  std::vector<TrainGroup> batch = Batch(*t, 1, 4);
  batch[0].samples[0].ok = false;
  batch[0].samples[0].reward = NAN;
  batch[0].samples[1].finish = SampleFinish::kLength;
  batch[0].samples[2].tokens.clear();
  batch[0].samples[2].logprobs.clear();
  auto r = t->TrainStep(batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, 3);  // sample 3 only
  EXPECT_EQ(r->metrics.at("non_ok_fraction"), 0.25);
  // All samples non-OK: nothing to train, weights unchanged.
  model::TensorMap before = t->PolicyWeights();
  for (TrainSample& s : batch[0].samples) s.ok = false;
  r = t->TrainStep(batch);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->skipped);
  EXPECT_TRUE(BitIdentical(before, t->PolicyWeights()));
}

TEST(TrainerTest, NanSkipsTheStepWithoutTouchingWeightsOrOptimizer) {
  std::unique_ptr<Trainer> a = MakeTrainer(BaseOptions()), b = MakeTrainer(BaseOptions());
  std::vector<TrainGroup> good = Batch(*a, 2, 4);
  std::vector<TrainGroup> bad = good;
  bad[1].samples[2].logprobs[1] = NAN;
  model::TensorMap before = a->PolicyWeights();
  auto r = a->TrainStep(bad);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->skipped);
  EXPECT_THAT(r->skip_reason, ::testing::HasSubstr("non-finite loss"));
  EXPECT_EQ(r->optimizer_steps, 0);
  EXPECT_TRUE(BitIdentical(before, a->PolicyWeights()));
  EXPECT_EQ(a->optimizer_steps(), 0);
  // The next good step is exactly the step a fresh trainer takes.
  ASSERT_TRUE(a->TrainStep(good).ok());
  ASSERT_TRUE(b->TrainStep(good).ok());
  EXPECT_TRUE(BitIdentical(a->PolicyWeights(), b->PolicyWeights()));
}

TEST(TrainerTest, DeterministicModeIsBitIdenticalAndIgnoresBehaviourFloats) {
  TrainerOptions o = BaseOptions();
  o.determinism = true;
  o.threads = 1;
  o.grpo.num_iterations = 2;
  o.grpo.tis_cap = 2.0;  // turned off by determinism
  std::unique_ptr<Trainer> a = MakeTrainer(o), b = MakeTrainer(o);
  std::vector<TrainGroup> batch = Batch(*a, 2, 4);
  std::vector<TrainGroup> perturbed = batch;
  for (TrainGroup& g : perturbed) {
    for (TrainSample& s : g.samples) {
      for (float& v : s.logprobs) v = std::nextafter(v, 0.0f);
    }
  }
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE(a->TrainStep(batch).ok());
    ASSERT_TRUE(b->TrainStep(perturbed).ok());
  }
  EXPECT_TRUE(BitIdentical(a->PolicyWeights(), b->PolicyWeights()));
}

TEST(TrainerTest, TisWeightsAgainstTheLearnersOwnLogProbs) {
  TrainerOptions o = BaseOptions();
  o.grpo.tis_cap = 1.5;
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  std::vector<TrainGroup> batch = Batch(*t, 1, 4);
  for (TrainSample& s : batch[0].samples) {
    for (float& v : s.logprobs) v -= 1.0f;  // the actor thought these tokens less likely
  }
  auto r = t->TrainStep(batch);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->metrics.at("ratio_mean"), 1.0, 1e-6);      // against the learner's own
  EXPECT_EQ(r->metrics.at("tis_truncated_fraction"), 1.0);  // exp(1) > 1.5 everywhere
  EXPECT_GT(r->metrics.at("mismatch_kl"), 0.1);             // exp(1) - 1 - 1 = 0.718
}

TEST(TrainerTest, CheckpointRoundTripResumesBitIdentically) {
  char tmpl[] = "/tmp/cohort_trainer_test_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  TrainerOptions o = BaseOptions();
  o.grpo.beta = 0.05;
  o.optim.warmup_steps = 2;
  o.optim.weight_decay = 0.01;
  std::unique_ptr<Trainer> a = MakeTrainer(o);
  std::vector<TrainGroup> batch = Batch(*a, 2, 4);
  ASSERT_TRUE(a->TrainStep(batch).ok());
  ASSERT_TRUE(a->TrainStep(batch).ok());
  ASSERT_TRUE(MakeDirs(dir + "/c1").ok());
  ASSERT_TRUE(a->SaveCheckpoint(dir + "/c1").ok());
  ASSERT_TRUE(a->TrainStep(batch).ok());
  ASSERT_TRUE(a->TrainStep(batch).ok());
  std::unique_ptr<Trainer> b = MakeTrainer(o, /*seed=*/99);  // different initial weights
  absl::Status s = b->LoadCheckpoint(dir + "/c1");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(b->optimizer_steps(), 2);
  ASSERT_TRUE(b->TrainStep(batch).ok());
  ASSERT_TRUE(b->TrainStep(batch).ok());
  EXPECT_TRUE(BitIdentical(a->PolicyWeights(), b->PolicyWeights()));
  // Equal weights give equal files: no timestamps, no paths.
  ASSERT_TRUE(MakeDirs(dir + "/c2").ok() && MakeDirs(dir + "/c3").ok());
  ASSERT_TRUE(a->SaveCheckpoint(dir + "/c2").ok());
  ASSERT_TRUE(b->SaveCheckpoint(dir + "/c3").ok());
  for (const char* f : {"/model/model.safetensors", "/model/config.json", "/optimizer.safetensors",
                        "/reference.safetensors", "/trainer_state.json"}) {
    EXPECT_EQ(*ReadFile(dir + "/c2" + f), *ReadFile(dir + "/c3" + f)) << f;
  }
  // A checkpoint of another model is refused.
  std::unique_ptr<Trainer> other = MakeTrainer(o, 1, Variant::kQwen2);
  s = other->LoadCheckpoint(dir + "/c1");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  (void)RemoveAll(dir);
}

TEST(TrainerTest, SftLowersTheNll) {
  TrainerOptions o = BaseOptions();
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  TrainGroup g;
  g.prompt_tokens = {5, 6};
  TrainSample s;
  s.tokens = {7, 8, 9, 10};
  s.logprobs.assign(4, 0.0f);
  g.samples = {s};
  const double before = CompletionLogProb(*t, g.prompt_tokens, s.tokens);
  for (int i = 0; i < 10; ++i) {
    auto r = t->SftStep({g});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->skipped);
  }
  EXPECT_GT(CompletionLogProb(*t, g.prompt_tokens, s.tokens), before + 1.0);
}

TEST(TrainerTest, LearningRateWarmsUpThenFollowsTheCosine) {
  TrainerOptions o = BaseOptions();
  o.optim.lr = 1.0;
  o.optim.warmup_steps = 2;
  o.optim.schedule = "cosine";
  o.optim.total_steps = 4;
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  std::vector<TrainGroup> batch = Batch(*t, 1, 2);
  std::vector<double> lrs;
  for (int i = 0; i < 5; ++i) {
    lrs.push_back(t->NextLearningRate());
    auto r = t->TrainStep(batch);
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->metrics.at("lr"), lrs.back(), 1e-12);
  }
  EXPECT_NEAR(lrs[0], 0.5, 1e-12);
  EXPECT_NEAR(lrs[1], 1.0, 1e-12);
  EXPECT_NEAR(lrs[2], 0.5, 1e-12);  // half-way through the cosine
  EXPECT_NEAR(lrs[3], 0.0, 1e-12);
  EXPECT_NEAR(lrs[4], 0.0, 1e-12);
}

TEST(TrainerTest, ExportsSortedWeightsInTheServedDtype) {
  TrainerOptions o = BaseOptions();
  o.serve_dtype = "bfloat16";
  std::unique_ptr<Trainer> t = MakeTrainer(o);
  auto snap = t->ExportWeights();
  ASSERT_TRUE(snap.ok());
  ASSERT_FALSE(snap->tensors.empty());
  for (size_t i = 1; i < snap->tensors.size(); ++i) {
    EXPECT_LT(snap->tensors[i - 1].name, snap->tensors[i].name);
  }
  const WeightTensor& w = snap->tensors[0];
  int64_t numel = 1;
  for (int64_t d : w.shape) numel *= d;
  EXPECT_EQ(w.dtype, WeightDType::kBF16);
  EXPECT_EQ(w.size, numel * 2);
  EXPECT_EQ(t->info().vocab_size, 256);
  EXPECT_EQ(t->info().dtype, "bfloat16");
  EXPECT_FALSE(t->info().model_fingerprint.empty());
}

TEST(TrainerTest, BadOptionsAndBatchesAreRefused) {
  const model::ModelConfig config = TinyConfig(Variant::kQwen3);
  TrainerOptions o = BaseOptions();
  o.grpo.loss_type = "ppo";
  EXPECT_FALSE(Trainer::Create(config, model::testing::RandomWeights(config, 1), o).ok());
  o = BaseOptions();
  o.optim.lr = 0;
  EXPECT_FALSE(Trainer::Create(config, model::testing::RandomWeights(config, 1), o).ok());
  std::unique_ptr<Trainer> t = MakeTrainer(BaseOptions());
  std::vector<TrainGroup> batch = Batch(*t, 1, 2);
  batch[0].samples[0].logprobs.pop_back();
  auto r = t->TrainStep(batch);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("logprobs for"));
}

}  // namespace
}  // namespace cohort::learner
