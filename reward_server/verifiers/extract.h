// Final-answer extraction from a model's completion.
//
// Thread-safe (pure functions). Input is untrusted: every scan is linear in
// the input and only the last kMaxCompletionBytes of a completion are read.
#ifndef COHORT_REWARD_SERVER_VERIFIERS_EXTRACT_H_
#define COHORT_REWARD_SERVER_VERIFIERS_EXTRACT_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cohort::reward {

// Completions longer than this are scanned from their last kMaxCompletionBytes
// bytes only (the final answer sits at the end).
inline constexpr std::size_t kMaxCompletionBytes = 1 << 20;

// The final answer of `completion`, trying in order:
//   1. the content of the last complete <answer>...</answer> (itself reduced
//      to its \boxed{} / #### answer when it contains one);
//   2. the last well-formed \boxed{...} or \fbox{...} (nested braces), also
//      `\boxed 5`;
//   3. GSM8K's `#### N` (the rest of that line);
//   4. "the answer is ..." / "final answer: ..." (case-insensitive, the last
//      one; up to the end of the line or sentence).
// Returns nullopt when none applies or the answer is empty. The result is
// trimmed, with surrounding $...$ and a trailing period removed.
std::optional<std::string> ExtractAnswer(std::string_view completion);

// The content of the last well-formed \boxed{...}/\fbox{...} in `text`.
std::optional<std::string> ExtractLastBoxed(std::string_view text);

// The content of the last complete <answer>...</answer> in `text`, verbatim.
std::optional<std::string> ExtractAnswerTag(std::string_view text);

// The chain of thought: the text inside <think>...</think> when the
// completion has a </think> (from the start when the opening tag was part of
// the prompt), else the whole completion.
std::string_view ChainOfThought(std::string_view completion);

// Trims ASCII whitespace from both ends.
std::string_view TrimAscii(std::string_view s);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_EXTRACT_H_
