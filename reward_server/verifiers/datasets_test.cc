// Checks the verifiers against the reference solutions of GSM8K and
// MATH-500 (../shared/data; skipped when absent, failed when absent under
// COHORT_REQUIRE_DATA=1).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/testing/require.h"
#include "reward_server/verifiers/latex_normalize.h"
#include "reward_server/verifiers/verifiers.h"

namespace cohort::reward {
namespace {

const std::string kData = std::string(COHORT_SOURCE_DIR) + "/../shared/data";

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

std::string Squash(std::string_view s) {
  std::string out;
  for (char c : NormalizeLatex(s)) {
    if (c != ' ') out.push_back(c);
  }
  return out;
}

TEST(Gsm8k, ReferenceSolutionsScoreTheirOwnAnswer) {
  auto items = ReadJsonl(kData + "/gsm8k/test.jsonl");
  if (items.empty()) COHORT_SKIP_OR_FAIL("no " << kData << "/gsm8k/test.jsonl");
  ASSERT_EQ(items.size(), 1319u);
  int correct = 0;
  int wrong_when_changed = 0;
  for (const auto& item : items) {
    std::string solution = item["answer"];
    Sample s;
    s.task = "gsm8k";
    s.completion = solution;
    s.answer = solution;
    ComponentResult r = Gsm8kAccuracy(s);
    EXPECT_EQ(r.status, Status::kOk) << r.reason;
    if (r.value == 1.0) {
      ++correct;
    } else {
      ADD_FAILURE() << "not correct: " << solution << " (" << r.reason << ")";
    }
    // Change the final number: the solution must now be wrong.
    std::string ref = Gsm8kReference(solution).value();
    std::string changed = ref + "1";  // 18 -> 181, -3 -> -31, 2.5 -> 2.51
    s.completion = solution.substr(0, solution.rfind("####")) + "#### " + changed;
    r = Gsm8kAccuracy(s);
    EXPECT_EQ(r.status, Status::kOk);
    if (r.value == 0.0) {
      ++wrong_when_changed;
    } else {
      ADD_FAILURE() << "changed answer " << changed << " judged correct for " << ref;
    }
  }
  EXPECT_EQ(correct, 1319);
  EXPECT_EQ(wrong_when_changed, 1319);
}

struct Math500 {
  std::vector<nlohmann::json> items;
  std::map<std::string, std::string> misses;  // "kind id" -> detail
};

Math500 Evaluate() {
  Math500 m;
  m.items = ReadJsonl(kData + "/math500/test.jsonl");
  const auto& items = m.items;
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::string id = items[i]["unique_id"];
    std::string answer = items[i]["answer"];
    auto boxed = ExtractLastBoxed(items[i]["solution"].get<std::string>());
    EquivalenceResult r = CompareAnswers(boxed ? *boxed : "", answer);
    if (r.verdict != Equivalence::kEqual) {
      m.misses["equal " + id] =
          "boxed " + boxed.value_or("<none>") + " vs answer " + answer + ": " + r.reason;
    }
    // The next item with a different answer text.
    for (std::size_t k = 1; k < items.size(); ++k) {
      const auto& other = items[(i + k) % items.size()];
      std::string other_answer = other["answer"];
      if (Squash(other_answer) == Squash(answer)) continue;
      if (MathEquivalent(other_answer, answer)) {
        m.misses["different " + id] = other_answer + " judged equal to " + answer + " (" +
                                      other["unique_id"].get<std::string>() + ")";
      }
      break;
    }
  }
  return m;
}

TEST(Math500, BoxedAnswersAndMissList) {
  Math500 m = Evaluate();
  if (m.items.empty()) COHORT_SKIP_OR_FAIL("no " << kData << "/math500/test.jsonl");
  ASSERT_EQ(m.items.size(), 500u);
  int equal_misses = 0;
  int different_misses = 0;
  for (const auto& [key, detail] : m.misses) {
    (key.rfind("equal ", 0) == 0 ? equal_misses : different_misses)++;
  }
  EXPECT_GE(500 - equal_misses, 495) << "fewer than 99% of boxed answers match";
  EXPECT_GE(500 - different_misses, 495) << "fewer than 99% told apart";

  // The misses are exactly those listed (with their reason) in the fixture.
  std::ifstream in(std::string(COHORT_SOURCE_DIR) +
                   "/reward_server/verifiers/testdata/math500_misses.txt");
  ASSERT_TRUE(in) << "missing testdata/math500_misses.txt";
  std::set<std::string> listed;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string kind, id;
    ss >> kind >> id;
    listed.insert(kind + " " + id);
  }
  for (const auto& [key, detail] : m.misses) {
    EXPECT_TRUE(listed.count(key))
        << "new miss (a regression, or list it with its reason): " << key << ": " << detail;
  }
  for (const std::string& key : listed) {
    EXPECT_TRUE(m.misses.count(key))
        << "listed miss now passes (an improvement: remove it): " << key;
  }
}

