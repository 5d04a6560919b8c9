// A stand-in for CUDA's cuda_runtime_api.h, just enough for src/device_buffer.hpp: cudaMalloc takes host memory and
// fails on demand, cudaFree counts frees of pointers it never handed out (or already freed). For
// tests/test_cpp_device_buffer.py only; the real header comes with the CUDA toolkit.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <set>

typedef enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 } cudaError_t;

namespace stub_cuda {
inline bool fail_next_malloc = false;
inline int bad_frees = 0;
inline std::set<void*>& live() {
  static std::set<void*> blocks;
  return blocks;
}
}  // namespace stub_cuda

inline cudaError_t cudaMalloc(void** block, size_t size) {
  if (stub_cuda::fail_next_malloc) {
    stub_cuda::fail_next_malloc = false;
    return cudaErrorMemoryAllocation;
  }
  *block = std::malloc(size);
  stub_cuda::live().insert(*block);
  return cudaSuccess;
}

inline cudaError_t cudaFree(void* block) {
  if (stub_cuda::live().erase(block) == 0) {
    ++stub_cuda::bad_frees;
    return cudaErrorInvalidValue;
  }
  std::free(block);
  return cudaSuccess;
}

inline const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaErrorMemoryAllocation ? "out of memory" : err == cudaSuccess ? "no error" : "invalid argument";
}
