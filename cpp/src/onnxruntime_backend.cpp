#include <onnxruntime_cxx_api.h>

#include <sstream>

#include "resnet_deploy/backend.hpp"
#include "resnet_deploy/bundle.hpp"

namespace resnet_deploy {
namespace {

class OnnxRuntimeBackend : public Backend {
 public:
  OnnxRuntimeBackend(const std::string& model_path, int threads)
      : env_(ORT_LOGGING_LEVEL_ERROR, "resnet_deploy"), model_path_(model_path) {
    Ort::SessionOptions options;
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (threads > 0) {
      options.SetIntraOpNumThreads(threads);
      options.SetInterOpNumThreads(1);
    }
    // Spinning threads keep cores busy between runs and distort any other work on small machines.
    options.AddConfigEntry("session.intra_op.allow_spinning", "0");
    options.AddConfigEntry("session.inter_op.allow_spinning", "0");
    try {
      session_ = std::make_unique<Ort::Session>(env_, model_path.c_str(), options);
    } catch (const Ort::Exception& e) {
      throw UserError("ONNX Runtime cannot load '" + model_path + "': " + first_line(e.what()));
    }
    Ort::AllocatorWithDefaultOptions alloc;
    input_name_ = session_->GetInputNameAllocated(0, alloc).get();
    output_name_ = session_->GetOutputNameAllocated(0, alloc).get();
    input_type_ = session_->GetInputTypeInfo(0).GetTensorTypeAndShapeInfo().GetElementType();
    if (input_type_ != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && input_type_ != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
      throw UserError("'" + model_path + "' takes input element type " + std::to_string(input_type_) +
                      ": only float32 and float16 inputs are supported");
    }
  }

  std::vector<float> infer(const std::vector<float>& input, const std::vector<int64_t>& shape) override {
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Float16_t> half;
    Ort::Value in{nullptr};
    if (input_type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
      half.reserve(input.size());
      for (float v : input) half.emplace_back(v);
      in = Ort::Value::CreateTensor<Ort::Float16_t>(mem, half.data(), half.size(), shape.data(), shape.size());
    } else {
      in = Ort::Value::CreateTensor<float>(mem, const_cast<float*>(input.data()), input.size(), shape.data(),
                                           shape.size());
    }
    const char* in_names[] = {input_name_.c_str()};
    const char* out_names[] = {output_name_.c_str()};
    auto outputs = session_->Run(Ort::RunOptions{nullptr}, in_names, &in, 1, out_names, 1);
    auto info = outputs[0].GetTensorTypeAndShapeInfo();
    const size_t n = info.GetElementCount();
    std::vector<float> out(n);
    if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
      const auto* p = outputs[0].GetTensorData<Ort::Float16_t>();
      for (size_t i = 0; i < n; ++i) out[i] = p[i].ToFloat();
    } else {
      const float* p = outputs[0].GetTensorData<float>();
      std::copy(p, p + n, out.begin());
    }
    return out;
  }

  std::string describe() const override {
    std::ostringstream s;
    s << "onnxruntime " << Ort::GetVersionString() << " (CPU) " << model_path_;
    return s.str();
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  Ort::Env env_;
  std::string model_path_;
  std::unique_ptr<Ort::Session> session_;
  std::string input_name_, output_name_;
  ONNXTensorElementDataType input_type_ = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& model_path, int threads) {
  return std::make_unique<OnnxRuntimeBackend>(model_path, threads);
}

}  // namespace resnet_deploy