TEST(Math500, EquivalentRewritingsAreEqual) {
  auto items = ReadJsonl(kData + "/math500/test.jsonl");
  if (items.empty()) COHORT_SKIP_OR_FAIL("no " << kData << "/math500/test.jsonl");
  // Every plain fraction answer equals its decimal value.
  int fractions = 0;
  for (const auto& item : items) {
    std::string a = item["answer"];
    int num = 0, den = 0;
    char tail = 0;
    bool neg = a.rfind("-", 0) == 0;
    std::string body = neg ? a.substr(1) : a;
    if (std::sscanf(body.c_str(), "\\frac{%d}{%d}%c", &num, &den, &tail) == 2 ||
        std::sscanf(body.c_str(), "\\dfrac{%d}{%d}%c", &num, &den, &tail) == 2) {
      ++fractions;
      char decimal[64];
      std::snprintf(decimal, sizeof decimal, "%s%.12f", neg ? "-" : "",
                    static_cast<double>(num) / den);
      EXPECT_TRUE(MathEquivalent(decimal, a)) << decimal << " vs " << a;
      std::snprintf(decimal, sizeof decimal, "%s%.3f", neg ? "-" : "",
                    static_cast<double>(num) / den);
      if (den % 2 != 0 && den % 5 != 0) {
        EXPECT_FALSE(MathEquivalent(decimal, a)) << "rounded " << decimal << " vs " << a;
      }
    }
  }
  EXPECT_GE(fractions, 40);

  // Reordered lists and sets, factored polynomials, expanded products.
  const std::vector<std::pair<std::string, std::string>> rewritings = {
      {"3, 5, 7", "7, 3, 5"},
      {"1,-2", "-2, 1"},
      {"-2,1", "1, -2"},
      {"\\{1\\pm\\sqrt{5},-2\\}", "\\{-2, 1-\\sqrt{5}, 1+\\sqrt{5}\\}"},
      {"1 \\pm \\sqrt{19}", "1-\\sqrt{19}, 1+\\sqrt{19}"},
      {"6r^2-4r-24", "2(3r^2-2r-12)"},
      {"x^5 - x^4 + x^3 - x^2 + x - 1", "(x-1)(x^4+x^2+1)"},
      {"x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1", "(x^2+x+1)(x^6+x^3+1)"},
      {"(a+5)(b+2)", "ab + 2a + 5b + 10"},
      {"-13x+3", "3 - 13x"},
      {"15x - 80", "5(3x - 16)"},
      {"2k+2", "2(k+1)"},
      {"8n^2 + 4n + 1", "n(8n+4)+1"},
      {"\\frac{11+9a}{20}", "0.55 + 0.45a"},
      {"(0,9) \\cup (9,36)", "(9,36) \\cup (0,9)"},
      {"\\frac{3}{56}", "3/56"},
  };
  std::set<std::string> answers;
  for (const auto& item : items) answers.insert(item["answer"].get<std::string>());
  for (const auto& [answer, rewriting] : rewritings) {
    ASSERT_TRUE(answers.count(answer)) << "MATH-500 has no answer " << answer;
    EXPECT_TRUE(MathEquivalent(rewriting, answer)) << rewriting << " vs " << answer;
  }
}

}  // namespace
}  // namespace cohort::reward
