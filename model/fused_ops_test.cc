// Each fused kernel against the plain ATen composition it replaces:
// forward values and the gradients of every differentiable input, in float
// and double, on random shapes (odd sizes, several threads, GQA, packed
// rows with several sequences each).
#include "model/fused_ops.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "model/aten.h"
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "model/tiny_model.h"
#include "model/transformer.h"

namespace cohort::model::fused {
namespace {

// max |a - b| / (1 + max |b|).
double RelDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const double scale = 1.0 + b.abs().max().item<double>();
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

double Tol(at::ScalarType t) { return t == at::kDouble ? 1e-12 : 2e-5; }

at::Tensor Leaf(const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); }

at::Tensor PlainRms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

at::Tensor PlainRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// Packed rows: [B, T] segment ids, each row split into 1..3 sequences,
// sometimes ending in padding (0).
at::Tensor RandomSegments(int64_t b, int64_t t, std::mt19937& rng) {
  at::Tensor seg = at::zeros({b, t}, at::kLong);
  auto s = seg.accessor<int64_t, 2>();
  int64_t id = 1;
  for (int64_t r = 0; r < b; ++r) {
    int64_t c = 0;
    const int64_t pad = rng() % 3 == 0 ? static_cast<int64_t>(rng() % (t / 2 + 1)) : 0;
    while (c < t - pad) {
      const int64_t len = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(t));
      for (int64_t k = 0; k < len && c < t - pad; ++k) s[r][c++] = id;
      ++id;
    }
  }
  return seg;
}

// [B, 1, T, T]: causal within a segment, padding attends to itself only.
at::Tensor AllowedFromSegments(const at::Tensor& seg) {
  const int64_t t = seg.size(1);
  at::Tensor causal = at::ones({t, t}, at::kBool).tril();
  at::Tensor same = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (seg != 0).unsqueeze(1);
  return at::logical_or(at::logical_and(causal.unsqueeze(0), same), at::eye(t, at::kBool))
      .unsqueeze(1);
}

class FusedOpsTest : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override { at::manual_seed(7); }
  at::TensorOptions opts() const { return at::TensorOptions().dtype(GetParam()); }
};

TEST_P(FusedOpsTest, RmsNormMatchesComposition) {
  for (auto shape : std::vector<std::vector<int64_t>>{{3, 5, 64}, {7, 33}, {2, 1, 4, 16}}) {
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      at::Tensor x = at::randn(shape, opts()) * 3;
      at::Tensor w = at::randn({shape.back()}, opts());
      at::Tensor x1 = Leaf(x), w1 = Leaf(w), x2 = Leaf(x), w2 = Leaf(w);
      at::Tensor y1 = RmsNorm(x1, w1, 1e-6), y2 = PlainRms(x2, w2, 1e-6);
      EXPECT_LT(RelDiff(y1, y2), Tol(GetParam()));
      at::Tensor g = at::randn(y2.sizes(), opts());
      y1.backward(g);
      y2.backward(g);
      EXPECT_LT(RelDiff(x1.grad(), x2.grad()), Tol(GetParam()));
      EXPECT_LT(RelDiff(w1.grad(), w2.grad()), Tol(GetParam()));
    }
  }
  at::set_num_threads(1);
}

TEST_P(FusedOpsTest, RmsNormOnNonContiguousInputAndFrozenWeight) {
  at::Tensor x = Leaf(at::randn({16, 10}, opts()).t());  // [10, 16], strided
  at::Tensor w = at::randn({16}, opts());                // no grad
  at::Tensor y = RmsNorm(x, w, 1e-5);
  EXPECT_LT(RelDiff(y, PlainRms(x.detach(), w, 1e-5)), Tol(GetParam()));
  y.sum().backward();
  at::Tensor x2 = Leaf(x.detach());
  PlainRms(x2, w, 1e-5).sum().backward();
  EXPECT_LT(RelDiff(x.grad(), x2.grad()), Tol(GetParam()));
}

