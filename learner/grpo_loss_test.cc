#include "learner/grpo_loss.h"

#include <cmath>

#include "model/aten.h"

#include "gtest/gtest.h"

namespace cohort::learner {
namespace {

at::Tensor T2(std::vector<std::vector<double>> rows) {
  const int64_t s = rows.size(), t = rows[0].size();
  at::Tensor out = at::zeros({s, t}, at::kDouble);
  for (int64_t i = 0; i < s; ++i) {
    for (int64_t j = 0; j < t; ++j) out[i][j] = rows[i][j];
  }
  return out;
}

at::Tensor Leaf(at::Tensor t) { return t.clone().set_requires_grad(true); }

// Two sequences, ratios chosen to hit both clip sides:
//   seq 0, A = +1: ρ = 1.5 (clipped high at 1.28), 1.0, 0.5 (low but A > 0: not clipped)
//   seq 1, A = -2: ρ = 1.5 (A < 0: not clipped), 0.5 (clipped low at 0.8), masked
struct HandCase {
  at::Tensor logp =
      Leaf(T2({{std::log(1.5), 0.0, std::log(0.5)}, {std::log(1.5), std::log(0.5), 0.0}}));
  at::Tensor old = at::zeros({2, 3}, at::kDouble);
  at::Tensor mask = T2({{1, 1, 1}, {1, 1, 0}});
  at::Tensor adv = at::tensor({1.0, -2.0}, at::kDouble);
  LossInputs Inputs() const {
    LossInputs in;
    in.logp = logp;
    in.old_logp = old;
    in.mask = mask;
    in.advantages = adv;
    return in;
  }
};

GrpoLossOptions Options(const std::string& loss_type) {
  GrpoLossOptions o;
  o.loss_type = loss_type;
  o.epsilon = 0.2;
  o.epsilon_high = 0.28;
  o.max_completion_length = 4;
  return o;
}

// Per-token losses by hand: seq 0: -1.28, -1, -0.5 (sum -2.78); seq 1: 3, 1.6 (sum 4.6).
TEST(GrpoLossTest, LossTypesMatchHandValues) {
  HandCase c;
  const BatchTotals totals{2, 5, 1};
  struct Want {
    std::string type;
    double loss;
  };
  for (const Want& w : {Want{"dapo", 1.82 / 5}, Want{"bnpo", 1.82 / 5},
                        Want{"grpo", (-2.78 / 3 + 4.6 / 2) / 2}, Want{"dr_grpo", 1.82 / 8}}) {
    auto out = GrpoLoss(c.Inputs(), Options(w.type), totals);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_NEAR(out->loss.item<double>(), w.loss, 1e-6) << w.type;
    EXPECT_NEAR(out->stats.loss, w.loss, 1e-6) << w.type;
    EXPECT_EQ(out->stats.clip_high, 1) << w.type;
    EXPECT_EQ(out->stats.clip_low, 1) << w.type;
    EXPECT_EQ(out->stats.tokens, 5) << w.type;
  }
  // bnpo divides by the micro-batch count; dapo by the batch's tokens.
  auto bnpo = GrpoLoss(c.Inputs(), Options("bnpo"), BatchTotals{4, 10, 2});
  ASSERT_TRUE(bnpo.ok());
  EXPECT_NEAR(bnpo->loss.item<double>(), 1.82 / 5 / 2, 1e-6);
  auto dapo = GrpoLoss(c.Inputs(), Options("dapo"), BatchTotals{4, 10, 2});
  ASSERT_TRUE(dapo.ok());
  EXPECT_NEAR(dapo->loss.item<double>(), 1.82 / 10, 1e-6);
  // A fully masked sequence (a masked truncated completion) counts in grpo's mean.
  auto grpo = GrpoLoss(c.Inputs(), Options("grpo"), BatchTotals{3, 5, 1});
  ASSERT_TRUE(grpo.ok());
  EXPECT_NEAR(grpo->loss.item<double>(), (-2.78 / 3 + 4.6 / 2) / 3, 1e-6);
}

TEST(GrpoLossTest, GradientIsZeroOnClippedTokens) {
  HandCase c;
  auto out = GrpoLoss(c.Inputs(), Options("dapo"), BatchTotals{2, 5, 1});
  ASSERT_TRUE(out.ok());
  out->loss.backward();
  at::Tensor g = c.logp.grad();
  // d/dlogp of -ρA / 5 = -Aρ / 5 where not clipped.
  const double want[2][3] = {{0, -0.2, -0.1}, {0.6, 0, 0}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(g[i][j].item<double>(), want[i][j], 1e-9);
  }
}

TEST(GrpoLossTest, K3KlToTheReference) {
  // ratio 1, A = 0: only the KL term. d = 0 - ln 1.5.
  LossInputs in;
  in.logp = Leaf(at::full({1, 1}, std::log(1.5), at::kDouble));
  in.old_logp = in.logp.detach().clone();
  in.ref_logp = at::zeros({1, 1}, at::kDouble);
  in.mask = at::ones({1, 1}, at::kDouble);
  in.advantages = at::zeros({1}, at::kDouble);
  GrpoLossOptions o = Options("dapo");
  o.beta = 0.1;
  auto out = GrpoLoss(in, o, BatchTotals{1, 1, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  const double d = -std::log(1.5);
  EXPECT_NEAR(out->loss.item<double>(), 0.1 * (std::exp(d) - d - 1), 1e-9);
  EXPECT_NEAR(out->stats.kl_sum, std::exp(d) - d - 1, 1e-6);
  out->loss.backward();
  EXPECT_NEAR(in.logp.grad().item<double>(), 0.1 * (1 - 1 / 1.5), 1e-9);
  // beta > 0 needs the reference.
  in.ref_logp = at::Tensor();
  EXPECT_FALSE(GrpoLoss(in, o, BatchTotals{1, 1, 1}).ok());
}

TEST(GrpoLossTest, GspoUsesOneLengthNormalisedRatioPerSequence) {
  // log ρ_t = ln 2, 0: sequence ratio sqrt(2).
  LossInputs in;
  in.logp = Leaf(T2({{std::log(2.0), 0.0}}));
  in.old_logp = at::zeros({1, 2}, at::kDouble);
  in.mask = at::ones({1, 2}, at::kDouble);
  in.advantages = at::tensor({1.0}, at::kDouble);
  GrpoLossOptions o = Options("dapo");
  o.importance_sampling_level = "sequence";
  auto out = GrpoLoss(in, o, BatchTotals{1, 2, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), -1.28, 1e-9);  // clipped high
  EXPECT_EQ(out->stats.clip_high, 2);
  in.advantages = at::tensor({-1.0}, at::kDouble);
  out = GrpoLoss(in, o, BatchTotals{1, 2, 1});
  ASSERT_TRUE(out.ok());
  EXPECT_NEAR(out->loss.item<double>(), std::sqrt(2.0), 1e-9);
  out->loss.backward();
  // loss = ρ_seq; dρ_seq/dlogp_t = ρ_seq / 2.
  EXPECT_NEAR(in.logp.grad()[0][0].item<double>(), std::sqrt(2.0) / 2, 1e-9);
  EXPECT_NEAR(in.logp.grad()[0][1].item<double>(), std::sqrt(2.0) / 2, 1e-9);
}

TEST(GrpoLossTest, TisCapsTheBehaviourWeight) {
  LossInputs in;
  in.logp = Leaf(at::zeros({1, 2}, at::kDouble));
  in.old_logp = at::zeros({1, 2}, at::kDouble);
  // old - behaviour = ln 3, ln 0.5: weights 3 -> cap 2, 0.5.
  in.behaviour_logp = T2({{-std::log(3.0), -std::log(0.5)}});
  in.mask = at::ones({1, 2}, at::kDouble);
  in.advantages = at::tensor({1.0}, at::kDouble);
  GrpoLossOptions o = Options("dapo");
  o.tis_cap = 2;
  auto out = GrpoLoss(in, o, BatchTotals{1, 2, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), (-2 - 0.5) / 2, 1e-9);
  EXPECT_EQ(out->stats.tis_truncated, 1);
}

TEST(GrpoLossTest, SftIsTheNllOfCompletionTokens) {
  at::Tensor logp = Leaf(T2({{-1.0, -2.0}, {-3.0, -4.0}}));
  at::Tensor mask = T2({{0, 1}, {1, 1}});
  auto out = SftLoss(logp, mask, BatchTotals{2, 3, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), 9.0 / 3, 1e-9);
}

TEST(GrpoLossTest, BadInputIsRefused) {
  HandCase c;
  LossInputs in = c.Inputs();
  in.mask = at::ones({2, 2}, at::kDouble);
  auto out = GrpoLoss(in, Options("dapo"), BatchTotals{2, 5, 1});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("mask has shape"), std::string::npos);
  EXPECT_FALSE(GrpoLoss(c.Inputs(), Options("ppo"), BatchTotals{2, 5, 1}).ok());
  EXPECT_FALSE(GrpoLoss(c.Inputs(), Options("dapo"), BatchTotals{0, 5, 1}).ok());
  in = c.Inputs();
  in.advantages = at::ones({3}, at::kDouble);
  EXPECT_FALSE(GrpoLoss(in, Options("dapo"), BatchTotals{2, 5, 1}).ok());
}

// The analytic gradient against central finite differences, on random
// inputs with every term on (KL, TIS), for each loss type and ratio level.
TEST(GrpoLossTest, GradientMatchesFiniteDifferences) {
  at::manual_seed(3);
  const int64_t s = 3, t = 5;
  for (const std::string level : {"token", "sequence"}) {
    for (const std::string type : {"grpo", "dapo", "bnpo", "dr_grpo"}) {
      LossInputs in;
      at::Tensor base = at::randn({s, t}, at::kDouble) * 0.3 - 1.0;
      in.old_logp = base + at::randn({s, t}, at::kDouble) * 0.3;
      in.behaviour_logp = in.old_logp + at::randn({s, t}, at::kDouble) * 0.5;
      in.ref_logp = base + at::randn({s, t}, at::kDouble) * 0.3;
      in.mask = (at::rand({s, t}, at::kDouble) > 0.2).to(at::kDouble);
      in.mask[0][0] = 1;
      in.advantages = at::randn({s}, at::kDouble);
      GrpoLossOptions o = Options(type);
      o.importance_sampling_level = level;
      o.beta = 0.05;
      o.tis_cap = 1.5;
      const BatchTotals totals{s, in.mask.sum().item<double>(), 1};
      in.logp = Leaf(base);
      auto out = GrpoLoss(in, o, totals);
      ASSERT_TRUE(out.ok()) << out.status();
      out->loss.backward();
      at::Tensor grad = in.logp.grad();
      const double h = 1e-6;
      for (int64_t i = 0; i < s; ++i) {
        for (int64_t j = 0; j < t; ++j) {
          auto eval = [&](double delta) {
            LossInputs p = in;
            at::Tensor x = base.clone();
            x[i][j] += delta;
            p.logp = x;
            return GrpoLoss(p, o, totals)->loss.item<double>();
          };
          const double fd = (eval(h) - eval(-h)) / (2 * h);
          EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-6)
              << level << " " << type << " " << i << "," << j;
        }
      }
    }
  }
}

}  // namespace
}  // namespace cohort::learner
