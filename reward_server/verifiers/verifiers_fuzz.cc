// libFuzzer target: answer extraction, LaTeX normalization, expression
// parsing and answer equivalence (relations, labels, lists, times, matrix
// arithmetic, degrees, the per-task options) on arbitrary bytes. The input
// is split at the first NUL (or tab) into a completion/prediction and a
// reference; the seed corpus (fuzz_corpus/) has one file per answer form.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "reward_server/verifiers/countdown.h"
#include "reward_server/verifiers/expr.h"
#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/language.h"
#include "reward_server/verifiers/latex_normalize.h"
#include "reward_server/verifiers/math_equiv.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t cut = in.find_first_of(std::string_view("\0\t", 2));
  std::string_view a = cut == std::string_view::npos ? in : in.substr(0, cut);
  std::string_view b = cut == std::string_view::npos ? in : in.substr(cut + 1);

  using namespace cohort::reward;
  auto answer = ExtractAnswer(a);
  std::string normalized = NormalizeLatex(b);
  if (auto e = expr::Expression::Parse(normalized)) {
    std::vector<expr::Complex> values(e->variables().size(), {0.7, 0.0});
    (void)e->Evaluate(values);
  }
  (void)CompareAnswers(answer ? *answer : std::string(a), b);
  (void)CompareAnswers(b, a);
  MathOptions options;
  options.decimal_comma = size % 2 == 1;
  options.ordered_lists = size % 3 == 1;
  options.relative_tolerance = 1e-4;
  (void)CompareAnswers(a, b, options);
  (void)CountWords(a);
  std::vector<std::int64_t> used;
  std::string why;
  (void)EvaluateCountdown(b, &used, &why);
  return 0;
}
