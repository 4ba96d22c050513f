// The pipeline's plan and checks. See pipeline_config.h.
#include "core/pipeline_config.h"

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

std::string Where(int index, const PipelineStage& s) {
  return absl::StrCat("pipeline[", index, "]", s.name.empty() ? "" : " (" + s.name + ")");
}

absl::Status Bad(int index, const PipelineStage& s, const std::string& key,
                 const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(Where(index, s), ".", key, ": ", what));
}

std::string Known(const std::vector<std::string>& names) {
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

std::string JoinPath(const std::string& dir, const std::string& path) {
  if (path.empty() || path[0] == '/' || dir.empty()) return path;
  return dir + "/" + path;
}

bool PromptSet(const PipelineDataset& d) {
  return !d.spec.prompt_key.empty() && !d.spec.answer_key.empty();
}

absl::Status Plan(const RunConfig& config, const std::string& data_dir, PipelinePlan* plan) {
  plan->stages.clear();
  plan->datasets.clear();
  plan->models = config.models;
  if (config.task.name == "addition") {
    for (const char* split : {"train", "eval", "fresh", "sft"}) {
      PipelineDataset d;
      d.spec.path = JoinPath(data_dir, absl::StrCat(split, ".jsonl"));
      d.spec.task = "addition";
      d.spec.id_key = "id";
      d.sft_set = std::string(split) == "sft";
      plan->datasets[split] = d;
    }
  }
  for (const auto& [name, spec] : config.datasets) {
    if (plan->datasets.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "datasets.", name, ": the name is taken by the built-in task's split of that name"));
    }
    PipelineDataset d;
    d.spec = spec;
    d.sft_set = !spec.completion_key.empty();
    plan->datasets[name] = d;
  }
  if (plan->models.count("base")) {
    return absl::InvalidArgumentError(
        "models.base: the name `base` is the `model` section's model; choose another");
  }
  std::vector<std::string> models = {"base"};
  for (const auto& [name, unused] : plan->models) models.push_back(name);
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  std::string latest = "base";
  std::set<std::string> stage_names;
  static const std::set<std::string> kSettable = {"grpo", "optim", "data", "sampling", "eval"};

  if (!config.pipeline.empty() && !config.eval.dataset.empty() &&
      !plan->datasets.count(config.eval.dataset)) {
    std::vector<std::string> names;
    for (const auto& [n, unused] : plan->datasets) names.push_back(n);
    return absl::InvalidArgumentError(absl::StrCat(
        "eval.dataset: \"", config.eval.dataset, "\" is neither a task split nor a `datasets` ",
        "entry (known: ", Known(names), "); set it to \"\" for no held-out eval"));
  }

  for (int i = 0; i < static_cast<int>(config.pipeline.size()); ++i) {
    const PipelineStage& s = config.pipeline[i];
    if (!stage_names.insert(s.name).second) {
      return Bad(i, s, "name", absl::StrCat("\"", s.name, "\" is used by an earlier stage"));
    }
    PlannedStage p;
    p.index = i;
    p.stage = s;
    p.model = s.model.empty() ? latest : s.model;
    if (!has(models, p.model)) {
      return Bad(i, s, "model",
                 absl::StrCat("\"", p.model, "\" is made by no earlier stage and is not a ",
                              "`models` entry (known here: ", Known(models), ")"));
    }
    const bool trains = s.kind == "sft" || s.kind == "grpo";
    p.dataset = s.dataset;
    if (p.dataset.empty() && s.kind == "eval") p.dataset = config.eval.dataset;
    if (p.dataset.empty() && s.kind != "eval") {
      return Bad(i, s, "dataset", absl::StrCat("a ", s.kind, " stage needs an input dataset"));
    }
    if (!p.dataset.empty()) {
      auto it = plan->datasets.find(p.dataset);
      if (it == plan->datasets.end()) {
        std::vector<std::string> names;
        for (const auto& [n, unused] : plan->datasets) names.push_back(n);
        return Bad(
            i, s, "dataset",
            absl::StrCat("\"", p.dataset, "\" is made by no earlier stage and is neither a ",
                         "task split nor a `datasets` entry (known here: ", Known(names), ")"));
      }
      const PipelineDataset& d = it->second;
      if (s.kind == "sft" && !d.sft_set) {
        return Bad(i, s, "dataset",
                   absl::StrCat("\"", p.dataset, "\" has no completions (an SFT set needs ",
                                "`completion_key`; a `generate` stage makes one)"));
      }
      if (s.kind != "sft" && !PromptSet(d)) {
        return Bad(i, s, "dataset",
                   absl::StrCat("\"", p.dataset, "\" has no `answer_key`; a ", s.kind,
                                " stage needs prompts with reference answers"));
      }
      if (s.kind != "sft") {
        if (d.spec.task.empty()) {
          return Bad(i, s, "dataset",
                     absl::StrCat("\"", p.dataset, "\" names no reward task (set its `task`)"));
        }
        if (!config.reward.tasks.count(d.spec.task)) {
          return Bad(i, s, "dataset",
                     absl::StrCat("\"", p.dataset, "\" has task \"", d.spec.task,
                                  "\", which is not in reward.tasks"));
        }
      }
    }
    if (s.until_accuracy > 0) {
      if (s.kind != "sft") {
        return Bad(i, s, "until_accuracy", "only an sft stage ends at an accuracy target");
      }
      if (s.until_dataset.empty()) {
        return Bad(i, s, "until_dataset",
                   "`until_accuracy` needs the prompt set it is measured on (e.g. `train`)");
      }
      if (s.until_dataset == config.eval.dataset) {
        return Bad(i, s, "until_dataset",
                   absl::StrCat("\"", s.until_dataset,
                                "\" is the held-out eval.dataset, which must not steer training; "
                                "use training prompts (e.g. `train`)"));
      }
      auto it = plan->datasets.find(s.until_dataset);
      if (it == plan->datasets.end()) {
        std::vector<std::string> names;
        for (const auto& [n, unused] : plan->datasets) names.push_back(n);
        return Bad(i, s, "until_dataset",
                   absl::StrCat("\"", s.until_dataset, "\" is made by no earlier stage and is ",
                                "neither a task split nor a `datasets` entry (known here: ",
                                Known(names), ")"));
      }
      const PipelineDataset& d = it->second;
      if (!PromptSet(d) || d.spec.task.empty() || !config.reward.tasks.count(d.spec.task)) {
        return Bad(i, s, "until_dataset",
                   absl::StrCat("\"", s.until_dataset,
                                "\" needs prompts with reference answers (`answer_key`) and a ",
                                "reward task in reward.tasks"));
      }
      p.until = d;
    } else if (!s.until_dataset.empty()) {
      return Bad(i, s, "until_dataset", "set `until_accuracy` too (> 0), or drop this key");
    }
    if (trains) {
      if ((s.steps > 0) == (s.epochs > 0)) {
        return Bad(i, s, "steps",
                   "give the stage's length as `steps` or as `epochs` (exactly one, > 0)");
      }
    } else if (s.kind == "eval" && (s.steps > 0 || s.epochs > 0)) {
      return Bad(i, s, "steps", "an eval stage has no length");
    }
    if (s.kind == "generate" && s.steps > 0) {
      return Bad(i, s, "steps", "a generate stage's length is `epochs` (passes over its prompts)");
    }
    // Outputs.
    if (s.kind == "eval") {
      if (!s.output.empty()) return Bad(i, s, "output", "an eval stage makes nothing");
    } else {
      p.output = s.output.empty() ? s.name : s.output;
      if (trains) {
        if (has(models, p.output)) {
          return Bad(i, s, "output",
                     absl::StrCat("a model named \"", p.output, "\" already exists"));
        }
        models.push_back(p.output);
        latest = p.output;
      } else {
        if (plan->datasets.count(p.output)) {
          return Bad(i, s, "output",
                     absl::StrCat("a dataset named \"", p.output, "\" already exists"));
        }
        PipelineDataset d;
        d.spec.path = JoinPath(data_dir, p.output + ".jsonl");
        d.spec.task = plan->datasets[p.dataset].spec.task;
        d.spec.id_key = "id";
        d.sft_set = true;
        d.made_by = s.name;
        plan->datasets[p.output] = d;
      }
    }
    // The stage's effective config.
    p.config = config;
    p.config.pipeline.clear();
    if (!p.dataset.empty()) {
      const DatasetSpec& d = plan->datasets[p.dataset].spec;
      p.config.data.train = d.path;
      p.config.data.prompt_key = d.prompt_key;
      p.config.data.answer_key = d.answer_key;
      if (!d.completion_key.empty()) p.config.data.completion_key = d.completion_key;
      p.config.data.id_key = d.id_key;
      if (!d.task.empty()) p.config.data.task = d.task;
    }
    for (const auto& [key, value] : s.set) {
      std::string section = key.substr(0, key.find('.'));
      if (!kSettable.count(section) || key.find('.') == std::string::npos) {
        return Bad(i, s, "set." + key,
                   "per-stage overrides are `section.key` of grpo, optim, data, sampling or eval");
      }
      absl::Status st = ApplyOverride(absl::StrCat(key, "=", value), &p.config);
      if (!st.ok()) return Bad(i, s, "set." + key, std::string(st.message()));
    }
    absl::Status st = ValidateConfig(p.config);
    if (!st.ok()) return Bad(i, s, "set", std::string(st.message()));
    plan->stages.push_back(std::move(p));
  }
  plan->final_model = latest;
  return absl::OkStatus();
}

}  // namespace

