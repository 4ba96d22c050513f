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
         name == "texttt" || name == "hbox" || name == "emph" || name == "mathcal" ||
         name == "mathbb" || name == "mathscr" || name == "mathfrak" || name == "mathtt" ||
         name == "mathnormal" || name == "textup" || name == "textsc" || name == "bm" ||
         name == "pmb" || name == "textnormal";
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

constexpr std::string_view kDegree = "\xC2\xB0";  // what every degree sign becomes

// Number of digits at s[i] (stops at a non-digit).
std::size_t DigitsAt(std::string_view s, std::size_t i) {
  std::size_t j = i;
  while (j < s.size() && IsDigit(s[j])) ++j;
  return j - i;
}

// A digit group of 2 or 3 digits at s[i] (after optional spaces) that ends
// the number or is followed by another separator: the digits after a
// thousands (or Indian lakh) separator.
bool GroupFollows(std::string_view s, std::size_t i) {
  while (i < s.size() && s[i] == ' ') ++i;
  std::size_t n = DigitsAt(s, i);
  return n == 2 || n == 3;
}

// The last non-space character written, or 0.
char LastNonSpace(const std::string& out) {
  for (std::size_t k = out.size(); k-- > 0;) {
    if (out[k] != ' ') return out[k];
  }
  return 0;
}

// A unit glued to a number before a superscript ("5m²", "1,000.99cm³"):
// erases it from *out and returns true.
bool EraseGluedUnit(std::string* out) {
  static constexpr std::string_view kUnits[] = {"m", "cm", "mm", "km", "dm", "ft", "in"};
  std::size_t j = out->size();
  while (j > 0 && IsAlpha((*out)[j - 1])) --j;
  std::string_view word = std::string_view(*out).substr(j);
  bool unit = false;
  for (std::string_view u : kUnits) unit |= u == word;
  if (!unit || j == 0 || !IsDigit((*out)[j - 1])) return false;
  out->resize(j);
  return true;
}

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
        out->append(kDegree);
        i += n;
        continue;
      }
    }
    if (c == '\xC2' && i + 1 < s.size() && (s[i + 1] == '\xB2' || s[i + 1] == '\xB3')) {
      // ² ³: a power, unless after a unit glued to a number (5m²).
      if (!EraseGluedUnit(out)) out->append(s[i + 1] == '\xB2' ? "^2" : "^3");
      i += 2;
      continue;
    }
    if (c == '\xC2' && i + 1 < s.size() &&
        (s[i + 1] == '\xA3' || s[i + 1] == '\xA5' || s[i + 1] == '\xA2')) {  // £ ¥ ¢
      i += 2;
      continue;
    }
    if (c == '{' && s.compare(i, 3, "{,}") == 0) {
      // 1{,}000: a LaTeX thousands separator between digits.
      if (!out->empty() && IsDigit(out->back()) && GroupFollows(s, i + 3)) {
        i += 3;
        continue;
      }
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
      if (u == "\xE2\x82\xAC" || u == "\xE2\x82\xB9") {  // € ₹
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
            // 10,\!080 and 1,\!00,\!000: the comma separates digit groups.
            if (out->size() >= 2 && IsDigit((*out)[out->size() - 2]) && GroupFollows(s, i)) {
              out->pop_back();
            }
          }
          break;
        case ',':
          // A thin space between digit groups (1\,000, 1\,00\,000) separates
          // thousands.
          if (!out->empty() && IsDigit(out->back()) && GroupFollows(s, i) && i < s.size() &&
              IsDigit(s[i])) {
            break;
          }
          out->push_back(' ');
          break;
        case ' ':
          // "1 \ 2 \ 3": a spaced list of numbers (but 1\ 000 is one number).
          if (char last = LastNonSpace(*out); IsDigit(last) || last == ')') {
            std::size_t k = i;
            while (k < s.size() && s[k] == ' ') ++k;
            bool next_number = k < s.size() && (IsDigit(s[k]) || s[k] == '-' || s[k] == '(');
            bool thousands = IsDigit(out->back()) && k == i && DigitsAt(s, k) == 3;
            if (next_number && !thousands) {
              out->append(" ; ");
              break;
            }
            if (thousands) break;
          }
          out->push_back(' ');
          break;
        case ';':
        case ':':
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
    if (name == "circ" || name == "degree") {
      out->append(kDegree);
      i = j;
      continue;
    }
    if (name == "displaystyle" || name == "textstyle" || name == "limits" || name == "nolimits" ||
        name == "euro" || name == "pounds" || name == "yen") {
      i = j;
      continue;
    }
    if (name == "langle" || name == "rangle") {
      out->push_back(name == "langle" ? '(' : ')');
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
