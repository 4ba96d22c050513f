#include "reward_server/verifiers/latex_normalize.h"

namespace cohort::reward {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsTextCommand(std::string_view name) {
  return name == "text" || name == "textbf" || name == "textit" || name == "textrm" ||
         name == "textnormal" || name == "mbox" || name == "mathrm" || name == "mathbf" ||
         name == "mathit" || name == "boldsymbol" || name == "textsf" || name == "mathsf" ||
         name == "texttt" || name == "hbox" || name == "emph";
}

bool IsSizingCommand(std::string_view name) {
  return name == "left" || name == "right" || name == "big" || name == "Big" || name == "bigg" ||
         name == "Bigg" || name == "bigl" || name == "bigr" || name == "Bigl" || name == "Bigr" ||
         name == "biggl" || name == "biggr" || name == "Biggl" || name == "Biggr" ||
         name == "middle";
}

// Index just past the brace group opening at s[open] == '{', or npos.
std::size_t MatchBrace(std::string_view s, std::size_t open) {
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

void Scan(std::string_view s, std::string* out, int depth);

// Handles "^\circ" / "^{\circ}" at s[i] == '^'; returns the length consumed or 0.
std::size_t DegreeAt(std::string_view s, std::size_t i) {
  std::size_t j = i + 1;
  while (j < s.size() && s[j] == ' ') ++j;
  bool brace = j < s.size() && s[j] == '{';
  if (brace) ++j;
  while (j < s.size() && s[j] == ' ') ++j;
  if (s.substr(j, 5) != "\\circ") return 0;
  j += 5;
  if (brace) {
    while (j < s.size() && s[j] == ' ') ++j;
    if (j >= s.size() || s[j] != '}') return 0;
    ++j;
  }
  return j - i;
}

void Scan(std::string_view s, std::string* out, int depth) {
  for (std::size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '$') {
      ++i;
      continue;
    }
    if (c == '~') {
      out->push_back(' ');
      ++i;
      continue;
    }
    if (c == '^') {
      if (std::size_t n = DegreeAt(s, i)) {
        i += n;
        continue;
      }
    }
    if (c == '\xC2' && i + 1 < s.size() && s[i + 1] == '\xB0') {  // °
      i += 2;
      continue;
    }
    if (c == '\xC2' && i + 1 < s.size() && s[i + 1] == '\xA0') {  // no-break space
      out->push_back(' ');
      i += 2;
      continue;
    }
    if (c == '\xC2' && i + 1 < s.size() && s[i + 1] == '\xB7') {  // ·
      out->push_back('*');
      i += 2;
      continue;
    }
    if (c == '\xE2' && i + 2 < s.size()) {
      std::string_view u = s.substr(i, 3);
      if (u == "\xE2\x88\x92" || u == "\xE2\x80\x93") {  // − –
        out->push_back('-');
        i += 3;
        continue;
      }
      if (u == "\xE2\x8B\x85") {  // ⋅
        out->push_back('*');
        i += 3;
        continue;
      }
    }
    if (c == '_' && !out->empty() && IsDigit(out->back())) {
      // A base subscript on a numeral: 52_8, 4210_{5}.
      std::size_t j = i + 1;
      bool brace = j < s.size() && s[j] == '{';
      if (brace) ++j;
      std::size_t digits = j;
      while (j < s.size() && (IsDigit(s[j]) || s[j] == ' ')) ++j;
      if (j > digits && (!brace || (j < s.size() && s[j] == '}'))) {
        i = brace ? j + 1 : j;
        continue;
      }
    }
    if (c != '\\' || i + 1 >= s.size()) {
      out->push_back(c);
      ++i;
      continue;
    }
    char d = s[i + 1];
    if (!IsAlpha(d)) {
      i += 2;
      switch (d) {
        case '\\':
          out->append("\\\\");
          break;
        case '!':
          if (!out->empty() && out->back() == ',') {
            while (i < s.size() && s[i] == ' ') ++i;
          }
          break;
        case ',':
          // A thin space between digit groups is a thousands separator.
          if (!out->empty() && IsDigit(out->back()) && i + 3 <= s.size() && IsDigit(s[i]) &&
              IsDigit(s[i + 1]) && IsDigit(s[i + 2]) && (i + 3 == s.size() || !IsDigit(s[i + 3]))) {
            break;
          }
          out->push_back(' ');
          break;
        case ';':
        case ':':
        case ' ':
        case '>':
          out->push_back(' ');
          break;
        case '%':
          out->push_back('%');
          break;
        case '$':
          break;
        default:
          out->push_back('\\');
          out->push_back(d);
      }
      continue;
    }
    std::size_t j = i + 1;
    while (j < s.size() && IsAlpha(s[j])) ++j;
    std::string_view name = s.substr(i + 1, j - i - 1);
    if (IsSizingCommand(name)) {
      i = j;
      if (i < s.size() && s[i] == '.') ++i;  // \left. \right.
      continue;
    }
    if (name == "quad" || name == "qquad") {
      out->push_back(' ');
      i = j;
      continue;
    }
    if (name == "displaystyle" || name == "textstyle" || name == "circ" || name == "degree" ||
        name == "limits" || name == "nolimits") {
      i = j;
      continue;
    }
    if (name == "dfrac" || name == "tfrac" || name == "cfrac") {
      out->append("\\frac");
      i = j;
      continue;
    }
    if (IsTextCommand(name) && depth < 8) {
      std::size_t k = j;
      while (k < s.size() && s[k] == ' ') ++k;
      if (k < s.size() && s[k] == '{') {
        std::size_t end = MatchBrace(s, k);
        if (end != std::string_view::npos) {
          out->push_back(' ');
          Scan(s.substr(k + 1, end - k - 2), out, depth + 1);
          out->push_back(' ');
          i = end;
          continue;
        }
      }
    }
    out->append(s.substr(i, j - i));
    i = j;
  }
}

}  // namespace

std::string NormalizeLatex(std::string_view s) {
  std::string scanned;
  scanned.reserve(s.size());
  Scan(s, &scanned, 0);
  // Collapse white space, trim.
  std::string out;
  out.reserve(scanned.size());
  for (char c : scanned) {
    if (IsSpace(c)) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  while (!out.empty() && (out.back() == '.' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace cohort::reward
