// Test fixtures shared by the tokenizer tests: small hand-made
// tokenizer.json files with the ids and decoded text Hugging Face's
// tokenizer gives on them, and HandMadeTest, which writes them to a temp
// directory and checks cohort's tokenizer against those cases.
#ifndef COHORT_CORE_TOKENIZER_HF_CASES_TEST_UTIL_H_
#define COHORT_CORE_TOKENIZER_HF_CASES_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::tok_testing {

using Json = nlohmann::json;

inline std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------
// Small hand-made tokenizers, written to files by the tests. The expected ids
// and decoded text come from Hugging Face's tokenizer on the same files.

struct HfCase {
  std::string text;
  std::vector<int32_t> ids;           // add_special_tokens=false
  std::vector<int32_t> with_special;  // add_special_tokens=true (empty: not checked)
  std::string decoded;
  std::string decoded_skip_special;
};

// --- generated from Hugging Face tokenizers (npm @anush008/tokenizers 0.6.0) ---
inline constexpr const char* kByteLevelMerges = R"(h e
l l
Ġ w
Ġ t
Ġt he
Ġ he
ll o
Ġw o
Ġwo r
Ġwor l
Ġworl d
Ġhe llo
Ġ s
Ġ n
Ã ¯
Ã ©
v e
u m
r e
ľ n
ľn Ã¯
ľnÃ¯ c
ľnÃ¯c Ã
ľnÃ¯cÃ ¶
ľnÃ¯cÃ¶ d
ľnÃ¯cÃ¶d Ã©
Ġw e
Ġthe y
Ġs e
Ġse e
Ġs a
Ġsa y
Ġsay s
Ġn um
Ġnum b
Ġnumb e
Ġnumbe r
Ġnumber s
Ġn a
Ġna Ã¯
ĠnaÃ¯ ve
Ġhe re
Ġ Ã
ĠÃ ľnÃ¯cÃ¶dÃ©
Ġ q
Ġq u
Ġqu i
Ġqui c
Ġquic k
Ġ o
Ġo ve
Ġove r
Ġ l
Ġl a
Ġla z
Ġlaz y
Ġ j
Ġj um
Ġjum p
Ġjump s
Ġ f
Ġf o
Ġfo x
Ġ d
Ġd o
Ġdo g
Ġ c
Ġc a
Ġca f
Ġcaf Ã©
Ġ b
Ġb r
Ġbr o
Ġbro w
Ġbrow n
Ġ a
Ġa n
Ġan d
Ġ I
ĠI t)";
inline constexpr const char* kCharBase =
    "',.012345;HITabcdefghijklmnopqrstuvwxyzÜéïö▁";  // ids 1.., after [UNK]
