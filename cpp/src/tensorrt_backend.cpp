// TensorRT backend: deserializes a bundle's plan and runs it with enqueueV3.
// Written against the TensorRT 10/11 C++ API (named I/O tensors). Only syntax-checked against the 10.16 and 11.1
// headers, never linked or run: the project's machines have no GPU and no TensorRT libraries (see docs/deploy.md).
#include "resnet_deploy/backend.hpp"
#include "resnet_deploy/bundle.hpp"

#ifdef RESNET_DEPLOY_WITH_TENSORRT

#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>

#include "device_buffer.hpp"

namespace resnet_deploy {
namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

size_t element_size(nvinfer1::DataType t) { return t == nvinfer1::DataType::kHALF ? 2 : 4; }

std::string dims_text(const nvinfer1::Dims& d) {
  std::string s = "[";
  for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? "," : "") + std::to_string(d.d[i]);
  return s + "]";
}

class TensorRTBackend : public Backend {
 public:
  TensorRTBackend(const std::string& plan_path, bool allow_host_code) : plan_path_(plan_path) {
    std::ifstream f(plan_path, std::ios::binary);
    if (!f) throw UserError("cannot read TensorRT plan '" + plan_path + "'");
    std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw std::runtime_error("TensorRT createInferRuntime failed");
    // A version-compatible plan carries TensorRT's lean runtime, which is host code run from the plan; the runtime
    // refuses it unless told to trust the plan (the default is false). Only plans recorded as such get this.
    if (allow_host_code) runtime_->setEngineHostCodeAllowed(true);
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) {
      throw UserError("TensorRT cannot deserialize '" + plan_path +
                      "': plans are tied to the GPU model and TensorRT version they were built with" +
                      (allow_host_code ? std::string()
                                       : std::string(" (a --version-compat plan also needs version_compat: true in "
                                                     "its manifest record)")) +
                      "; rebuild it on this machine with resnet-deploy build");
    }
    context_.reset(engine_->createExecutionContext());
    if (!context_) {  // returns nullptr (no exception) on failure, as NVIDIA's samples check
      throw UserError("TensorRT could not create an execution context for '" + plan_path +
                      "' (see the TensorRT messages above; e.g. too little free GPU memory)");
    }
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
        if (input_name_.empty()) input_name_ = name;
      } else if (output_name_.empty()) {
        output_name_ = name;
      }
    }
    input_type_ = engine_->getTensorDataType(input_name_.c_str());
    output_type_ = engine_->getTensorDataType(output_name_.c_str());
    for (auto t : {input_type_, output_type_}) {
      if (t != nvinfer1::DataType::kFLOAT && t != nvinfer1::DataType::kHALF) {
        throw UserError("'" + plan_path + "' has I/O tensors that are neither float32 nor float16");
      }
    }
    check_cuda(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~TensorRTBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::vector<float> infer(const std::vector<float>& input, const std::vector<int64_t>& shape) override {
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) dims.d[i] = shape[i];
    if (!context_->setInputShape(input_name_.c_str(), dims)) {
      // setInputShape returns false for any refusal (wrong rank or size, outside the profile, unknown name): say what
      // was asked and what the profile allows, not a guess at the cause.
      std::string allowed;
      const nvinfer1::Dims lo = engine_->getProfileShape(input_name_.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
      const nvinfer1::Dims hi = engine_->getProfileShape(input_name_.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
      if (lo.nbDims > 0 && hi.nbDims > 0) allowed = " (its optimization profile allows " + dims_text(lo) + " to " +
                                                   dims_text(hi) + ")";
      throw UserError("TensorRT refused input shape " + dims_text(dims) + " for tensor '" + input_name_ + "' of '" +
                      plan_path_ + "'" + allowed);
    }
    const nvinfer1::Dims out_dims = context_->getTensorShape(output_name_.c_str());
    size_t out_count = 1;
    for (int i = 0; i < out_dims.nbDims; ++i) out_count *= static_cast<size_t>(out_dims.d[i]);

    std::vector<__half> half;
    const void* host_in = input.data();
    if (input_type_ == nvinfer1::DataType::kHALF) {
      half.reserve(input.size());
      for (float v : input) half.push_back(__float2half(v));
      host_in = half.data();
    }
    const size_t in_bytes = input.size() * element_size(input_type_);
    const size_t out_bytes = out_count * element_size(output_type_);
    in_.reserve(in_bytes);
    out_.reserve(out_bytes);
    check_cuda(cudaMemcpyAsync(in_.ptr, host_in, in_bytes, cudaMemcpyHostToDevice, stream_), "copy to device");
    for (const auto& [name, ptr] : {std::make_pair(&input_name_, in_.ptr), std::make_pair(&output_name_, out_.ptr)}) {
      if (!context_->setTensorAddress(name->c_str(), ptr)) {
        throw std::runtime_error("TensorRT refused the device address for tensor '" + *name + "'");
      }
    }
    if (!context_->enqueueV3(stream_)) throw std::runtime_error("TensorRT enqueueV3 failed");
    std::vector<float> out(out_count);
    if (output_type_ == nvinfer1::DataType::kHALF) {
      std::vector<__half> h(out_count);
      check_cuda(cudaMemcpyAsync(h.data(), out_.ptr, out_bytes, cudaMemcpyDeviceToHost, stream_), "copy to host");
      synchronize();
      for (size_t i = 0; i < out_count; ++i) out[i] = __half2float(h[i]);
    } else {
      check_cuda(cudaMemcpyAsync(out.data(), out_.ptr, out_bytes, cudaMemcpyDeviceToHost, stream_), "copy to host");
      synchronize();
    }
    return out;
  }

  void synchronize() override { check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  std::string describe() const override { return "tensorrt " + plan_path_; }

 private:
  Logger logger_;
  std::string plan_path_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::string input_name_, output_name_;
  nvinfer1::DataType input_type_{}, output_type_{};
  cudaStream_t stream_ = nullptr;
  DeviceBuffer in_, out_;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& plan_path, bool allow_host_code) {
  return std::make_unique<TensorRTBackend>(plan_path, allow_host_code);
}

bool tensorrt_available() { return true; }

// The compute capability of GPU 0 as "major.minor" (the tag resnet-deploy build writes on each plan).
std::string device_compute_capability() {
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return std::to_string(prop.major) + "." + std::to_string(prop.minor);
}

}  // namespace resnet_deploy

#else

namespace resnet_deploy {

std::unique_ptr<Backend> make_tensorrt_backend(const std::string&, bool) {
  throw UserError("this resnet_deploy_infer was built without TensorRT: rebuild with -DWITH_TENSORRT=ON");
}

bool tensorrt_available() { return false; }

std::string device_compute_capability() { return ""; }

}  // namespace resnet_deploy

#endif
