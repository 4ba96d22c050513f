#include "core/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace cohort {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> g_json{false};
std::string* g_role = new std::string("cohort");  // never destroyed

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
    case LogLevel::kFatal:
      return "fatal";
  }
  return "info";
}

std::string_view Basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string Timestamp(bool iso) {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  if (iso) {
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    return absl::StrFormat("%s.%03dZ", buf, millis);
  }
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return absl::StrFormat("%s.%03d", buf, millis);
}

}  // namespace

void InitLogging(std::string_view role, LogLevel min_level, LogFormat format) {
  *g_role = std::string(role);
  g_min_level.store(static_cast<int>(min_level));
  bool json = format == LogFormat::kJson || (format == LogFormat::kAuto && !isatty(STDERR_FILENO));
  if (const char* env = std::getenv("COHORT_LOG_FORMAT")) {
    std::string v = absl::AsciiStrToLower(env);
    if (v == "json") json = true;
    if (v == "text") json = false;
  }
  g_json.store(json);
}

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  std::string v = absl::AsciiStrToLower(absl::string_view(text.data(), text.size()));
  if (v == "debug")
    *level = LogLevel::kDebug;
  else if (v == "info")
    *level = LogLevel::kInfo;
  else if (v == "warning" || v == "warn")
    *level = LogLevel::kWarning;
  else if (v == "error")
    *level = LogLevel::kError;
  else
    return false;
  return true;
}

bool LogLevelEnabled(LogLevel level) {
  return static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed);
}

std::string FormatLogLine(LogLevel level, std::string_view file, int line, std::string_view message,
                          bool json) {
  if (json) {
    nlohmann::json j;
    j["ts"] = Timestamp(true);
    j["level"] = LevelName(level);
    j["role"] = *g_role;
    j["file"] = std::string(Basename(file));
    j["line"] = line;
    j["msg"] = std::string(message);
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  char tag = absl::ascii_toupper(LevelName(level)[0]);
  return absl::StrFormat("%c %s %s %s:%d] %s", tag, Timestamp(false), *g_role, Basename(file), line,
                         message);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  std::string text =
      FormatLogLine(level_, file_, line_, stream_.str(), g_json.load(std::memory_order_relaxed));
  text.push_back('\n');
  // One write so concurrent lines do not interleave.
  ssize_t unused = ::write(STDERR_FILENO, text.data(), text.size());
  (void)unused;
  if (level_ == LogLevel::kFatal) std::abort();
}

}  // namespace cohort
