#include "reward_server/verifiers/math_equiv.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reward_server/verifiers/latex_normalize.h"
#include "reward_server/verifiers/math_accuracy.h"

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
       {"integer", "decimal", "thousands", "sign", "percent", "frac", "mixed", "sqrt", "pi",
        "scientific", "units", "text", "degrees", "left-right", "spacing", "assignment", "tuple",
        "interval", "set", "list", "matrix", "algebra", "complex", "plus-minus", "equation",
        "tolerance",
        // forms of relations, labels, number formats, matrices, degrees
        "relation", "relation-mirror", "relation-negated", "relation-interval", "label", "approx",
        "list-words", "list-separators", "list-tuples", "plain-braces", "latex-thousands",
        "currency", "font", "time", "matrix-arithmetic", "vector", "real-root", "degree-trig"}) {
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

TEST(EquivalencePairs, EveryNewRuleHasBothVerdicts) {
  std::map<std::string, std::set<std::string>> verdicts;
  for (const Pair& p : LoadPairs()) verdicts[p.rule].insert(p.label);
  for (const char* rule : {"relation",
                           "relation-mirror",
                           "relation-negated",
                           "relation-interval",
                           "label",
                           "approx",
                           "list-words",
                           "list-separators",
                           "list-tuples",
                           "plain-braces",
                           "latex-thousands",
                           "spacing",
                           "mixed",
                           "currency",
                           "units",
                           "font",
                           "time",
                           "matrix-arithmetic",
                           "vector",
                           "real-root",
                           "degree-trig"}) {
    EXPECT_EQ(verdicts[rule].size(), 2u)
        << "rule " << rule << " lacks an equal or a different pair";
  }
}

// The agreement set: answer pairs of the kinds public verifiers (Math-Verify,
// the MATH grader, MARIO_EVAL, NeMo-Skills, Qwen2.5-Math's grader) judge
// alike. Prints the agreement per category; the goal is at least 95%.
TEST(AgreementSet, AtLeast95PercentWithPublicVerifiers) {
  std::ifstream in(std::string(COHORT_SOURCE_DIR) +
                   "/reward_server/verifiers/testdata/agreement_pairs.jsonl");
  ASSERT_TRUE(in) << "missing testdata/agreement_pairs.jsonl";
  std::map<std::string, std::pair<int, int>> per_category;  // agreed, total
  int agreed = 0;
  int total = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    std::string ref = j.at("reference"), pred = j.at("prediction"), want = j.at("expected");
    std::string category = j.at("category");
    ASSERT_TRUE(want == "equal" || want == "different") << line;
    EquivalenceResult r = CompareAnswers(pred, ref);
    EXPECT_NE(r.verdict, Equivalence::kInvalidReference) << ref << ": " << r.reason;
    bool ok = (r.verdict == Equivalence::kEqual) == (want == "equal");
    if (!ok)
      std::printf("  disagrees [%s]: %s vs %s (%s)\n", category.c_str(), pred.c_str(), ref.c_str(),
                  want.c_str());
    per_category[category].first += ok;
    per_category[category].second += 1;
    agreed += ok;
    ++total;
  }
  ASSERT_GE(total, 300);
  for (const auto& [category, counts] : per_category) {
    std::printf("  %-14s %3d/%3d\n", category.c_str(), counts.first, counts.second);
  }
  double fraction = static_cast<double>(agreed) / total;
  std::printf("agreement with public verifiers: %d/%d = %.3f\n", agreed, total, fraction);
  EXPECT_GE(fraction, 0.95);
}

TEST(MathOptions, DecimalComma) {
  MathOptions comma;
  comma.decimal_comma = true;
  EXPECT_FALSE(MathEquivalent("1,5", "1.5"));  // default: the list 1, 5
  EXPECT_TRUE(MathEquivalent("1,5", "1.5", comma));
  EXPECT_TRUE(MathEquivalent("2,74", "2.74", comma));
  EXPECT_TRUE(MathEquivalent("0,111", "0.111", comma));
  EXPECT_FALSE(MathEquivalent("1,5", "15", comma));
  // Two commas stay thousands separators; lists in brackets stay lists.
  EXPECT_TRUE(MathEquivalent("1,000,000", "1000000", comma));
  EXPECT_TRUE(MathEquivalent("(1,5)", "(1, 5)", comma));
  EXPECT_TRUE(MathEquivalent("1,5", "5, 1"));
}

TEST(MathOptions, RelativeTolerance) {
  MathOptions loose;
  loose.relative_tolerance = 1e-4;
  EXPECT_FALSE(MathEquivalent("3.1416", "\\pi"));
  EXPECT_TRUE(MathEquivalent("3.1416", "\\pi", loose));
  EXPECT_FALSE(MathEquivalent("3.14", "\\pi", loose));
  // Integers stay exact whatever the tolerance.
  EXPECT_FALSE(MathEquivalent("100001", "100000", loose));
}

