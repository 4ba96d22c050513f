// Equivalence of a predicted final answer with a reference answer, both of
// which may be LaTeX. See docs/rewards.md for the rules.
//
// Thread-safe (pure functions). Inputs are untrusted: answers longer than
// kMaxAnswerBytes are not parsed, parsing is depth- and size-bounded, and
// evaluation is constant work per node.
#ifndef COHORT_REWARD_SERVER_VERIFIERS_MATH_EQUIV_H_
#define COHORT_REWARD_SERVER_VERIFIERS_MATH_EQUIV_H_

#include <string>
#include <string_view>

namespace cohort::reward {

// Two numbers a, b are equal when |a - b| <= kAbsoluteTolerance +
// kRelativeTolerance * max(|a|, |b|) (complex magnitudes). Integers written
// as integer literals on both sides are compared exactly.
inline constexpr double kRelativeTolerance = 1e-6;
inline constexpr double kAbsoluteTolerance = 1e-9;

enum class Equivalence {
  kEqual,
  kDifferent,
  // The reference itself cannot be parsed (empty, unbalanced brackets, too
  // long or too deeply nested): the sample cannot be scored.
  kInvalidReference,
};

struct EquivalenceResult {
  Equivalence verdict = Equivalence::kDifferent;
  std::string reason;  // why it is different or invalid; empty when equal
};

// Compares a predicted answer (already extracted from the completion) with
// the reference answer.
EquivalenceResult CompareAnswers(std::string_view predicted, std::string_view reference);

// True when CompareAnswers says kEqual.
bool MathEquivalent(std::string_view predicted, std::string_view reference);

// Whether `reference` can be parsed as an answer; sets *why when not.
bool ReferenceParses(std::string_view reference, std::string* why = nullptr);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_MATH_EQUIV_H_