inline constexpr const char* kCharMerges = R"(h e
l l
▁ w
▁ t
▁t he
▁ he
ll o
▁w o
▁wo r
▁wor l
▁worl d
▁he llo
▁ s
▁ n
v e
u m
r e
▁world ,
▁w e
▁we '
▁we' ll
▁the y
▁they '
▁they' re
▁s e
▁se e
▁s a
▁sa y
▁say s
▁n um
▁num b
▁numb e
▁numbe r
▁number s
▁numbers ;
▁n a
▁na ï
▁naï ve
▁naïve .
▁hello .
▁he re
▁here .
▁ Ü
▁Ü n
▁Ün ï
▁Ünï c
▁Ünïc ö
▁Ünïcö d
▁Ünïcöd é
▁ q
▁q u
▁qu i
▁qui c
▁quic k
▁ o
▁o ve
▁ove r
▁ l
▁l a
▁la z)";
inline const std::vector<HfCase> kLlama3Cases = {
    {"Hello world! The quick brown fox.",
     {72, 101, 262, 266, 33, 32, 84, 256, 304, 330, 318, 46},
     {336, 72, 101, 262, 266, 33, 32, 84, 256, 304, 330, 318, 46},
     "Hello world! The quick brown fox.",
     "Hello world! The quick brown fox."},
    {"  leading and trailing  ",
     {32, 308, 101, 97, 100, 105, 110, 103, 333, 259, 114, 97, 105, 108, 105, 110, 103, 32, 32},
     {336, 32,  308, 101, 97,  100, 105, 110, 103, 333,
      259, 114, 97,  105, 108, 105, 110, 103, 32,  32},
     "  leading and trailing  ",
     "  leading and trailing  "},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {73, 116, 39, 115, 32, 49, 50, 51,  52,  53, 293, 59, 283, 39, 274, 32, 72,
      69, 82,  69, 46,  10, 10, 78, 101, 119, 32, 112, 97, 114, 97, 13,  10},
     {336, 73, 116, 39, 115, 32, 49, 50, 51,  52,  53, 293, 59, 283, 39, 274, 32,
      72,  69, 82,  69, 46,  10, 10, 78, 101, 119, 32, 112, 97, 114, 97, 13,  10},
     "It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     "It's 12345 numbers; they're HERE.\n\nNew para\r\n"},
    {"<|begin_of_text|>Hello<|eot_id|>the world",
     {336, 72, 101, 262, 337, 116, 256, 266},
     {336, 336, 72, 101, 262, 337, 116, 256, 266},
     "<|begin_of_text|>Hello<|eot_id|>the world",
     "Hellothe world"},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ",
     {195, 281, 325, 296, 32,  239, 189, 134, 239, 189, 149,
      239, 189, 140, 239, 189, 140, 32,  239, 172, 129},
     {336, 195, 281, 325, 296, 32,  239, 189, 134, 239, 189,
      149, 239, 189, 140, 239, 189, 140, 32,  239, 172, 129},
     "Ünïcödé café naïve ｆｕｌｌ ﬁ",
     "Ünïcödé café naïve ｆｕｌｌ ﬁ"},
    {"say hello, hellos and ohello hello",
     {115, 97, 121, 267, 44, 267, 115, 333, 305, 256, 262, 267},
     {336, 115, 97, 121, 267, 44, 267, 115, 333, 305, 256, 262, 267},
     "say hello, hellos and ohello hello",
     "say hello, hellos and ohello hello"},
    {"a [MASK] b   [MASK]   c<sep>  d",
     {97, 32, 91, 77, 65, 83, 75,  93, 326, 32,  32,  32, 91, 77,
      65, 83, 75, 93, 32, 32, 322, 60, 115, 101, 112, 62, 32, 319},
     {336, 97, 32, 91, 77, 65, 83,  75, 93,  326, 32,  32, 32, 91, 77,
      65,  83, 75, 93, 32, 32, 322, 60, 115, 101, 112, 62, 32, 319},
     "a [MASK] b   [MASK]   c<sep>  d",
     "a [MASK] b   [MASK]   c<sep>  d"},
    {"the  the   the",
     {116, 256, 32, 260, 32, 32, 260},
     {336, 116, 256, 32, 260, 32, 32, 260},
     "the  the   the",
     "the  the   the"},
    {"", {}, {336}, "", ""},
    {"zzz qqq",
     {122, 122, 122, 300, 113, 113},
     {336, 122, 122, 122, 300, 113, 113},
     "zzz qqq",
     "zzz qqq"},
    {"``quoted``",
     {96, 96, 113, 117, 111, 116, 101, 100, 96, 96},
     {336, 96, 96, 113, 117, 111, 116, 101, 100, 96, 96},
     "``quoted``",
     "``quoted``"},
    {"İstanbul ΣΑΣ",
     {196, 176, 115, 116, 97, 110, 98, 117, 108, 32, 206, 163, 206, 145, 206, 163},
     {336, 196, 176, 115, 116, 97, 110, 98, 117, 108, 32, 206, 163, 206, 145, 206, 163},
     "İstanbul ΣΑΣ",
     "İstanbul ΣΑΣ"},
};
inline const std::vector<HfCase> kGpt2Cases = {
    {"Hello world! The quick brown fox.",
     {338, 266, 33, 260, 304, 330, 318, 46},
     {},
     "hello world! the quick brown fox.",
     "hello world! the quick brown fox."},
    {"  leading and trailing  ",
     {32, 308, 101, 97, 100, 105, 110, 103, 333, 259, 114, 97, 105, 108, 105, 110, 103, 32, 32},
     {},
     "  leading and trailing  ",
     "  leading and trailing  "},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {32,  105, 116, 39, 115, 32,  49,  50,  51, 52,  53, 293, 59, 283, 39,
      274, 297, 46,  10, 10,  110, 101, 119, 32, 112, 97, 114, 97, 13,  10},
     {},
     " it's 12345 numbers; they're here.\n\nnew para\r\n",
     " it's 12345 numbers; they're here.\n\nnew para\r\n"},
    {"<|begin_of_text|>Hello<|eot_id|>the world",
     {32, 60,  124, 98, 101, 103, 105, 110, 95, 111, 102, 95,  116, 101, 120, 116, 124,
      62, 338, 32,  60, 124, 101, 111, 116, 95, 105, 100, 124, 62,  116, 256, 266},
     {},
     " <|begin_of_text|>hello <|eot_id|>the world",
     " <|begin_of_text|>hello <|eot_id|>the world"},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ",
     {298, 188, 110, 270, 99, 195, 182, 100, 271, 325, 296, 316, 117, 257, 316, 105},
     {},
     " ünïcödé café naïve full fi",
     " ünïcödé café naïve full fi"},
    {"say hello, hellos and ohello hello",
     {287, 32, 338, 32, 44, 267, 115, 333, 305, 256, 262, 32, 338},
     {},
     " say hello , hellos and ohello hello",
     " say hello , hellos and ohello hello"},
    {"a [MASK] b   [MASK]   c<sep>  d",
     {331, 337, 326, 337, 322, 339, 319},
     {},
     " a[MASK] b[MASK] c<sep> d",
     " a b c d"},
    {"the  the   the", {260, 32, 260, 32, 32, 260}, {}, " the  the   the", " the  the   the"},
    {"", {}, {}, "", ""},
    {"zzz qqq", {32, 122, 122, 122, 300, 113, 113}, {}, " zzz qqq", " zzz qqq"},
    {"``quoted``", {32, 34, 113, 117, 111, 116, 101, 100, 34}, {}, " \"quoted\"", " \"quoted\""},
    {"İstanbul ΣΑΣ",
     {32, 105, 204, 135, 115, 116, 97, 110, 98, 117, 108, 32, 207, 131, 206, 177, 207, 131},
     {},
     " i̇stanbul σασ",
     " i̇stanbul σασ"},
};
inline const std::vector<HfCase> kCharRemoved0Cases = {
    {"Hello world! The quick brown fox.",
     {11, 18, 51, 36, 28, 31, 25, 17, 0,  13, 45, 30, 34,
      22, 16, 24, 15, 31, 28, 36, 27, 19, 28, 37, 3},
     {},
     "Helloworld[UNK]Thequickbrownfox.",
     "HelloworldThequickbrownfox."},
    {"  leading and trailing  ",
     {25, 18, 14, 17, 22, 27, 20, 14, 27, 17, 33, 31, 14, 22, 25, 22, 27, 20},
     {},
     "leadingandtrailing",
     "leadingandtrailing"},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {12, 33, 1,  32, 5,  6,  7, 8, 9, 27, 60, 15, 18, 31, 32, 10,
      33, 45, 38, 1,  61, 11, 0, 3, 0, 18, 36, 29, 14, 31, 14},
     {},
     "It's12345numbers;they'reH[UNK].[UNK]ewpara",
     "It's12345numbers;they'reH.ewpara"},
    {"<|begin_of_text|>Hello<|eot_id|>the world",
     {0,  15, 18, 20, 22, 27, 0,  28, 19, 0,  33, 18, 37, 33, 0,  11, 18,
      51, 0,  18, 28, 33, 0,  22, 17, 0,  33, 45, 36, 28, 31, 25, 17},
     {},
     "[UNK]begin[UNK]of[UNK]text[UNK]Hello[UNK]eot[UNK]id[UNK]theworld",
     "beginoftextHelloeotidtheworld"},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ",
     {40, 27, 42, 16, 43, 17, 41, 16, 14, 19, 41, 27, 14, 42, 59, 0, 0},
     {},
     "Ünïcödécafénaïve[UNK][UNK]",
     "Ünïcödécafénaïve"},
    {"say hello, hellos and ohello hello",
     {32, 14, 38, 45, 51, 2, 45, 51, 32, 14, 27, 17, 28, 45, 51, 45, 51},
     {},
     "sayhello,hellosandohellohello",
     "sayhello,hellosandohellohello"},
    {"a [MASK] b   [MASK]   c<sep>  d",
     {14, 0, 15, 0, 16, 0, 32, 18, 29, 0, 17},
     {},
     "a[UNK]b[UNK]c[UNK]sep[UNK]d",
     "abcsepd"},
    {"the  the   the", {33, 45, 33, 45, 33, 45}, {}, "thethethe", "thethethe"},
    {"", {}, {}, "", ""},
    {"zzz qqq", {39, 39, 39, 30, 30, 30}, {}, "zzzqqq", "zzzqqq"},
    {"``quoted``", {0, 30, 34, 28, 33, 18, 17, 0}, {}, "[UNK]quoted[UNK]", "quoted"},
    {"İstanbul ΣΑΣ", {0, 32, 33, 14, 27, 15, 34, 25, 0}, {}, "[UNK]stanbul[UNK]", "stanbul"},
};
inline const std::vector<HfCase> kCharRemoved1Cases = {
    {"Hello world! The quick brown fox.", {44, 44, 44, 44, 44, 44}, {}, "     ", "     "},
    {"  leading and trailing  ", {44, 44, 44}, {}, "  ", "  "},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {44, 44, 44, 44, 44, 44},
     {},
     "     ",
     "     "},
    {"<|begin_of_text|>Hello<|eot_id|>the world", {44, 44}, {}, " ", " "},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ", {44, 44, 44, 44, 44}, {}, "    ", "    "},
    {"say hello, hellos and ohello hello", {44, 44, 44, 44, 44, 44}, {}, "     ", "     "},
    {"a [MASK] b   [MASK]   c<sep>  d", {44, 44, 44, 44, 44, 44}, {}, "     ", "     "},
    {"the  the   the", {44, 44, 44}, {}, "  ", "  "},
    {"", {}, {}, "", ""},
    {"zzz qqq", {44, 44}, {}, " ", " "},
    {"``quoted``", {44}, {}, "", ""},
    {"İstanbul ΣΑΣ", {44, 44}, {}, " ", " "},
};
inline const std::vector<HfCase> kCharMergedWithNext0Cases = {
    {"Hello world! The quick brown fox.",
     {44, 11, 18, 51, 55, 0, 44, 13, 45, 98, 44, 15, 31, 28, 36, 27, 44, 19, 28, 37, 3},
     {},
     "Hello world[UNK] The quick brown fox.",
     "Hello world The quick brown fox."},
    {"  leading and trailing  ",
     {102, 18, 14, 17, 22, 27, 20, 44, 14, 27, 17, 48, 31, 14, 22, 25, 22, 27, 20},
     {},
     "leading and trailing",
     "leading and trailing"},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {44, 12, 33, 1, 32, 44, 5, 6, 7, 8, 9, 79, 68, 44, 11, 0, 3, 0, 18, 36, 44, 29, 14, 31, 14},
     {},
     "It's 12345 numbers; they're H[UNK].[UNK]ew para",
     "It's 12345 numbers; they're H.ew para"},
    {"<|begin_of_text|>Hello<|eot_id|>the world",
     {44, 0,  15, 18, 20, 22, 27, 0,  28, 19, 0,  33, 18, 37, 33,
      0,  11, 18, 51, 0,  18, 28, 33, 0,  22, 17, 0,  33, 45, 55},
     {},
     "[UNK]begin[UNK]of[UNK]text[UNK]Hello[UNK]eot[UNK]id[UNK]the world",
     "beginoftextHelloeotidthe world"},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ",
     {93, 44, 16, 14, 19, 41, 82, 44, 0, 44, 0},
     {},
     "Ünïcödé café naïve [UNK] [UNK]",
     "Ünïcödé café naïve  "},
    {"say hello, hellos and ohello hello",
     {72, 56, 2, 56, 32, 44, 14, 27, 17, 99, 45, 51, 56},
     {},
     "say hello, hellos and ohello hello",
     "say hello, hellos and ohello hello"},
    {"a [MASK] b   [MASK]   c<sep>  d",
     {44, 14, 44, 0, 44, 15, 44, 0, 44, 16, 0, 32, 18, 29, 0, 44, 17},
     {},
     "a [UNK] b [UNK] c[UNK]sep[UNK] d",
     "a  b  csep d"},
    {"the  the   the", {49, 49, 49}, {}, "the the the", "the the the"},
    {"", {}, {}, "", ""},
    {"zzz qqq", {44, 39, 39, 39, 94, 30, 30}, {}, "zzz qqq", "zzz qqq"},
    {"``quoted``", {44, 0, 30, 34, 28, 33, 18, 17, 0}, {}, "[UNK]quoted[UNK]", "quoted"},
    {"İstanbul ΣΑΣ",
     {44, 0, 32, 33, 14, 27, 15, 34, 25, 44, 0},
     {},
     "[UNK]stanbul [UNK]",
     "stanbul "},
};
inline const std::vector<HfCase> kCharIsolated0Cases = {
    {"Hello world! The quick brown fox.",
     {44, 11, 18, 51, 44, 36, 28, 31, 25, 17, 0,  44, 13, 45, 44, 30,
      34, 22, 16, 24, 44, 15, 31, 28, 36, 27, 44, 19, 28, 37, 3},
     {},
     "Hello world[UNK] The quick brown fox.",
     "Hello world The quick brown fox."},
    {"  leading and trailing  ",
     {44, 25, 18, 14, 17, 22, 27, 20, 44, 14, 27, 17, 44, 33, 31, 14, 22, 25, 22, 27, 20},
     {},
     "leading and trailing",
     "leading and trailing"},
    {"It's 12345 numbers; they're HERE.\n\nNew para\r\n",
     {44, 12, 33, 1,  32, 44, 5,  6,  7, 8, 9, 44, 27, 60, 15, 18, 31, 32, 10,
      44, 33, 45, 38, 1,  61, 44, 11, 0, 3, 0, 18, 36, 44, 29, 14, 31, 14},
     {},
     "It's 12345 numbers; they're H[UNK].[UNK]ew para",
     "It's 12345 numbers; they're H.ew para"},
    {"<|begin_of_text|>Hello<|eot_id|>the world",
     {44, 0, 15, 18, 20, 22, 27, 0,  28, 19, 0,  33, 18, 37, 33, 0,  11, 18,
      51, 0, 18, 28, 33, 0,  22, 17, 0,  33, 45, 44, 36, 28, 31, 25, 17},
     {},
     "[UNK]begin[UNK]of[UNK]text[UNK]Hello[UNK]eot[UNK]id[UNK]the world",
     "beginoftextHelloeotidthe world"},
    {"Ünïcödé café naïve ｆｕｌｌ ﬁ",
     {44, 40, 27, 42, 16, 43, 17, 41, 44, 16, 14, 19, 41, 44, 27, 14, 42, 59, 44, 0, 44, 0},
     {},
     "Ünïcödé café naïve [UNK] [UNK]",
     "Ünïcödé café naïve  "},
    {"say hello, hellos and ohello hello",
     {44, 32, 14, 38, 44, 45, 51, 2, 44, 45, 51, 32, 44, 14, 27, 17, 44, 28, 45, 51, 44, 45, 51},
     {},
     "say hello, hellos and ohello hello",
     "say hello, hellos and ohello hello"},
    {"a [MASK] b   [MASK]   c<sep>  d",
     {44, 14, 44, 0, 44, 15, 44, 0, 44, 16, 0, 32, 18, 29, 0, 44, 17},
     {},
     "a [UNK] b [UNK] c[UNK]sep[UNK] d",
     "a  b  csep d"},
    {"the  the   the", {44, 33, 45, 44, 33, 45, 44, 33, 45}, {}, "the the the", "the the the"},
    {"", {}, {}, "", ""},
    {"zzz qqq", {44, 39, 39, 39, 44, 30, 30, 30}, {}, "zzz qqq", "zzz qqq"},
    {"``quoted``", {44, 0, 30, 34, 28, 33, 18, 17, 0}, {}, "[UNK]quoted[UNK]", "quoted"},
    {"İstanbul ΣΑΣ",
     {44, 0, 32, 33, 14, 27, 15, 34, 25, 44, 0},
     {},
     "[UNK]stanbul [UNK]",
     "stanbul "},
};

