# COHORT_WITH_CUDA: the CUDA runtime and NCCL (weights/nccl_transport), and
# the GPU paths of model/ that need a LibTorch built with CUDA.
#
# Finds the CUDA toolkit (CUDAToolkit_ROOT, default /usr/local/cuda) and NCCL
# (NCCL_ROOT, else next to the toolkit: /usr/local/cuda/lib, lib64, or a pip
# nvidia-nccl package given as NCCL_ROOT). No .cu files: nothing here needs
# nvcc, so CI compiles this option with clang alone.
#
# Defines:
#   cohort::cuda_nccl        INTERFACE target: cudart + NCCL, headers as SYSTEM
#   COHORT_TORCH_HAS_CUDA    ON when the LibTorch found has CUDA (torch_cuda /
#                            c10_cuda); then cohort_model_cuda compiles the
#                            CUDA-graph decoder for real, otherwise as a stub
#                            whose calls return Unimplemented.
find_package(CUDAToolkit REQUIRED)
find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
  HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_LIBRARY_DIR}
        ${CUDAToolkit_LIBRARY_DIR}/..
  PATH_SUFFIXES lib lib64)
if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
  message(FATAL_ERROR "COHORT_WITH_CUDA: NCCL not found (nccl.h: ${NCCL_INCLUDE_DIR}, "
                      "libnccl: ${NCCL_LIBRARY}); set NCCL_ROOT to the folder holding "
                      "include/nccl.h and lib/libnccl.so")
endif()
message(STATUS "cohort: CUDA ${CUDAToolkit_VERSION} (${CUDAToolkit_INCLUDE_DIRS}), "
               "NCCL ${NCCL_LIBRARY}")
add_library(cohort_cuda_nccl INTERFACE)
add_library(cohort::cuda_nccl ALIAS cohort_cuda_nccl)
target_include_directories(cohort_cuda_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR}
                                                              ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(cohort_cuda_nccl INTERFACE CUDA::cudart ${NCCL_LIBRARY})

set(COHORT_TORCH_HAS_CUDA OFF)
if(COHORT_WITH_TORCH AND (TARGET torch_cuda OR TARGET c10_cuda))
  set(COHORT_TORCH_HAS_CUDA ON)
endif()
message(STATUS "cohort: LibTorch with CUDA: ${COHORT_TORCH_HAS_CUDA}")
