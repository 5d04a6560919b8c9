// The image pipeline of resnet_deploy/preprocess.py, reproduced bit for bit:
// decode to RGB -> resize the shorter side (PIL's antialiased bilinear or bicubic) -> center crop -> scale,
// normalise -> CHW.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "resnet_deploy/bundle.hpp"

namespace resnet_deploy {

// 8-bit RGB pixels, row-major, 3 bytes per pixel.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Decodes PNG, JPEG, BMP, GIF, TGA, PNM (stb_image) to RGB; alpha is dropped as PIL's convert("RGB") does.
// Throws UserError naming the file when it cannot be decoded.
RgbImage decode_image(const std::string& path);

// PIL's Image.resize(size, Image.BILINEAR): a separable triangle filter whose support grows with the
// downscale factor (antialiasing), fixed-point coefficients, horizontal pass first, 8-bit between passes.
RgbImage resize_bilinear(const RgbImage& in, int out_width, int out_height);

// The same resampling with PIL's filter named `interpolation`: "bilinear" (triangle, support 1) or "bicubic"
// (Keys' cubic with a = -0.5, support 2; negative lobes clamp to [0, 255] as in PIL).
RgbImage resize(const RgbImage& in, int out_width, int out_height, const std::string& interpolation);

// (width, height) after resizing the shorter side to `shorter` (torchvision's rounding, as resized_size).
std::pair<int, int> resized_size(int width, int height, int shorter);

// The full pipeline for one decoded image: CHW float32 of size 3 * crop_height * crop_width.
std::vector<float> preprocess(const RgbImage& image, const Preprocessing& pre);

}  // namespace resnet_deploy
