#include "reward_server/verifiers/format.h"

#include "reward_server/verifiers/extract.h"

namespace cohort::reward {
namespace {

std::size_t Count(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string_view::npos;
       p = hay.find(needle, p + needle.size())) {
    ++n;
  }
  return n;
}

bool PromptOpensThink(const Sample& sample) {
  std::string_view p = TrimAscii(sample.prompt);
  return p.size() >= 7 && p.substr(p.size() - 7) == "<think>";
}

// Checks "<think> reasoning </think>" at the start of `c` and returns the rest.
std::optional<std::string_view> ThinkBlock(const Sample& sample, std::string_view c,
                                           std::string* why) {
  std::size_t opens = Count(c, "<think>");
  std::size_t closes = Count(c, "</think>");
  bool prompt_open = PromptOpensThink(sample);
  if (closes != 1) {
    *why = closes == 0 ? "no </think>" : "more than one </think>";
    return std::nullopt;
  }
  if (opens > 1 || (opens == 0 && !prompt_open)) {
    *why = opens == 0 ? "no <think>" : "more than one <think>";
    return std::nullopt;
  }
  std::string_view body = c;
  if (opens == 1) {
    if (c.substr(0, 7) != "<think>") {
      *why = "text before <think>";
      return std::nullopt;
    }
    body = c.substr(7);
  }
  std::size_t close = body.find("</think>");
  if (TrimAscii(body.substr(0, close)).empty()) {
    *why = "empty reasoning";
    return std::nullopt;
  }
  return body.substr(close + 8);
}

}  // namespace

std::optional<FormatKind> ParseFormatKind(std::string_view name) {
  if (name == "r1-zero" || name == "r1_zero") return FormatKind::kR1Zero;
  if (name == "r1") return FormatKind::kR1;
  if (name == "none") return FormatKind::kNone;
  return std::nullopt;
}

const char* FormatKindName(FormatKind kind) {
  switch (kind) {
    case FormatKind::kR1Zero:
      return "r1-zero";
    case FormatKind::kR1:
      return "r1";
    case FormatKind::kNone:
      return "none";
  }
  return "none";
}

ComponentResult FormatReward(const Sample& sample, FormatKind kind) {
  if (kind == FormatKind::kNone) return ComponentResult::Ok(0.0, "no format");
  std::string_view c = TrimAscii(sample.completion);
  std::string why;
  auto rest = ThinkBlock(sample, c, &why);
  if (!rest) return ComponentResult::Ok(0.0, why);
  std::string_view after = TrimAscii(*rest);
  if (kind == FormatKind::kR1) {
    if (after.empty()) return ComponentResult::Ok(0.0, "nothing after </think>");
    return ComponentResult::Ok(1.0);
  }
  // r1-zero: exactly <answer> ... </answer> after the reasoning.
  if (Count(c, "<answer>") != 1 || Count(c, "</answer>") != 1) {
    return ComponentResult::Ok(0.0, "needs exactly one <answer>...</answer>");
  }
  if (after.substr(0, 8) != "<answer>") {
    return ComponentResult::Ok(0.0, "text between </think> and <answer>");
  }
  if (after.size() < 17 || after.substr(after.size() - 9) != "</answer>") {
    return ComponentResult::Ok(0.0, "text after </answer>");
  }
  if (TrimAscii(after.substr(8, after.size() - 17)).empty()) {
    return ComponentResult::Ok(0.0, "empty answer");
  }
  return ComponentResult::Ok(1.0);
}

}  // namespace cohort::reward
