# COHORT_MODEL_ONLY: the torch-free core libraries the model library needs
# (cohort_base, cohort_safetensors), defined without the rest of core/ so
# that a model-only build needs no gRPC, Protobuf, yaml-cpp, PCRE2, utf8proc,
# OpenSSL or cpp-httplib: only abseil, nlohmann_json, LibTorch (and GTest for
# the tests). Used by scripts/device/gpu_check.sh on a GPU machine where
# only a few packages can be carried, and by scripts/ci_cuda_build.sh.
#
# The source lists are read from core/CMakeLists.txt, so the two stay one.
function(_cohort_core_srcs target out)
  file(READ ${PROJECT_SOURCE_DIR}/core/CMakeLists.txt text)
  string(REGEX MATCH "cohort_library\\(${target}[ \t\r\n]+SRCS[ \t]+([^\n]*)" match "${text}")
  if(NOT match)
    message(FATAL_ERROR "COHORT_MODEL_ONLY: no 'cohort_library(${target} SRCS ...' line in "
                        "core/CMakeLists.txt")
  endif()
  string(REGEX REPLACE "[ \t]+" ";" names "${CMAKE_MATCH_1}")
  set(srcs)
  foreach(n ${names})
    if(n MATCHES "\\.cc$")
      list(APPEND srcs ${PROJECT_SOURCE_DIR}/core/${n})
    endif()
  endforeach()
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()

_cohort_core_srcs(cohort_base _base_srcs)
cohort_library(cohort_base
  SRCS ${_base_srcs}
  PUBLIC_DEPS absl::status absl::statusor absl::strings absl::str_format
              absl::synchronization absl::time
  DEPS nlohmann_json::nlohmann_json)
_cohort_core_srcs(cohort_safetensors _st_srcs)
cohort_library(cohort_safetensors
  SRCS ${_st_srcs}
  PUBLIC_DEPS absl::status absl::statusor
  DEPS absl::strings nlohmann_json::nlohmann_json)
