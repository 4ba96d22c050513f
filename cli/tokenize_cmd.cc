// `cohort tokenize`: JSON-string lines in, {"ids":[...]} lines out, or the
// reverse with --decode. One output line per input line, always: a line that
// cannot be handled gets {"error": "..."} on stdout and a message naming its
// line number on stderr, and the run goes on. Exit status 1 if any line
// failed, 0 otherwise.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/tokenizer.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

using Json = nlohmann::json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

// Returns the output line for one input line, or sets *error.
std::string Encode(const Tokenizer& tok, const std::string& line, bool add_special,
                   std::string* error) {
  Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *error = "not valid JSON (expected a JSON string such as \"Hello\")";
    return "";
  }
  if (!j.is_string()) {
    *error = std::string("expected a JSON string, got a JSON ") + j.type_name();
    return "";
  }
  std::vector<int32_t> ids = tok.Encode(j.get_ref<const std::string&>(), add_special);
  std::string out = "{\"ids\":[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  out += "]}";
  return out;
}

std::string Decode(const Tokenizer& tok, const std::string& line, bool skip_special,
                   std::string* error) {
  Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *error = "not valid JSON (expected a JSON array of token ids such as [9707,1879])";
    return "";
  }
  if (!j.is_array()) {
    *error = std::string("expected a JSON array of token ids, got a JSON ") + j.type_name();
    return "";
  }
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& v = j[i];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.vocab_size()) {
      *error = "element " + std::to_string(i) + " (" + v.dump() + ") is not a token id in [0, " +
               std::to_string(tok.vocab_size()) + ")";
      return "";
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return Dump(Json(tok.Decode(ids, skip_special)));
}

}  // namespace

int TokenizeMain(int argc, char** argv) {
  std::string tokenizer_path;
  bool add_special_tokens = false;
  bool decode = false;
  bool skip_special_tokens = false;
  FlagSet flags(argv[0],
                "Reads lines on stdin, each a JSON string, and writes for each a line "
                "{\"ids\":[...]}. With --decode, each input line is a JSON array of ids and "
                "each output line the decoded JSON string. A bad line gets {\"error\": ...} "
                "and a message on stderr; the exit status is 1 if any line failed.");
  flags.String("tokenizer", &tokenizer_path,
               "Path to tokenizer.json (tokenizer_config.json beside it is read too).");
  flags.Bool("add_special_tokens", &add_special_tokens,
             "Let the post-processor add its special tokens (Llama 3: <|begin_of_text|>).");
  flags.Bool("decode", &decode, "Decode arrays of ids to strings instead of encoding.");
  flags.Bool("skip_special_tokens", &skip_special_tokens,
             "With --decode, leave special tokens out of the text.");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (!positional.empty()) {
    std::fprintf(stderr, "%s: unexpected argument '%s' (input comes on stdin)\n", argv[0],
                 positional[0].c_str());
    return 2;
  }
  if (tokenizer_path.empty()) {
    std::fprintf(stderr, "%s: --tokenizer PATH is required\n", argv[0]);
    return 2;
  }
  auto tok = Tokenizer::FromFile(tokenizer_path);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(tok.status().message()).c_str());
    return 1;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  size_t line_no = 0, failed = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string error;
    std::string out = decode ? Decode(**tok, line, skip_special_tokens, &error)
                             : Encode(**tok, line, add_special_tokens, &error);
    if (!error.empty()) {
      ++failed;
      std::fprintf(stderr, "%s: line %zu: %s\n", argv[0], line_no, error.c_str());
      out = Dump(Json{{"error", "line " + std::to_string(line_no) + ": " + error}});
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  std::fflush(stdout);
  return failed > 0 ? 1 : 0;
}

}  // namespace cohort::cli