TEST_P(FusedOpsTest, QkvRopeMatchesComposition) {
  std::mt19937 rng(3);
  struct Case {
    int64_t b, t, h, kvh, hd;
    bool norm;
  };
  for (const Case& c : {Case{2, 9, 4, 2, 16, true}, Case{3, 5, 2, 2, 8, false},
                        Case{1, 17, 6, 1, 4, true}, Case{2, 4, 4, 4, 2, false}}) {
    at::Tensor q = at::randn({c.b, c.t, c.h * c.hd}, opts());
    at::Tensor k = at::randn({c.b, c.t, c.kvh * c.hd}, opts());
    at::Tensor v = at::randn({c.b, c.t, c.kvh * c.hd}, opts());
    at::Tensor qn = at::randn({c.hd}, opts()), kn = at::randn({c.hd}, opts());
    // A RoPE table from packed positions (halves repeated, as the model's).
    at::Tensor pos = at::randint(0, 50, {c.b, c.t}, at::kLong).to(GetParam());
    at::Tensor inv = at::rand({c.hd / 2}, opts());
    at::Tensor freqs = pos.unsqueeze(-1) * inv;
    at::Tensor emb = at::cat({freqs, freqs}, -1);  // [B, T, hd]
    at::Tensor cos = emb.cos(), sin = emb.sin();
    std::vector<at::Tensor> in1 = {Leaf(q), Leaf(k), Leaf(v), Leaf(qn), Leaf(kn)};
    std::vector<at::Tensor> in2 = {Leaf(q), Leaf(k), Leaf(v), Leaf(qn), Leaf(kn)};
    std::vector<at::Tensor> out1 =
        QkvRope(at::cat({in1[0], in1[1], in1[2]}, -1), c.norm ? in1[3] : at::Tensor(),
                c.norm ? in1[4] : at::Tensor(), cos, sin, c.h, c.kvh, 1e-6);
    at::Tensor q2 = in2[0].view({c.b, c.t, c.h, c.hd});
    at::Tensor k2 = in2[1].view({c.b, c.t, c.kvh, c.hd});
    if (c.norm) {
      q2 = PlainRms(q2, in2[3], 1e-6);
      k2 = PlainRms(k2, in2[4], 1e-6);
    }
    at::Tensor c4 = cos.unsqueeze(2), s4 = sin.unsqueeze(2);
    std::vector<at::Tensor> out2 = {PlainRope(q2, c4, s4).transpose(1, 2),
                                    PlainRope(k2, c4, s4).transpose(1, 2),
                                    in2[2].view({c.b, c.t, c.kvh, c.hd}).transpose(1, 2)};
    at::Tensor loss1 = at::zeros({}, opts()), loss2 = at::zeros({}, opts());
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(out1[i].is_contiguous());
      EXPECT_LT(RelDiff(out1[i], out2[i]), Tol(GetParam())) << "output " << i;
      at::Tensor g = at::randn(out2[i].sizes(), opts());
      loss1 = loss1 + (out1[i] * g).sum();
      loss2 = loss2 + (out2[i] * g).sum();
    }
    loss1.backward();
    loss2.backward();
    for (int i = 0; i < (c.norm ? 5 : 3); ++i) {
      EXPECT_LT(RelDiff(in1[i].grad(), in2[i].grad()), Tol(GetParam())) << "input " << i;
    }
    if (!c.norm) EXPECT_FALSE(in1[3].grad().defined());
  }
}

TEST_P(FusedOpsTest, MaskedSoftmaxMatchesCompositionOnPackedRows) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t b = 1 + trial % 3, kvh = 1 + trial % 2, g = 1 + trial / 2;
    const int64_t t = 5 + 7 * trial;
    at::Tensor allowed = AllowedFromSegments(RandomSegments(b, t, rng));
    if (trial >= 4) {
      // Masks with holes (not one range per row): the general path.
      allowed = at::logical_or(at::rand({b, 1, t, t}) < 0.5, at::eye(t, at::kBool));
    }
    at::Tensor s = at::randn({b, kvh, g * t, t}, opts()) * 4;
    const double scale = 0.25;
    at::Tensor s1 = Leaf(s), s2 = Leaf(s);
    at::Tensor p1 = MaskedSoftmax(s1, allowed, scale);
    at::Tensor masked = (s2 * scale)
                            .view({b, kvh, g, t, t})
                            .masked_fill(allowed.unsqueeze(2).logical_not(),
                                         -std::numeric_limits<double>::infinity());
    at::Tensor p2 = at::softmax(masked, -1).view({b, kvh, g * t, t});
    EXPECT_LT(RelDiff(p1, p2), Tol(GetParam()));
    at::Tensor gr = at::randn(p2.sizes(), opts());
    p1.backward(gr);
    p2.backward(gr);
    EXPECT_LT(RelDiff(s1.grad(), s2.grad()), Tol(GetParam()));
  }
}

