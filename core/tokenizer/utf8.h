// UTF-8 and code-point helpers of the tokenizer (internal to core/tokenizer/).
//
// Byte strings are std::string_view; "valid" means well-formed UTF-8 as
// Rust's str (no surrogates, no overlongs, at most U+10FFFF). The small
// per-character helpers are inline: the encoder calls them per byte.
//
// Thread-safety: pure functions; Alphabet() is a constant built on first
// use (thread-safe static initialisation).
#ifndef COHORT_CORE_TOKENIZER_UTF8_H_
#define COHORT_CORE_TOKENIZER_UTF8_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cohort::tok {

// Length of the well-formed UTF-8 sequence at s[i], or 0 if it is not
// well-formed; `*valid_prefix` gets how many of its bytes are a valid prefix
// (the "maximal subpart" replaced by one U+FFFD, as Rust's from_utf8_lossy).
size_t Utf8SeqLen(const unsigned char* s, size_t n, size_t i, size_t* valid_prefix);

bool IsValidUtf8(std::string_view s);

// Replaces each maximal invalid subpart with U+FFFD.
std::string LossyUtf8(std::string_view s);

// Replaces every byte that is not part of a well-formed sequence by
// `replacement` (one per byte, so lengths and offsets are kept): for text
// that must be valid UTF-8 on the wire, such as proto3 strings.
std::string ReplaceInvalidBytes(std::string_view s, char replacement);

// Decodes the (valid) code point at s[i]; returns its length.
inline size_t DecodeCp(std::string_view s, size_t i, char32_t* cp) {
  auto b = static_cast<unsigned char>(s[i]);
  auto c = [&](size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
  };
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  if (b < 0xE0) {
    *cp = (static_cast<char32_t>(b & 0x1F) << 6) | c(1);
    return 2;
  }
  if (b < 0xF0) {
    *cp = (static_cast<char32_t>(b & 0x0F) << 12) | (c(1) << 6) | c(2);
    return 3;
  }
  *cp = (static_cast<char32_t>(b & 0x07) << 18) | (c(1) << 12) | (c(2) << 6) | c(3);
  return 4;
}

inline void AppendCp(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Rust's char::is_whitespace (the Unicode White_Space property).
inline bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Approximates Rust's char::is_alphanumeric (letters and numbers).
bool IsWordChar(char32_t c);

// The last code point of s (s non-empty, valid).
inline char32_t LastCp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp;
  DecodeCp(s, i, &cp);
  return cp;
}

inline bool AllAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// GPT-2's byte <-> printable character mapping used by ByteLevel.
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp;
  std::array<int16_t, 0x200> cp_to_byte;  // -1 where not a byte-level char
  ByteLevelAlphabet();
  // Maps a byte-level token back to raw bytes; false if some character is
  // not in the alphabet.
  bool ToBytes(std::string_view token, std::string* out) const;
  std::string FromBytes(std::string_view bytes) const;
};

// The one alphabet (built on first use, never destroyed).
const ByteLevelAlphabet& Alphabet();

}  // namespace cohort::tok

#endif  // COHORT_CORE_TOKENIZER_UTF8_H_
