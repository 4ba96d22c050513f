// Language consistency (DeepSeek-R1): the proportion of the chain of
// thought's words written in the target language.
//
// Thread-safe (pure functions).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_LANGUAGE_H_
#define COHORT_REWARD_SERVER_VERIFIERS_LANGUAGE_H_

#include <string_view>

#include "reward_server/sample.h"

namespace cohort::reward {

struct WordCounts {
  int total = 0;   // all words
  int latin = 0;   // words of Latin letters ("en")
  int han = 0;     // Han characters ("zh"), one word each
  int kana = 0;    // Hiragana/Katakana characters, one word each
  int hangul = 0;  // Hangul syllables/jamo, one word each
};

// Counts the words of `text` (UTF-8; invalid bytes are skipped). A word is a
// maximal run of letters (Unicode category L*, with combining marks) of one
// script, or a single CJK character. Words right after a backslash (LaTeX
// commands) and digits are not counted.
WordCounts CountWords(std::string_view text);

// The proportion of the chain of thought's words (inside <think>..</think>
// when present, else the whole completion) in language `lang`: "en" (Latin
// script) or "zh" (Han characters). No words: OK with 0. Another language
// code: INVALID.
ComponentResult LanguageConsistency(const Sample& sample, std::string_view lang);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_LANGUAGE_H_
