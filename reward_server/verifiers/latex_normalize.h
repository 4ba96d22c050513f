// Text-level clean-up of a LaTeX (or plain) answer before it is parsed.
//
// Thread-safe (pure functions).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_LATEX_NORMALIZE_H_
#define COHORT_REWARD_SERVER_VERIFIERS_LATEX_NORMALIZE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace cohort::reward {

// Answers longer than this are not parsed (a reference that long is INVALID,
// a prediction that long is wrong).
inline constexpr std::size_t kMaxAnswerBytes = 2048;

// Returns `s` with:
//   - $ and \$ removed; \left, \right, \big.. (and their "." delimiter) removed;
//   - spacing (\, \; \: \! \quad \qquad ~ "\ ") turned into one space ("\!"
//     into nothing, and ",\! " into ",", so 10,\!080 reads 10,080);
//   - \dfrac, \tfrac, \cfrac spelt \frac; \displaystyle dropped;
//   - degrees (^\circ, ^{\circ}, \circ, \degree, the ° sign) dropped;
//   - \text{..}, \textbf{..}, \mbox{..}, \mathrm{..} (and similar) replaced
//     by their content; \% spelt %;
//   - a base subscript on a numeral dropped (52_8 reads 52);
//   - runs of white space collapsed to one space, the ends trimmed, and a
//     trailing period removed.
std::string NormalizeLatex(std::string_view s);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_LATEX_NORMALIZE_H_
