#include "reward_server/verifiers/language.h"

#include <utf8proc.h>

#include <string>

#include "reward_server/verifiers/extract.h"

namespace cohort::reward {
namespace {

enum class Script { kNone, kLatin, kHan, kKana, kHangul, kOther };

bool IsHan(utf8proc_int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2EBEF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0x2F800 && c <= 0x2FA1F) || (c >= 0x30000 && c <= 0x3134F);
}
bool IsKana(utf8proc_int32_t c) {
  return (c >= 0x3040 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) ||
         (c >= 0xFF66 && c <= 0xFF9D);
}
bool IsHangul(utf8proc_int32_t c) {
  return (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0x1100 && c <= 0x11FF) ||
         (c >= 0x3130 && c <= 0x318F);
}
bool IsLatin(utf8proc_int32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) || (c >= 0x1E00 && c <= 0x1EFF) ||
         (c >= 0xFF21 && c <= 0xFF5A);
}

}  // namespace

WordCounts CountWords(std::string_view text) {
  WordCounts counts;
  Script word = Script::kNone;  // script of the word being read
  bool command = false;         // the word being read follows a backslash
  auto finish = [&]() {
    if (word != Script::kNone && !command) {
      ++counts.total;
      if (word == Script::kLatin) ++counts.latin;
    }
    word = Script::kNone;
    command = false;
  };
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  bool after_backslash = false;
  while (left > 0) {
    utf8proc_int32_t c;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) {  // invalid byte: skip it
      finish();
      ++p;
      --left;
      after_backslash = false;
      continue;
    }
    p += n;
    left -= n;
    if (IsHan(c) || IsKana(c) || IsHangul(c)) {
      finish();
      ++counts.total;
      if (IsHan(c)) ++counts.han;
      if (IsKana(c)) ++counts.kana;
      if (IsHangul(c)) ++counts.hangul;
      after_backslash = false;
      continue;
    }
    utf8proc_category_t cat = utf8proc_category(c);
    bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    bool mark = cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME;
    if (letter) {
      Script s = IsLatin(c) ? Script::kLatin : Script::kOther;
      if (word == Script::kNone) {
        word = s;
        command = after_backslash;
      } else if (word != s) {
        word = Script::kOther;  // mixed scripts in one run
      }
    } else if (mark && word != Script::kNone) {
      // A combining mark continues the word.
    } else {
      finish();
    }
    after_backslash = c == '\\';
  }
  finish();
  return counts;
}

ComponentResult LanguageConsistency(const Sample& sample, std::string_view lang) {
  if (lang != "en" && lang != "zh") {
    return ComponentResult::Invalid("unsupported language \"" + std::string(lang) + "\" (en, zh)");
  }
  std::string_view cot = ChainOfThought(sample.completion);
  if (cot.size() > kMaxCompletionBytes) {
    cot = cot.substr(cot.size() - kMaxCompletionBytes);
  }
  WordCounts w = CountWords(cot);
  if (w.total == 0) return ComponentResult::Ok(0.0, "no words in the chain of thought");
  int target = lang == "en" ? w.latin : w.han;
  return ComponentResult::Ok(static_cast<double>(target) / w.total);
}

}  // namespace cohort::reward