// fused::Attention against the composition it replaces (KV heads repeated
// for GQA, q.k^T, masked softmax, .v, heads side by side): the output and
// the gradients of q, k and v, on packed rows (causal inside each
// sequence, padding seeing itself), masks with holes, GQA and 1 or 2
// threads.
TEST_P(FusedOpsTest, AttentionMatchesCompositionOnPackedRowsAndHoles) {
  std::mt19937 rng(13);
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t b = 1 + trial % 3, kvh = 1 + trial % 2, g = 1 + (trial / 2) % 3;
    const int64_t t = 3 + 9 * trial, hd = trial % 2 == 0 ? 16 : 7;
    const int64_t heads = kvh * g;
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    at::Tensor allowed = AllowedFromSegments(RandomSegments(b, t, rng));
    if (trial >= 6) {
      // Holes (not one range per row): the masked keys inside a row's hull.
      allowed = at::logical_or(at::rand({b, 1, t, t}) < 0.5, at::eye(t, at::kBool));
    }
    at::Tensor q = at::randn({b, heads, t, hd}, opts()) * 2;
    at::Tensor k = at::randn({b, kvh, t, hd}, opts()) * 2;
    at::Tensor v = at::randn({b, kvh, t, hd}, opts());
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    at::Tensor gr = at::randn({b, t, heads * hd}, opts());
    at::Tensor q2 = Leaf(q), k2 = Leaf(k), v2 = Leaf(v);
    at::Tensor s2 = at::matmul(q2, k2.repeat_interleave(g, 1).transpose(-1, -2)) * scale;
    s2 = s2.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    at::Tensor o2 = at::matmul(at::softmax(s2, -1), v2.repeat_interleave(g, 1))
                        .transpose(1, 2)
                        .reshape({b, t, heads * hd});
    o2.backward(gr);
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      at::Tensor q1 = Leaf(q), k1 = Leaf(k), v1 = Leaf(v);
      at::Tensor o1 = Attention(q1, k1, v1, allowed, scale);
      EXPECT_LT(RelDiff(o1, o2), Tol(GetParam()));
      o1.backward(gr);
      EXPECT_LT(RelDiff(q1.grad(), q2.grad()), Tol(GetParam()));
      EXPECT_LT(RelDiff(k1.grad(), k2.grad()), Tol(GetParam()));
      EXPECT_LT(RelDiff(v1.grad(), v2.grad()), Tol(GetParam()));
    }
  }
  at::set_num_threads(1);
}

TEST_P(FusedOpsTest, SiluMulMatchesComposition) {
  at::Tensor gate = at::randn({37, 11}, opts()) * 5, up = at::randn({37, 11}, opts());
  at::Tensor g1 = Leaf(gate), u1 = Leaf(up), g2 = Leaf(gate), u2 = Leaf(up);
  at::Tensor y1 = SiluMul(at::cat({g1, u1}, -1)), y2 = at::silu(g2) * u2;
  EXPECT_LT(RelDiff(y1, y2), Tol(GetParam()));
  at::Tensor gr = at::randn(y2.sizes(), opts());
  y1.backward(gr);
  y2.backward(gr);
  EXPECT_LT(RelDiff(g1.grad(), g2.grad()), Tol(GetParam()));
  EXPECT_LT(RelDiff(u1.grad(), u2.grad()), Tol(GetParam()));
}

TEST_P(FusedOpsTest, LogSoftmaxGatherMatchesComposition) {
  for (double inv_temp : {1.0, 1.0 / 0.7}) {
    at::Tensor logits = at::randn({29, 53}, opts()) * 6;
    at::Tensor targets = at::randint(0, 53, {29}, at::kLong);
    at::Tensor l1 = Leaf(logits), l2 = Leaf(logits);
    std::vector<at::Tensor> out = LogSoftmaxGather(l1, targets, inv_temp);
    at::Tensor all = at::log_softmax(l2 * inv_temp, -1);
    at::Tensor lp2 = all.gather(1, targets.unsqueeze(1)).squeeze(1);
    at::Tensor ent2 = -(all.exp() * all).sum(-1);
    EXPECT_LT(RelDiff(out[0], lp2), Tol(GetParam()));
    EXPECT_LT(RelDiff(out[1], ent2.detach()), Tol(GetParam()));
    EXPECT_FALSE(out[1].requires_grad());
    at::Tensor gr = at::randn({29}, opts());
    out[0].backward(gr);
    lp2.backward(gr);
    EXPECT_LT(RelDiff(l1.grad(), l2.grad()), Tol(GetParam()));
  }
}

TEST(FusedOpsErrors, BadInputsThrowNamingTheOp) {
  at::Tensor logits = at::randn({2, 5});
  EXPECT_THROW(LogSoftmaxGather(logits, at::tensor({1, 5}, at::kLong), 1.0), c10::Error);
  EXPECT_THROW(RmsNorm(at::randn({3, 4}), at::randn({5}), 1e-6), c10::Error);
  EXPECT_THROW(SiluMul(at::randn({3, 5})), c10::Error);
  EXPECT_THROW(QkvRope(at::randn({1, 2, 20}), at::Tensor(), at::Tensor(), at::randn({1, 2, 4}),
                       at::randn({1, 2, 4}), 2, 1, 1e-6),
               c10::Error);
  EXPECT_THROW(Attention(at::randn({1, 3, 4, 8}), at::randn({1, 2, 4, 8}), at::randn({1, 2, 4, 8}),
                         at::ones({1, 1, 4, 4}, at::kBool), 0.5),
               c10::Error);  // 2 KV heads do not divide 3 query heads
  EXPECT_THROW(Attention(at::randn({1, 2, 4, 8}), at::randn({1, 2, 4, 8}), at::randn({1, 2, 4, 8}),
                         at::zeros({1, 1, 4, 4}, at::kBool), 0.5),
               c10::Error);  // a row with no allowed key
  EXPECT_FALSE(FusedOpsSupport(at::randn({2}).to(at::kBFloat16)));
  EXPECT_TRUE(FusedOpsSupport(at::randn({2})));
}