absl::Status PipelineChecks(const RunConfig& config) {
  if (config.pipeline.empty()) return absl::OkStatus();
  PipelinePlan plan;
  return Plan(config, "data", &plan);
}

absl::StatusOr<PipelinePlan> PlanPipeline(const RunConfig& config, const std::string& data_dir) {
  PipelinePlan plan;
  RETURN_IF_ERROR(Plan(config, data_dir, &plan));
  return plan;
}

namespace {

// The first line of `path` is a JSON object with every key in `keys`;
// errors start with `where`.
absl::Status CheckFirstLineKeys(const std::string& where, const std::string& path,
                                const std::vector<std::string>& keys) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(where, ": cannot read the file"));
  std::string line;
  if (!std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the file is empty"));
  }
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " line 1: not a JSON object"));
  }
  for (const std::string& key : keys) {
    if (!j.contains(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " line 1 has no key \"", key, "\" (the stage reads it)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckPipelineInputs(const PipelinePlan& plan) {
  for (const PlannedStage& p : plan.stages) {
    if (!p.until.spec.path.empty() && p.until.made_by.empty()) {
      const PipelineDataset& d = p.until;
      RETURN_IF_ERROR(
          CheckFirstLineKeys(absl::StrCat(Where(p.index, p.stage), ": until_dataset \"",
                                          p.stage.until_dataset, "\" (", d.spec.path, ")"),
                             d.spec.path, {d.spec.prompt_key, d.spec.answer_key}));
    }
    if (p.dataset.empty()) continue;
    const PipelineDataset& d = plan.datasets.at(p.dataset);
    if (!d.made_by.empty()) continue;  // written by an earlier stage
    std::vector<std::string> keys = {d.spec.prompt_key};
    if (p.stage.kind == "sft") {
      keys.push_back(d.spec.completion_key);
    } else {
      keys.push_back(d.spec.answer_key);
    }
    if (!d.spec.id_key.empty()) keys.push_back(d.spec.id_key);
    RETURN_IF_ERROR(CheckFirstLineKeys(
        absl::StrCat(Where(p.index, p.stage), ": dataset \"", p.dataset, "\" (", d.spec.path, ")"),
        d.spec.path, keys));
  }
  return absl::OkStatus();
}

}  // namespace cohort
