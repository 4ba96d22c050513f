#include "reward_server/verifiers/math_accuracy.h"

#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/math_equiv.h"

namespace cohort::reward {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

ComponentResult Score(const Sample& sample, std::string_view reference,
                      const MathOptions& options) {
  std::optional<std::string> predicted = ExtractAnswer(sample.completion);
  if (!predicted) {
    // Still reject a reference we could never score.
    std::string why;
    if (!ReferenceParses(reference, &why, options)) {
      return ComponentResult::Invalid("reference answer: " + why);
    }
    return ComponentResult::Ok(0.0, "no answer found in the completion");
  }
  EquivalenceResult r = CompareAnswers(*predicted, reference, options);
  switch (r.verdict) {
    case Equivalence::kEqual:
      return ComponentResult::Ok(1.0);
    case Equivalence::kDifferent:
      return ComponentResult::Ok(0.0, r.reason);
    case Equivalence::kInvalidReference:
      return ComponentResult::Invalid(r.reason);
  }
  return ComponentResult::Error("unreachable");
}

}  // namespace

ComponentResult MathAccuracy(const Sample& sample, const MathOptions& options) {
  std::string_view reference = sample.answer;
  // A whole solution as the reference: its last \boxed{} (MATH) or the text
  // after its last #### (GSM8K).
  std::optional<std::string> inner;
  if (reference.find("\\boxed") != std::string_view::npos ||
      reference.find("\\fbox") != std::string_view::npos) {
    inner = ExtractLastBoxed(reference);
  } else if (std::size_t h = reference.rfind("####"); h != std::string_view::npos) {
    inner = std::string(TrimAscii(reference.substr(h + 4)));
  }
  if (inner) reference = *inner;
  return Score(sample, reference, options);
}

std::optional<std::string> Gsm8kReference(std::string_view answer) {
  std::size_t hashes = answer.rfind("####");
  std::string_view s = hashes == std::string_view::npos ? answer : answer.substr(hashes + 4);
  s = TrimAscii(s);
  if (!s.empty() && s[0] == '$') s = TrimAscii(s.substr(1));
  std::string out;
  bool digit = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (IsDigit(c)) {
      digit = true;
      out.push_back(c);
    } else if (c == ',' && i > 0 && IsDigit(s[i - 1])) {
      continue;
    } else if ((c == '-' || c == '+') && i == 0) {
      out.push_back(c);
    } else if (c == '.' && i + 1 < s.size() && IsDigit(s[i + 1])) {
      out.push_back(c);
    } else {
      return std::nullopt;
    }
  }
  if (!digit) return std::nullopt;
  return out;
}

ComponentResult Gsm8kAccuracy(const Sample& sample, const MathOptions& options) {
  std::optional<std::string> reference = Gsm8kReference(sample.answer);
  if (!reference) {
    return ComponentResult::Invalid("reference answer has no number after ####");
  }
  return Score(sample, *reference, options);
}

}  // namespace cohort::reward