TEST(FusedAdamW, MatchesTheAtenSteps) {
  at::manual_seed(11);
  for (double wd : {0.0, 0.1}) {
    at::Tensor p = at::randn({1000}), g = at::randn({1000});
    at::Tensor m = at::randn({1000}) * 0.1, v = at::rand({1000}) * 0.01;
    at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
    const double lr = 1e-3, b1 = 0.9, b2 = 0.99, eps = 1e-8, bc1 = 0.5, bc2 = 0.3;
    AdamWUpdate(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2);
    if (wd > 0) p2.mul_(1.0 - lr * wd);
    m2.mul_(b1).add_(g, 1.0 - b1);
    v2.mul_(b2).addcmul_(g, g, 1.0 - b2);
    p2.addcdiv_(m2, (v2.sqrt() / bc2).add_(eps), -lr / bc1);
    EXPECT_LT(RelDiff(m, m2), 1e-6);
    EXPECT_LT(RelDiff(v, v2), 1e-6);
    EXPECT_LT(RelDiff(p, p2), 1e-6);
  }
}

// The whole layer stack (Transformer::StackLayer + FinalNorm) fused vs
// plain, on packed rows, in every layout: hidden states and the gradients
// of the input and of every weight.
class FusedStackTest : public ::testing::TestWithParam<testing::Variant> {};

void CompareStacks(const ModelConfig& config, int64_t b, int64_t t, std::mt19937& rng);

TEST_P(FusedStackTest, MatchesPlainLayersForwardAndBackward) {
  const ModelConfig config = testing::TinyConfig(GetParam());
  std::mt19937 rng(9);
  // 63 tokens: separate q/k/v and gate/up projections; 160 (>= hidden):
  // merged ones (Transformer::FusedLayer).
  for (auto [b, t] : std::vector<std::pair<int64_t, int64_t>>{{3, 21}, {4, 40}}) {
    SCOPED_TRACE(::testing::Message() << b << " x " << t);
    CompareStacks(config, b, t, rng);
  }
}

void CompareStacks(const ModelConfig& config, int64_t b, int64_t t, std::mt19937& rng) {
  at::Tensor segments = RandomSegments(b, t, rng);
  at::Tensor tokens = at::randint(0, config.vocab_size, {b, t}, at::kLong);
  // Padding positions are unspecified: no gradient from them, compared on
  // real tokens only.
  at::Tensor real = (segments != 0).unsqueeze(-1);
  at::Tensor grad_out = at::randn({b, t, config.hidden_size}) * real;
  std::vector<std::pair<at::Tensor, TensorMap>> results;
  for (bool fused : {false, true}) {
    auto model =
        Transformer::Create(config, testing::RandomWeights(config, 4), at::kFloat, at::kCPU);
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->set_fused_stack(fused);
    for (auto& [name, w] : (*model)->weights()) w.set_requires_grad(true);
    auto in = (*model)->PrepareStack(tokens, segments);
    ASSERT_TRUE(in.ok()) << in.status();
    at::Tensor h = at::embedding((*model)->token_embedding(), tokens);
    for (int64_t l = 0; l < (*model)->num_layers(); ++l) h = (*model)->StackLayer(l, h, *in);
    h = (*model)->FinalNorm(h);
    h.backward(grad_out);
    TensorMap grads;
    for (auto& [name, w] : (*model)->weights()) {
      if (name == "lm_head.weight") continue;  // the head is not part of the stack
      ASSERT_TRUE(w.grad().defined()) << name;
      grads[name] = w.grad().clone();
    }
    results.push_back({h.detach(), grads});
  }
  EXPECT_LT(RelDiff(results[1].first * real, results[0].first * real), 2e-5);
  for (const auto& [name, g] : results[0].second) {
    EXPECT_LT(RelDiff(results[1].second.at(name), g), 2e-5) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, FusedStackTest,
                         ::testing::Values(testing::Variant::kQwen2, testing::Variant::kQwen3,
                                           testing::Variant::kLlama3),
                         [](const ::testing::TestParamInfo<testing::Variant>& info) {
                           return testing::VariantName(info.param);
                         });

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedOpsTest, ::testing::Values(at::kFloat, at::kDouble),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(info.param == at::kFloat ? "Float" : "Double");
                         });

}  // namespace
}  // namespace cohort::model::fused
