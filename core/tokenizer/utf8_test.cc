// Tests of the tokenizer's UTF-8 helpers (core/tokenizer/utf8.h).
#include "core/tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace cohort::tok {
namespace {

TEST(Utf8Test, ValidAndInvalidSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));                  // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));              // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));          // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));      // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("a\xFF"));                 // never valid
  EXPECT_FALSE(IsValidUtf8(std::string("\x80", 1)));  // lone continuation
}

TEST(Utf8Test, LossyReplacesEachMaximalSubpart) {
  // As Rust's String::from_utf8_lossy: one U+FFFD per maximal invalid
  // subpart.
  EXPECT_EQ(LossyUtf8("ok"), "ok");
  EXPECT_EQ(LossyUtf8("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");        // truncated 4-byte: one
  EXPECT_EQ(LossyUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // two bytes, two
  EXPECT_EQ(LossyUtf8("x\xFFy"), "x\xEF\xBF\xBDy");
  EXPECT_TRUE(IsValidUtf8(LossyUtf8("\xED\xA0\x80\xE2\x82")));
}

TEST(Utf8Test, ReplaceInvalidBytesKeepsLength) {
  EXPECT_EQ(ReplaceInvalidBytes("ok \xE4\xB8\xAD", '?'), "ok \xE4\xB8\xAD");
  EXPECT_EQ(ReplaceInvalidBytes(std::string("cut \xE4\xB8") + ", \xFF, \xED\xA0\x80", '?'),
            "cut ??, ?, ???");
}

TEST(Utf8Test, DecodeAndAppendRoundTrip) {
  for (char32_t cp : {U'a', U'\u00E9', U'\u20AC', U'\U0001F600', U'\U0010FFFF'}) {
    std::string s;
    AppendCp(&s, cp);
    char32_t back = 0;
    EXPECT_EQ(DecodeCp(s, 0, &back), s.size());
    EXPECT_EQ(back, cp);
    EXPECT_EQ(LastCp("x" + s), cp);
  }
}

TEST(Utf8Test, CharacterClasses) {
  EXPECT_TRUE(IsWhitespace(U' '));
  EXPECT_TRUE(IsWhitespace(U'\u3000'));
  EXPECT_FALSE(IsWhitespace(U'a'));
  EXPECT_TRUE(IsWordChar(U'_'));
  EXPECT_TRUE(IsWordChar(U'\u00E9'));  // letter
  EXPECT_TRUE(IsWordChar(U'\u0663'));  // Arabic-Indic digit
  EXPECT_FALSE(IsWordChar(U'-'));
  EXPECT_TRUE(AllAscii("abc"));
  EXPECT_FALSE(AllAscii("ab\xC3\xA9"));
}

TEST(Utf8Test, ByteLevelAlphabetCoversEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string printable = Alphabet().FromBytes(all);
  EXPECT_TRUE(IsValidUtf8(printable));
  std::string back;
  ASSERT_TRUE(Alphabet().ToBytes(printable, &back));
  EXPECT_EQ(back, all);
  EXPECT_EQ(Alphabet().FromBytes(" "), "\xC4\xA0");         // GPT-2's "Ġ"
  EXPECT_FALSE(Alphabet().ToBytes("\xE2\x82\xAC", &back));  // not in the alphabet
}

}  // namespace
}  // namespace cohort::tok
