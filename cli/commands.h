// Subcommands of the `cohort` command. Each takes argv with argv[0] set to
// "cohort <name>" and returns the process exit code.
#ifndef COHORT_CLI_COMMANDS_H_
#define COHORT_CLI_COMMANDS_H_

namespace cohort::cli {

int RunMain(int argc, char** argv);        // run_cmd.cc
int ConfigMain(int argc, char** argv);     // config_cmd.cc
int TokenizeMain(int argc, char** argv);   // tokenize_cmd.cc
int RewardMain(int argc, char** argv);     // reward_cmd.cc
int HealthMain(int argc, char** argv);     // health_cmd.cc
int StatusMain(int argc, char** argv);     // status_cmd.cc
int TaskMain(int argc, char** argv);       // task_cmd.cc
int InitModelMain(int argc, char** argv);  // init_model_cmd.cc (LibTorch; the
                                           // cohort-init-model binary)
int EvalMain(int argc, char** argv);       // eval_cmd.cc (LibTorch; cohort-eval)
int ExportMain(int argc, char** argv);     // export_cmd.cc (LibTorch; cohort-export)

}  // namespace cohort::cli

#endif  // COHORT_CLI_COMMANDS_H_
