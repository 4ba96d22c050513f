#include "reward_server/verifiers/math_equiv.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "reward_server/verifiers/expr.h"
#include "reward_server/verifiers/latex_normalize.h"

namespace cohort::reward {
namespace {

struct Pair {
  int line;
  std::string predicted, reference, label, rule;
};

std::vector<Pair> LoadPairs() {
  std::ifstream in(std::string(COHORT_SOURCE_DIR) +
                   "/reward_server/verifiers/testdata/equivalence_pairs.tsv");
  std::vector<Pair> pairs;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, '\t')) f.push_back(field);
    EXPECT_EQ(f.size(), 4u) << "line " << n << ": " << line;
    if (f.size() != 4) continue;
    pairs.push_back({n, f[0], f[1], f[2], f[3]});
  }
  return pairs;
}

TEST(EquivalencePairs, AllLabelledPairsAgree) {
  std::vector<Pair> pairs = LoadPairs();
  ASSERT_GE(pairs.size(), 200u) << "the pair file is missing or too short";
  std::map<std::string, int> per_rule;
  int equal = 0;
  int different = 0;
  for (const Pair& p : pairs) {
    ASSERT_TRUE(p.label == "equal" || p.label == "different")
        << "line " << p.line << ": bad label " << p.label;
    EquivalenceResult r = CompareAnswers(p.predicted, p.reference);
    bool want = p.label == "equal";
    EXPECT_NE(r.verdict, Equivalence::kInvalidReference)
        << "line " << p.line << ": reference " << p.reference << ": " << r.reason;
    EXPECT_EQ(r.verdict == Equivalence::kEqual, want)
        << "line " << p.line << " [" << p.rule << "]: \"" << p.predicted << "\" vs \""
        << p.reference << "\" should be " << p.label << " (" << r.reason << ")";
    ++per_rule[p.rule];
    (want ? equal : different)++;
  }
  EXPECT_GE(equal, 80);
  EXPECT_GE(different, 60);
  // Every rule the verifier promises is exercised.
  for (const char* rule :
       {"integer", "decimal",    "thousands",  "sign",     "percent",  "frac",    "mixed",
        "sqrt",    "pi",         "scientific", "units",    "text",     "degrees", "left-right",
        "spacing", "assignment", "tuple",      "interval", "set",      "list",    "matrix",
        "algebra", "complex",    "plus-minus", "equation", "tolerance"}) {
    EXPECT_GE(per_rule[rule], 3) << "rule " << rule << " has too few pairs";
  }
}

TEST(EquivalencePairs, SymmetricForEqualPairs) {
  // Equality does not depend on which side is the reference, except for the
  // documented asymmetries (percent applies to either side anyway).
  for (const Pair& p : LoadPairs()) {
    if (p.label != "equal") continue;
    EXPECT_TRUE(MathEquivalent(p.reference, p.predicted))
        << "line " << p.line << ": " << p.reference << " vs " << p.predicted;
  }
}

TEST(MathEquivalent, NamedTrickyNonEquivalences) {
  EXPECT_FALSE(MathEquivalent("1/2", "12"));
  EXPECT_FALSE(MathEquivalent("12", "1/2"));
  EXPECT_FALSE(MathEquivalent("(1,2)", "\\{1,2\\}"));
  EXPECT_FALSE(MathEquivalent("(2,1)", "(1,2)"));
  EXPECT_FALSE(MathEquivalent("x^2", "2x"));
  EXPECT_FALSE(MathEquivalent("3/56", "0.0536"));
  EXPECT_FALSE(MathEquivalent("(1,2]", "(1,2)"));
}

TEST(CompareAnswers, InvalidReferenceIsReported) {
  for (const char* bad : {"", "   ", "\\frac{1}{", "(1,2", "$$", "???"}) {
    EquivalenceResult r = CompareAnswers("5", bad);
    EXPECT_EQ(r.verdict, Equivalence::kInvalidReference) << "\"" << bad << "\"";
    EXPECT_NE(r.reason.find("reference"), std::string::npos) << r.reason;
  }
  std::string huge(kMaxAnswerBytes + 1, '1');
  EXPECT_EQ(CompareAnswers("1", huge).verdict, Equivalence::kInvalidReference);
}

