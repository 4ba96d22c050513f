# gpu_bench (docs/gpu.md): GPU figures as JSON lines; prints a skip line
# without CUDA. Included by bench/CMakeLists.txt and, in COHORT_MODEL_ONLY
# builds (which skip the other benchmarks), by the top-level CMakeLists.txt.
cohort_binary(gpu_bench SRCS ${PROJECT_SOURCE_DIR}/bench/gpu_bench.cc
  DEPS cohort_model cohort_checkpoint cohort_base nlohmann_json::nlohmann_json)
set_target_properties(gpu_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
if(COHORT_WITH_CUDA)
  target_compile_definitions(gpu_bench PRIVATE COHORT_BENCH_CUDART=1)
  target_link_libraries(gpu_bench PRIVATE cohort::cuda_nccl)
endif()
