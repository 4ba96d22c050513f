#include "core/tokenizer/utf8.h"

#include <utf8proc.h>

#include <cctype>
#include <cstring>

namespace cohort::tok {

// Length of the well-formed UTF-8 sequence at s[i], or 0 if it is not
// well-formed; `*valid_prefix` gets how many of its bytes are a valid prefix
// (the "maximal subpart" replaced by one U+FFFD, as Rust's from_utf8_lossy).
size_t Utf8SeqLen(const unsigned char* s, size_t n, size_t i, size_t* valid_prefix) {
  unsigned char b = s[i];
  *valid_prefix = 1;
  if (b < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= n) return 0;
    unsigned char c = s[i + k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) return 0;
    *valid_prefix = k + 1;
  }
  return len;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // Fast path over ASCII, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t prefix;
    size_t len = Utf8SeqLen(p, n, i, &prefix);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// Replaces each maximal invalid subpart with U+FFFD.
std::string LossyUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  std::string out;
  out.reserve(n);
  while (i < n) {
    size_t prefix;
    size_t len = Utf8SeqLen(p, n, i, &prefix);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      i += prefix;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

std::string ReplaceInvalidBytes(std::string_view s, char replacement) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    size_t prefix = 0;
    size_t len = Utf8SeqLen(p, s.size(), i, &prefix);
    if (len == 0) {
      out.push_back(replacement);
      ++i;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

// Approximates Rust's char::is_alphanumeric (letters and numbers).
bool IsWordChar(char32_t c) {
  if (c == '_') return true;
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) != 0;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  cp_to_byte.fill(-1);
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
    byte_to_cp[b] = cp;
    cp_to_byte[cp] = static_cast<int16_t>(b);
  }
}

bool ByteLevelAlphabet::ToBytes(std::string_view token, std::string* out) const {
  out->clear();
  for (size_t i = 0; i < token.size();) {
    char32_t cp;
    i += DecodeCp(token, i, &cp);
    if (cp >= cp_to_byte.size() || cp_to_byte[cp] < 0) return false;
    out->push_back(static_cast<char>(cp_to_byte[cp]));
  }
  return true;
}

std::string ByteLevelAlphabet::FromBytes(std::string_view bytes) const {
  std::string out;
  for (char c : bytes) AppendCp(&out, byte_to_cp[static_cast<unsigned char>(c)]);
  return out;
}

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

}  // namespace cohort::tok