// GPT-2's printable form of byte b.
inline std::string ByteLevelChar(int b) {
  int n = 0;
  auto printable = [](int x) {
    return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
  };
  for (int x = 0; x < b; ++x) n += printable(x) ? 0 : 1;
  int cp = printable(b) ? b : 256 + n;
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

inline std::vector<std::pair<std::string, std::string>> ParseMerges(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> merges;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    size_t space = line.find(' ');
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    pos = eol + 1;
  }
  return merges;
}

inline Json AddedToken(int id, const std::string& content, bool special = true,
                       bool normalized = false, bool lstrip = false, bool rstrip = false,
                       bool single_word = false) {
  return {{"id", id},          {"content", content}, {"single_word", single_word},
          {"lstrip", lstrip},  {"rstrip", rstrip},   {"normalized", normalized},
          {"special", special}};
}

// A BPE model whose vocab is `base` followed by the result of each merge.
inline Json BpeModel(const std::vector<std::string>& base, const std::string& merges_text,
                     bool pair_form, bool ignore_merges, const char* unk) {
  Json vocab = Json::object();
  for (const std::string& t : base) vocab[t] = static_cast<int>(vocab.size());
  Json merges = Json::array();
  for (const auto& [a, b] : ParseMerges(merges_text)) {
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
    merges.push_back(pair_form ? Json::array({a, b}) : Json(a + " " + b));
  }
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", unk ? Json(unk) : Json()},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", unk != nullptr},
          {"byte_fallback", false},
          {"ignore_merges", ignore_merges},
          {"vocab", vocab},
          {"merges", merges}};
}