TEST(MathOptions, OrderedLists) {
  MathOptions ordered;
  ordered.ordered_lists = true;
  EXPECT_TRUE(MathEquivalent("3, 5, 7", "7, 3, 5"));
  EXPECT_FALSE(MathEquivalent("3, 5, 7", "7, 3, 5", ordered));
  EXPECT_TRUE(MathEquivalent("3, 5, 7", "3, 5, 7", ordered));
  EXPECT_TRUE(MathEquivalent("3, 5, 7", "3,5,7", ordered));
  // Sets stay unordered.
  EXPECT_TRUE(MathEquivalent("\\{3, 5\\}", "\\{5, 3\\}", ordered));
}

TEST(CompareAnswers, NewFormsStaySound) {
  // A relation is not its boundary value, nor a different variable's.
  EXPECT_FALSE(MathEquivalent("x > 5", "5"));
  EXPECT_FALSE(MathEquivalent("5", "x \\geq 5"));
  EXPECT_FALSE(MathEquivalent("x > 5", "y > 5"));
  // An empty or non-linear constraint is compared as written, not solved.
  EXPECT_FALSE(MathEquivalent("f(1) < f(2) < f(4)", "f(2) < f(1) < f(4)"));
  EXPECT_FALSE(MathEquivalent("x^2 < 4", "x < 2"));
  EXPECT_TRUE(MathEquivalent("x^2 < 4", "4 > x^2"));
  // A list is not one of its elements; a repeated tuple does not complete one.
  EXPECT_FALSE(MathEquivalent("5 or 6", "5"));
  EXPECT_FALSE(MathEquivalent("(1,2), (1,2)", "(1,2), (3,4)"));
  // The exact part before \approx decides.
  EXPECT_FALSE(MathEquivalent("0 \\approx 5", "5"));
  // Times are not numbers.
  EXPECT_FALSE(MathEquivalent("1:30", "1.5"));
  // Degrees convert only inside trigonometric arguments.
  EXPECT_TRUE(MathEquivalent("90^\\circ", "90"));
  EXPECT_FALSE(MathEquivalent("90^\\circ", "\\frac{\\pi}{2}"));
  // Matrices with symbols are compared element-wise, not multiplied.
  EXPECT_FALSE(
      MathEquivalent("\\begin{pmatrix}a & 0 \\\\ 0 & a\\end{pmatrix}\\begin{pmatrix}1 & 0 \\\\ 0 & "
                     "1\\end{pmatrix}",
                     "\\begin{pmatrix}a & 0 \\\\ 0 & a\\end{pmatrix}"));
  EXPECT_FALSE(MathEquivalent(
      "\\begin{pmatrix}1 & 2\\end{pmatrix}\\begin{pmatrix}1 & 2\\end{pmatrix}", "5"));
}

TEST(MathAccuracy, UnparseablePredictionsAreOkZeroWithAReason) {
  for (const char* said : {"x <", "\\begin{pmatrix}1 & 2 \\\\ 3\\end{pmatrix}", "(p,q) = (",
                           "\\approx", "x < 1 \\text{ or } y > 2", "25:99 PM", "\\sin(90^\\circ"}) {
    Sample s;
    s.task = "math";
    s.completion = std::string("The answer is \\boxed{") + said + "}.";
    s.answer = "5";
    ComponentResult r = MathAccuracy(s);
    EXPECT_EQ(r.status, Status::kOk) << said << ": " << r.reason;
    EXPECT_EQ(r.value, 0.0) << said;
    EXPECT_FALSE(r.reason.empty()) << said;
  }
}

TEST(CompareAnswers, NewGrammarIsBoundedOnHostileInput) {
  std::string chain = "1";
  for (int i = 0; i < 500; ++i) chain += " < x";
  EXPECT_EQ(CompareAnswers(chain, "1").verdict, Equivalence::kDifferent);
  std::string words = "1";
  for (int i = 0; i < 400; ++i) words += " and 1";
  EXPECT_EQ(CompareAnswers(words, "1").verdict, Equivalence::kDifferent);
  std::string approx = "1";
  for (int i = 0; i < 150; ++i) approx += " \\approx 1";
  EXPECT_EQ(CompareAnswers(approx, "1").verdict, Equivalence::kEqual);
  std::string big = "\\begin{pmatrix}";
  for (int i = 0; i < 63; ++i) big += "1 \\\\ ";
  big += "1\\end{pmatrix}";
  std::string row = "\\begin{pmatrix}";
  for (int i = 0; i < 63; ++i) row += "1 & ";
  row += "1\\end{pmatrix}";
  // 64x1 times 1x64 would have 4096 entries: refused, not computed.
  EquivalenceResult r = CompareAnswers(big + row, "1");
  EXPECT_EQ(r.verdict, Equivalence::kDifferent);
  std::string many;
  for (int i = 0; i < 100; ++i) many += "\\begin{pmatrix}1\\end{pmatrix}";
  EXPECT_EQ(CompareAnswers(many, "1").verdict, Equivalence::kDifferent);
  std::string labels;
  for (int i = 0; i < 300; ++i) labels += "\\hat{\\hat{\\hat{x}}}";
  EXPECT_EQ(CompareAnswers(labels + " = 1", "1").verdict, Equivalence::kDifferent);
}

}  // namespace
}  // namespace cohort::reward
