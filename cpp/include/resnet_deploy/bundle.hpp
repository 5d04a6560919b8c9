// Reading a resnet-deploy bundle: manifest.json (input, preprocessing, files with kind/precision/target tags,
// and the build records of TensorRT plans).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace resnet_deploy {

// Bad input the user can fix (a path, an option, an image): the command prints one line and exits 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The Python side's resnet_deploy.preprocess.Preprocessing, as recorded in the manifest.
struct Preprocessing {
  int crop_height = 224;
  int crop_width = 224;
  int resize = 256;  // shorter side after resizing, before the center crop
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  double scale = 1.0 / 255.0;
  std::string interpolation = "bilinear";
};

struct Artifact {
  std::string name;
  std::string kind;
  std::string precision;
  std::string target;
  std::string compute_capability;  // TensorRT plans only, e.g. "9.0"
};

// What the loader needs from a plan's build record, manifest["engines"]["plans"][<plan name>].
struct PlanRecord {
  // Built with --version-compat (BuilderFlag::kVERSION_COMPATIBLE): the plan embeds TensorRT's lean runtime, host
  // code that the runtime loads only when told to trust it (IRuntime::setEngineHostCodeAllowed(true)).
  bool version_compat = false;
  std::string tensorrt;  // the TensorRT version that built it ("" when not recorded)
};

struct Bundle {
  std::string dir;
  std::string arch;
  int num_classes = 0;
  // manifest["classes"]["names"]: one name per class index (empty when the bundle records none: print the index).
  std::vector<std::string> class_names;
  std::string input_name;
  std::vector<int64_t> input_shape;  // -1 for the dynamic batch
  std::string output_name;
  Preprocessing preprocessing;
  std::vector<Artifact> files;
  std::map<std::string, PlanRecord> plans;  // by plan file name; a plan without a record is absent
  // What `resnet-deploy bench` found fastest here, per runtime: manifest["recommended"][device]["latency"]
  // ["cpp"][runtime]["artifact"] (older bundles: ["by_backend"][backend]), keyed "device/runtime" (e.g.
  // "cpu/onnxruntime", "gpu/tensorrt").
  std::map<std::string, std::string> recommended;

  std::string path(const std::string& name) const { return dir + "/" + name; }
  // The name of a class, or "" when the bundle has none.
  const std::string& class_name(size_t index) const {
    static const std::string none;
    return index < class_names.size() ? class_names[index] : none;
  }
  // The build record of a plan, or nullptr when the manifest has none (e.g. a bundle exported before it was built).
  const PlanRecord* plan_record(const std::string& name) const {
    const auto it = plans.find(name);
    return it == plans.end() ? nullptr : &it->second;
  }
  // Whether the TensorRT runtime may load host code from this plan: only when its record says version_compat (a plan
  // without a record gets the runtime's default, false).
  bool plan_allows_host_code(const std::string& name) const {
    const PlanRecord* r = plan_record(name);
    return r != nullptr && r->version_compat;
  }
  // The recommended artifact for a runtime on a device, or nullptr when bench recorded none (or the file is gone).
  const Artifact* recommended_artifact(const std::string& device, const std::string& backend) const {
    const auto it = recommended.find(device + "/" + backend);
    if (it == recommended.end()) return nullptr;
    for (const auto& a : files) {
      if (a.name == it->second) return &a;
    }
    return nullptr;
  }
  // Files matching the tags (an empty tag matches anything), in manifest order.
  std::vector<Artifact> find(const std::string& kind, const std::string& precision = "",
                             const std::string& target = "") const;
};

// Reads DIR/manifest.json; throws UserError when the folder is no bundle or the manifest lacks a key.
Bundle load_bundle(const std::string& dir);

}  // namespace resnet_deploy