inline std::vector<std::string> ByteLevelBase() {
  std::vector<std::string> base;
  for (int b = 0; b < 256; ++b) base.push_back(ByteLevelChar(b));
  return base;
}

inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

inline Json Llama3Style() {
  Json model = BpeModel(ByteLevelBase(), kByteLevelMerges, /*pair_form=*/true,
                        /*ignore_merges=*/true, nullptr);
  int n = static_cast<int>(model["vocab"].size());
  Json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", true},
                     {"trim_offsets", true},
                     {"use_regex", true}};
  Json bos = {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens",
           {AddedToken(n, "<|begin_of_text|>"), AddedToken(n + 1, "<|eot_id|>"),
            AddedToken(n + 2, "<|start_header_id|>"), AddedToken(n + 3, "<|end_header_id|>")}},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", kLlama3Pattern}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"},
               {"add_prefix_space", false},
               {"trim_offsets", true},
               {"use_regex", false}}}}}},
          {"post_processor",
           {{"type", "Sequence"},
            {"processors",
             {byte_level,
              {{"type", "TemplateProcessing"},
               {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
               {"pair", Json::array()},
               {"special_tokens",
                {{"<|begin_of_text|>",
                  {{"id", "<|begin_of_text|>"},
                   {"ids", {n}},
                   {"tokens", {"<|begin_of_text|>"}}}}}}}}}}},
          {"decoder", byte_level},
          {"model", model}};
}

