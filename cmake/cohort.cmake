# Shared build helpers for cohort targets.

# Warnings for project code. Third-party headers come in as SYSTEM includes
# so their warnings do not fail the build.
function(cohort_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter
                                           -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(COHORT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# cohort_library(NAME SRCS a.cc b.cc DEPS x y [PUBLIC_DEPS ...])
function(cohort_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
  cohort_warnings(${name})
endfunction()

# cohort_binary(NAME SRCS main.cc DEPS x y)
function(cohort_binary name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  cohort_warnings(${name})
endfunction()

# cohort_test(NAME SRCS foo_test.cc DEPS lib [LABELS l] [TIMEOUT s])
# Registers each gtest case with ctest. Tests can find the repository via
# COHORT_SOURCE_DIR and the build tree via COHORT_BINARY_DIR.
function(cohort_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT COHORT_TESTS)
    return()
  endif()
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  # Test helpers (core/testing/) are included by path from any test.
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    COHORT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    COHORT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  cohort_warnings(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()