TEST(CompareAnswers, UnparseablePredictionIsDifferentNotInvalid) {
  EquivalenceResult r = CompareAnswers("\\frac{1}{", "5");
  EXPECT_EQ(r.verdict, Equivalence::kDifferent);
  EXPECT_FALSE(r.reason.empty());
  EXPECT_EQ(CompareAnswers("", "5").verdict, Equivalence::kDifferent);
}

TEST(CompareAnswers, BoundedOnHostileInput) {
  std::string deep(5000, '(');
  deep += "1";
  deep += std::string(5000, ')');
  EXPECT_EQ(CompareAnswers(deep, "1").verdict, Equivalence::kDifferent);
  std::string nest;
  for (int i = 0; i < 200; ++i) nest += "\\frac{1}{";
  nest += "2";
  for (int i = 0; i < 200; ++i) nest += "}";
  EXPECT_EQ(CompareAnswers(nest, "1").verdict, Equivalence::kDifferent);
  std::string pm;
  for (int i = 0; i < 40; ++i) pm += "1\\pm ";
  pm += "1";
  EXPECT_EQ(CompareAnswers(pm, "1").verdict, Equivalence::kDifferent);
  std::string many;
  for (int i = 0; i < 300; ++i) many += "1,";
  many += "1";
  EXPECT_EQ(CompareAnswers(many, "1").verdict, Equivalence::kDifferent);
  EXPECT_FALSE(MathEquivalent("9^{9^{9^{9}}}", "1"));
  EXPECT_FALSE(MathEquivalent("1000000!", "1"));
}

TEST(NormalizeLatex, CleansUpCommonNoise) {
  EXPECT_EQ(NormalizeLatex("\\left( 3, \\frac{\\pi}{2} \\right)"), "( 3, \\frac{\\pi}{2} )");
  EXPECT_EQ(NormalizeLatex("10,\\!080"), "10,080");
  EXPECT_EQ(NormalizeLatex("\\$32,\\!348"), "32,348");
  EXPECT_EQ(NormalizeLatex("90^\\circ"), "90");
  EXPECT_EQ(NormalizeLatex("\\dfrac{1}{2}"), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeLatex("5.4 \\text{ cents}"), "5.4 cents");
  EXPECT_EQ(NormalizeLatex("52_8"), "52");
  EXPECT_EQ(NormalizeLatex("50\\%."), "50%");
  EXPECT_EQ(NormalizeLatex("x_1"), "x_1");
}

TEST(Expression, EvaluatesLatexAndPlainNotation) {
  auto value = [](const char* s) {
    auto e = expr::Expression::Parse(s);
    EXPECT_TRUE(e.has_value()) << s;
    return e ? e->Evaluate({}) : expr::Complex(NAN, 0);
  };
  EXPECT_DOUBLE_EQ(value("\\frac{3}{4}").real(), 0.75);
  EXPECT_DOUBLE_EQ(value("2^{10}").real(), 1024);
  EXPECT_DOUBLE_EQ(value("-2^2").real(), -4);
  EXPECT_DOUBLE_EQ(value("(-2)^3").real(), -8);
  EXPECT_DOUBLE_EQ(value("2\\frac{1}{4}").real(), 2.25);
  EXPECT_DOUBLE_EQ(value("2 \\cdot 3 + 4").real(), 10);
  EXPECT_DOUBLE_EQ(value("|-3|").real(), 3);
  EXPECT_DOUBLE_EQ(value("4!").real(), 24);
  EXPECT_NEAR(value("\\sqrt{-9}").imag(), 3, 1e-12);
  EXPECT_FALSE(expr::Expression::Parse("Evelyn").has_value());
  EXPECT_FALSE(expr::Expression::Parse("1 +").has_value());
  auto e = expr::Expression::Parse("x^2 + 2xy");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->variables().size(), 2u);
}

}  // namespace
}  // namespace cohort::reward