inline Json Gpt2Style() {
  Json j = Llama3Style();
  int n = static_cast<int>(j["model"]["vocab"].size());
  j["model"] = BpeModel(ByteLevelBase(), kByteLevelMerges, /*pair_form=*/false,
                        /*ignore_merges=*/false, nullptr);
  j["added_tokens"] = {AddedToken(n, "<|endoftext|>"),
                       AddedToken(n + 1, "[MASK]", true, false, true, true),
                       AddedToken(n + 2, "hello", false, true, false, false, true),
                       AddedToken(n + 3, "<sep>", true, false, false, true)};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "NFKC"}},
                       {{"type", "Lowercase"}},
                       {{"type", "Replace"}, {"pattern", {{"String", "``"}}}, {"content", "\""}}}}};
  Json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", true},
                     {"trim_offsets", true},
                     {"use_regex", true}};
  j["pre_tokenizer"] = byte_level;
  j["post_processor"] = byte_level;
  return j;
}

inline Json CharLevel(const std::string& behavior, bool invert) {
  std::vector<std::string> base = {"[UNK]"};
  std::string chars = kCharBase;
  for (size_t i = 0; i < chars.size();) {
    size_t len = 1;
    unsigned char c = static_cast<unsigned char>(chars[i]);
    if (c >= 0xF0)
      len = 4;
    else if (c >= 0xE0)
      len = 3;
    else if (c >= 0xC0)
      len = 2;
    base.push_back(chars.substr(i, len));
    i += len;
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", {AddedToken(0, "[UNK]")}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
              {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "▁"}},
              {{"type", "Prepend"}, {"prepend", "▁"}}}}}},
          {"pre_tokenizer",
           {{"type", "Split"},
            {"pattern", {{"String", "▁"}}},
            {"behavior", behavior},
            {"invert", invert}}},
          {"post_processor", nullptr},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model", BpeModel(base, kCharMerges, true, false, "[UNK]")}};
}

