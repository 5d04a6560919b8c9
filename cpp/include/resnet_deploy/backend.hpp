// Inference backends: ONNX Runtime (CPU, always built) and TensorRT (built with -DWITH_TENSORRT=ON).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace resnet_deploy {

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs a float32 NCHW batch; returns the first output as float32, batch x num_classes. Never times itself.
  virtual std::vector<float> infer(const std::vector<float>& input, const std::vector<int64_t>& shape) = 0;
  // Waits for queued device work (no-op on CPU); call before reading the clock.
  virtual void synchronize() {}
  virtual std::string describe() const = 0;
};

// threads <= 0: ONNX Runtime's default. Thread spinning is off (see docs/deploy.md).
std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& model_path, int threads);

// Throws UserError when the binary was built without TensorRT. allow_host_code: the plan is version-compatible (its
// manifest record says version_compat), so the runtime may load the lean runtime embedded in it.
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& plan_path, bool allow_host_code);

bool tensorrt_available();

// "major.minor" of GPU 0 (empty without TensorRT support): picks the plan built for this GPU.
std::string device_compute_capability();

}  // namespace resnet_deploy
