// Process logging.
//
// COHORT_LOG(INFO) << "text";  writes one line to stderr: human-readable when
// stderr is a terminal, one JSON object per line otherwise:
//   {"ts":"2026-11-28T15:49:33.123Z","level":"info","role":"learner",
//    "file":"learner.cc","line":42,"msg":"text"}
// Thread-safe: each line is written with a single write(2).
// COHORT_LOG(FATAL) writes the line and aborts. COHORT_CHECK(cond) is for programmer
// errors only; user errors return an absl::Status.
#ifndef COHORT_CORE_LOGGING_H_
#define COHORT_CORE_LOGGING_H_

#include <sstream>
#include <string>
#include <string_view>

namespace cohort {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

enum class LogFormat { kAuto, kText, kJson };

// Process-wide settings; call once near the start of main().
// `role` names the process in every line ("learner", "actor", ...).
void InitLogging(std::string_view role, LogLevel min_level = LogLevel::kInfo,
                 LogFormat format = LogFormat::kAuto);

// Parses "debug", "info", "warning", "error"; false if unknown.
bool ParseLogLevel(std::string_view text, LogLevel* level);

// Formats one record as the line that would be written (no newline).
std::string FormatLogLine(LogLevel level, std::string_view file, int line, std::string_view message,
                          bool json);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

// Swallows the stream when a level is disabled.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

bool LogLevelEnabled(LogLevel level);

}  // namespace cohort

#define COHORT_LOG_LEVEL_DEBUG ::cohort::LogLevel::kDebug
#define COHORT_LOG_LEVEL_INFO ::cohort::LogLevel::kInfo
#define COHORT_LOG_LEVEL_WARNING ::cohort::LogLevel::kWarning
#define COHORT_LOG_LEVEL_ERROR ::cohort::LogLevel::kError
#define COHORT_LOG_LEVEL_FATAL ::cohort::LogLevel::kFatal

#define COHORT_LOG(severity)                              \
  !::cohort::LogLevelEnabled(COHORT_LOG_LEVEL_##severity) \
      ? (void)0                                           \
      : ::cohort::LogVoidify() &                          \
            ::cohort::LogMessage(COHORT_LOG_LEVEL_##severity, __FILE__, __LINE__).stream()

#define COHORT_CHECK(cond)                                                                   \
  (cond) ? (void)0                                                                           \
         : ::cohort::LogVoidify() &                                                          \
               ::cohort::LogMessage(::cohort::LogLevel::kFatal, __FILE__, __LINE__).stream() \
                   << "CHECK failed: " #cond " "

#endif  // COHORT_CORE_LOGGING_H_
