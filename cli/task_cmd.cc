// `cohort task addition --out DIR`: writes the built-in addition task's
// splits (train, eval, fresh, sft JSONL) and its tokenizer files, the same
// ones a run with `task: {name: addition}` writes to <out>/data/.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/tasks/addition.h"

namespace cohort::cli {

int TaskMain(int argc, char** argv) {
  tasks::AdditionOptions o;
  std::string out;
  int64_t digits = o.digits, seed = static_cast<int64_t>(o.seed);
  FlagSet flags(argv[0],
                "Writes a built-in task's datasets. `cohort task addition --out DIR`: "
                "train.jsonl, eval.jsonl (held out), fresh.jsonl (outside both), sft.jsonl "
                "(demonstrations), tokenizer.json and tokenizer_config.json.");
  flags.String("out", &out, "Output directory.");
  flags.Int("digits", &digits, "Digits per operand (1..9).");
  flags.Int("train_size", &o.train_size, "Training prompts.");
  flags.Int("eval_size", &o.eval_size, "Held-out problems.");
  flags.Int("fresh_size", &o.fresh_size, "Fresh problems outside train and held-out.");
  flags.Int("sft_size", &o.sft_size, "Demonstrations (a prefix of train).");
  flags.Int("seed", &seed, "Seed of the splits.");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (positional.size() != 1 || positional[0] != "addition" || out.empty()) {
    std::fprintf(stderr, "usage: %s addition --out DIR [--digits N ...] (see --help)\n", argv[0]);
    return 2;
  }
  o.digits = static_cast<int>(digits);
  o.seed = static_cast<uint64_t>(seed);
  absl::Status s = tasks::WriteAdditionTask(o, out);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s: addition, %d digits: %lld train, %lld held-out, %lld fresh, %lld sft\n",
              out.c_str(), o.digits, static_cast<long long>(o.train_size),
              static_cast<long long>(o.eval_size), static_cast<long long>(o.fresh_size),
              static_cast<long long>(o.sft_size));
  return 0;
}

}  // namespace cohort::cli