inline const std::vector<HfCase> kByteFallbackCases = {
    {"hello world",
     {271, 272, 273, 266, 264, 261},
     {271, 272, 273, 266, 264, 261},
     "hello world",
     "hello world"},
    {"Hello World",
     {257, 73, 270, 272, 257, 88, 265, 266, 264, 261},
     {257, 73, 270, 272, 257, 88, 265, 266, 264, 261},
     "Hello World",
     "Hello World"},
    {"hello héllo wörld €",
     {271, 272, 269, 196, 170, 264, 272, 274, 196, 183, 266, 264, 261, 257, 227, 131, 173},
     {271, 272, 269, 196, 170, 264, 272, 274, 196, 183, 266, 264, 261, 257, 227, 131, 173},
     "hello héllo wörld €",
     "hello héllo wörld €"},
    {"xyz", {257, 121, 122, 123}, {257, 121, 122, 123}, "xyz", "xyz"},
    {"abc  d e",
     {257, 258, 259, 260, 257, 257, 261, 257, 262},
     {257, 258, 259, 260, 257, 257, 261, 257, 262},
     "abc  d e",
     "abc  d e"},
    {"", {}, {}, "", ""},
    {"hello\tworld\nhello",
     {271, 272, 10, 268, 265, 266, 264, 261, 11, 263, 270, 272},
     {271, 272, 10, 268, 265, 266, 264, 261, 11, 263, 270, 272},
     "hello\tworld\nhello",
     "hello\tworld\nhello"},
};
inline const std::vector<HfCase> kPrefixSuffixCases = {
    {"hello world", {56, 55}, {0, 56, 55, 0}, "hello</w> world</w>", "hello</w> world</w>"},
    {"Hello World", {56, 55}, {0, 56, 55, 0}, "hello</w> world</w>", "hello</w> world</w>"},
    {"hello héllo wörld €",
     {56, 21, 0, 50, 32, 45, 0, 34, 54, 0},
     {0, 56, 21, 0, 50, 32, 45, 0, 34, 54, 0, 0},
     "hello</w> h [UNK] ##ll ##o</w> w [UNK] ##r ##ld</w> [UNK]",
     "hello</w> h ##ll ##o</w> w ##r ##ld</w>"},
    {"xyz", {0, 0, 0}, {0, 0, 0, 0, 0}, "[UNK] [UNK] [UNK]", ""},
    {"abc  d e",
     {1, 6, 12, 15, 19},
     {0, 1, 6, 12, 15, 19, 0},
     "a ##b ##c</w> d</w> e</w>",
     "a ##b ##c</w> d</w> e</w>"},
    {"", {}, {0, 0}, "", ""},
    {"hello\tworld\nhello",
     {56, 55, 56},
     {0, 56, 55, 56, 0},
     "hello</w> world</w> hello</w>",
     "hello</w> world</w> hello</w>"},
};

