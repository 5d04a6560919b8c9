// Device memory of the TensorRT backend: one cudaMalloc'd block that grows on demand. A header of its own so that
// tests/test_cpp_device_buffer.py can compile it against a stand-in CUDA runtime (cpp/tests/stub_cuda): the
// project's machines have no GPU and no CUDA library to link.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace resnet_deploy {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;

  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;  // one owner: a copy would free the block twice
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  // At least n bytes (the contents are not kept). The old block is freed and ptr / bytes reset before cudaMalloc, so
  // a failed allocation leaves an empty buffer, not a freed pointer that the next call or the destructor would use.
  void reserve(size_t n) {
    if (n <= bytes) return;
    release();
    void* block = nullptr;
    check_cuda(cudaMalloc(&block, n), "cudaMalloc");
    ptr = block;
    bytes = n;
  }

  void release() {
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
  }
};

}  // namespace resnet_deploy
