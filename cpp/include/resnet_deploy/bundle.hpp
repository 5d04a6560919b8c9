// Reading a resnet-deploy bundle: manifest.json (input, preprocessing, files with kind/precision/target tags).
#pragma once

#include <array>
#include <cstdint>
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

struct Bundle {
  std::string dir;
  std::string arch;
  int num_classes = 0;
  std::string input_name;
  std::vector<int64_t> input_shape;  // -1 for the dynamic batch
  std::string output_name;
  Preprocessing preprocessing;
  std::vector<Artifact> files;

  std::string path(const std::string& name) const { return dir + "/" + name; }
  // Files matching the tags (an empty tag matches anything), in manifest order.
  std::vector<Artifact> find(const std::string& kind, const std::string& precision = "",
                             const std::string& target = "") const;
};

// Reads DIR/manifest.json; throws UserError when the folder is no bundle or the manifest lacks a key.
Bundle load_bundle(const std::string& dir);

}  // namespace resnet_deploy
