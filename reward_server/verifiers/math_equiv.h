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

// Choices on which public verifiers differ, made per task
// (reward.tasks.<name>: decimal_comma, relative_tolerance, ordered_lists).
struct MathOptions {
  // "1,5" is the decimal 1.5 (one comma between digits); by default it is
  // the list 1, 5. Two or more commas are thousands separators either way.
  bool decimal_comma = false;
  // Replaces kRelativeTolerance for inexact (non-integer) comparisons.
  double relative_tolerance = kRelativeTolerance;
  // Bare lists ("3, 5, 7") compared in order; by default as multisets.
  bool ordered_lists = false;
};

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
EquivalenceResult CompareAnswers(std::string_view predicted, std::string_view reference,
                                 const MathOptions& options = {});

// True when CompareAnswers says kEqual.
bool MathEquivalent(std::string_view predicted, std::string_view reference,
                    const MathOptions& options = {});

// Whether `reference` can be parsed as an answer; sets *why when not.
bool ReferenceParses(std::string_view reference, std::string* why = nullptr,
                     const MathOptions& options = {});

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_MATH_EQUIV_H_
