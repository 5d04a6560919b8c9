// DeviceBuffer against the stand-in CUDA runtime (stub_cuda/): a failed cudaMalloc must leave no dangling pointer.
// Built and run by tests/test_cpp_device_buffer.py; prints "device_buffer: ok" and exits 0 when every check holds.
#include <cstdio>
#include <string>

#include "device_buffer.hpp"

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "line %d: check failed: %s\n", __LINE__, #cond); \
      return 1;                                                           \
    }                                                                     \
  } while (0)

int main() {
  {
    resnet_deploy::DeviceBuffer buf;
    buf.reserve(64);
    CHECK(buf.ptr != nullptr && buf.bytes == 64);
    void* first = buf.ptr;
    buf.reserve(32);  // big enough already: the block is kept
    CHECK(buf.ptr == first && buf.bytes == 64);

    stub_cuda::fail_next_malloc = true;
    bool threw = false;
    try {
      buf.reserve(128);
    } catch (const std::runtime_error& e) {
      threw = std::string(e.what()).find("cudaMalloc: out of memory") != std::string::npos;
    }
    CHECK(threw);
    CHECK(buf.ptr == nullptr && buf.bytes == 0);  // the freed block is not kept
    CHECK(stub_cuda::live().empty());

    buf.reserve(16);  // a smaller request after the failure allocates afresh, not "fits" into the freed block
    CHECK(buf.ptr != nullptr && buf.bytes == 16);
  }
  CHECK(stub_cuda::live().empty());  // the destructor freed the last block ...
  CHECK(stub_cuda::bad_frees == 0);  // ... and nothing was freed twice
  std::puts("device_buffer: ok");
  return 0;
}