// Llama 2 style without Metaspace: byte fallback to <0xXX> tokens.
inline Json ByteFallbackStyle() {
  Json vocab = {{"<unk>", 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = static_cast<int>(vocab.size());
  }
  for (std::string ch : {"▁", "a", "b", "c", "d", "e", "h", "l", "o", "r", "t", "w"}) {
    vocab[ch] = static_cast<int>(vocab.size());
  }
  Json merges = Json::array();
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"▁", "h"}, {"e", "l"}, {"▁h", "el"}, {"l", "o"}, {"▁w", "o"}, {"▁", "w"}}) {
    merges.push_back(Json::array({a, b}));
  }
  for (const Json& m : merges) {
    std::string merged = m[0].get<std::string>() + m[1].get<std::string>();
    if (!vocab.contains(merged)) vocab[merged] = static_cast<int>(vocab.size());
  }
  return {{"added_tokens", {AddedToken(0, "<unk>")}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", merges}}}};
}

// Subword prefix "##" and end-of-word suffix "</w>", no decoder, Bert-style
// post-processor.
inline Json PrefixSuffixStyle() {
  Json vocab = {{"[UNK]", 0}};
  for (char c : std::string("abcdehlorstw")) {
    std::string ch(1, c);
    for (const std::string& t : {ch, "##" + ch, ch + "</w>", "##" + ch + "</w>"}) {
      vocab[t] = static_cast<int>(vocab.size());
    }
  }
  std::vector<std::pair<std::string, std::string>> pairs = {
      {"h", "##e"},  {"##l", "##l"},     {"he", "##ll"},      {"##o", "##r"},
      {"w", "##or"}, {"##l", "##d</w>"}, {"wor", "##ld</w>"}, {"hell", "##o</w>"}};
  Json merges = Json::array();
  for (const auto& [a, b] : pairs) {
    std::string merged = a + (b.rfind("##", 0) == 0 ? b.substr(2) : b);
    if (!vocab.contains(merged)) vocab[merged] = static_cast<int>(vocab.size());
    merges.push_back(a + " " + b);
  }
  return {{"added_tokens", {AddedToken(0, "[UNK]")}},
          {"normalizer", {{"type", "Lowercase"}}},
          {"pre_tokenizer",
           {{"type", "Split"},
            {"pattern", {{"Regex", "\\s+"}}},
            {"behavior", "Removed"},
            {"invert", false}}},
          {"post_processor",
           {{"type", "BertProcessing"}, {"sep", {"[UNK]", 0}}, {"cls", {"[UNK]", 0}}}},
          {"decoder", nullptr},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "[UNK]"},
            {"fuse_unk", false},
            {"continuing_subword_prefix", "##"},
            {"end_of_word_suffix", "</w>"},
            {"vocab", vocab},
            {"merges", merges}}}};
}

class HandMadeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "tokenizer_test_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::unique_ptr<Tokenizer> Load(const Json& j) {
    auto tok = Tokenizer::FromFile(Write("tokenizer.json", j.dump(2)));
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? std::move(*tok) : nullptr;
  }
  absl::Status LoadError(const Json& j) { return Tokenizer::FromJson(j.dump()).status(); }

  void Check(const Json& j, const std::vector<HfCase>& cases) {
    auto tok = Load(j);
    ASSERT_NE(tok, nullptr);
    for (const HfCase& c : cases) {
      SCOPED_TRACE("text: " + c.text);
      EXPECT_EQ(IdsToString(tok->Encode(c.text)), IdsToString(c.ids));
      if (!c.with_special.empty()) {
        EXPECT_EQ(IdsToString(tok->Encode(c.text, true)), IdsToString(c.with_special));
      }
      EXPECT_EQ(tok->Decode(c.ids), c.decoded);
      EXPECT_EQ(tok->Decode(c.ids, true), c.decoded_skip_special);
    }
  }

  std::string dir_;
};

}  // namespace cohort::tok_testing

#endif  // COHORT_CORE_TOKENIZER_HF_CASES_TEST_UTIL_H_
