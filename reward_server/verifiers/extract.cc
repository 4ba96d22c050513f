#include "reward_server/verifiers/extract.h"

#include <algorithm>

namespace cohort::reward {
namespace {

// A \boxed{} argument is searched for its closing brace over at most this
// many bytes, and at most kMaxBoxedTries boxes (from the last) are tried, so
// a completion full of unclosed "\boxed{" stays linear.
constexpr std::size_t kMaxBoxedBytes = 1 << 16;
constexpr int kMaxBoxedTries = 16;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Finds the last occurrence of `needle` in `hay` ignoring ASCII case.
// `needle` must be lower case.
std::size_t RFindNoCase(std::string_view hay, std::string_view needle) {
  if (needle.empty() || needle.size() > hay.size()) return std::string_view::npos;
  const char first = needle[0];
  for (std::size_t i = hay.size() - needle.size() + 1; i-- > 0;) {
    if (LowerAscii(hay[i]) != first) continue;
    std::size_t k = 1;
    while (k < needle.size() && LowerAscii(hay[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return i;
  }
  return std::string_view::npos;
}

// Strips $...$ (and \( \), \[ \]) around an answer and a trailing period.
std::string CleanAnswer(std::string_view s) {
  s = TrimAscii(s);
  for (int round = 0; round < 4; ++round) {
    std::string_view before = s;
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') {
      s = TrimAscii(s.substr(1, s.size() - 2));
    }
    if (s.size() >= 4 && (s.substr(0, 2) == "\\(" || s.substr(0, 2) == "\\[") &&
        (s.substr(s.size() - 2) == "\\)" || s.substr(s.size() - 2) == "\\]")) {
      s = TrimAscii(s.substr(2, s.size() - 4));
    }
    while (!s.empty() && (s.back() == '.' || s.back() == ',' || s.back() == ';')) {
      // Keep "5." only when it is clearly a sentence end; a lone trailing
      // period is always punctuation here.
      s.remove_suffix(1);
      s = TrimAscii(s);
    }
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') continue;
    if (s == before) break;
  }
  return std::string(s);
}

// Given text starting right after "\boxed" / "\fbox", returns the argument:
// a brace group with nested (unescaped) braces, or `\boxed 5` style token.
std::optional<std::string_view> BoxArgument(std::string_view rest) {
  std::size_t i = 0;
  while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t')) ++i;
  if (i < rest.size() && rest[i] == '{') {
    int depth = 0;
    std::size_t limit = std::min(rest.size(), i + kMaxBoxedBytes);
    for (std::size_t j = i; j < limit; ++j) {
      char c = rest[j];
      if (c == '\\' && j + 1 < rest.size()) {
        ++j;  // skip escaped character, e.g. \{ or \}
        continue;
      }
      if (c == '{') {
        ++depth;
      } else if (c == '}') {
        if (--depth == 0) return rest.substr(i + 1, j - i - 1);
      }
    }
    return std::nullopt;  // unbalanced (truncated completion)
  }
  if (i == 0) return std::nullopt;  // "\boxedx": some other command
  std::size_t j = i;
  while (j < rest.size() && !IsSpace(rest[j]) && rest[j] != '$') ++j;
  if (j == i) return std::nullopt;
  return rest.substr(i, j - i);
}

}  // namespace

std::string_view TrimAscii(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<std::string> ExtractLastBoxed(std::string_view text) {
  std::size_t end = text.size();
  for (int tries = 0; end > 0 && tries < kMaxBoxedTries; ++tries) {
    std::size_t b = text.rfind("\\boxed", end - 1);
    std::size_t f = text.rfind("\\fbox", end - 1);
    std::size_t pos;
    std::size_t len;
    if (b == std::string_view::npos && f == std::string_view::npos) break;
    if (f == std::string_view::npos || (b != std::string_view::npos && b > f)) {
      pos = b;
      len = 6;
    } else {
      pos = f;
      len = 5;
    }
    if (auto arg = BoxArgument(text.substr(pos + len))) {
      std::string cleaned = CleanAnswer(*arg);
      if (!cleaned.empty()) return cleaned;
    }
    if (pos == 0) break;
    end = pos;
  }
  return std::nullopt;
}

std::optional<std::string> ExtractAnswerTag(std::string_view text) {
  std::size_t close = text.rfind("</answer>");
  if (close == std::string_view::npos) return std::nullopt;
  std::size_t open = text.rfind("<answer>", close);
  if (open == std::string_view::npos) return std::nullopt;
  return std::string(text.substr(open + 8, close - open - 8));
}

std::string_view ChainOfThought(std::string_view completion) {
  std::size_t close = completion.find("</think>");
  if (close == std::string_view::npos) return completion;
  std::size_t open = completion.rfind("<think>", close);
  std::size_t start = open == std::string_view::npos ? 0 : open + 7;
  return completion.substr(start, close - start);
}

namespace {

std::optional<std::string> ExtractWithoutTag(std::string_view text) {
  if (auto boxed = ExtractLastBoxed(text)) return boxed;

  std::size_t hashes = text.rfind("####");
  if (hashes != std::string_view::npos) {
    std::string_view rest = text.substr(hashes + 4);
    std::size_t nl = rest.find('\n');
    if (nl != std::string_view::npos) rest = rest.substr(0, nl);
    std::string cleaned = CleanAnswer(rest);
    if (!cleaned.empty()) return cleaned;
  }

  // Markdown emphasis ("**Final Answer:** 42") is skipped after the phrase.
  static constexpr std::string_view kPhrases[] = {"answer is", "final answer", "answer:"};
  std::size_t best = std::string_view::npos;
  std::size_t best_len = 0;
  for (std::string_view phrase : kPhrases) {
    std::size_t p = RFindNoCase(text, phrase);
    if (p != std::string_view::npos && (best == std::string_view::npos || p > best)) {
      best = p;
      best_len = phrase.size();
    }
  }
  if (best != std::string_view::npos) {
    std::string_view rest = text.substr(best + best_len);
    std::size_t nl = rest.find('\n');
    if (nl != std::string_view::npos) rest = rest.substr(0, nl);
    rest = TrimAscii(rest);
    for (;;) {
      if (!rest.empty() && (rest.front() == ':' || rest.front() == '*')) {
        rest.remove_prefix(1);
      } else if (rest.substr(0, 3) == "is " || rest.substr(0, 3) == "is:") {
        rest.remove_prefix(2);
      } else {
        break;
      }
      rest = TrimAscii(rest);
    }
    // Cut at the end of the sentence: a period followed by a space (a period
    // between digits is a decimal point).
    for (std::size_t i = 0; i + 1 < rest.size(); ++i) {
      if (rest[i] == '.' && IsSpace(rest[i + 1])) {
        rest = rest.substr(0, i);
        break;
      }
    }
    while (!rest.empty() && rest.back() == '*') rest.remove_suffix(1);
    std::string cleaned = CleanAnswer(rest);
    if (!cleaned.empty()) return cleaned;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ExtractAnswer(std::string_view completion) {
  if (completion.size() > kMaxCompletionBytes) {
    completion = completion.substr(completion.size() - kMaxCompletionBytes);
  }
  if (auto tag = ExtractAnswerTag(completion)) {
    std::string_view content = TrimAscii(*tag);
    if (content.find("\\boxed") != std::string_view::npos ||
        content.find("\\fbox") != std::string_view::npos ||
        content.find("####") != std::string_view::npos) {
      if (auto inner = ExtractWithoutTag(content)) return inner;
    }
    std::string cleaned = CleanAnswer(content);
    if (!cleaned.empty()) return cleaned;
  }
  return ExtractWithoutTag(completion);
}

}  // namespace cohort::reward
