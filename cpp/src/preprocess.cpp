#include "resnet_deploy/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <fstream>
#include <iterator>

#ifdef RESNET_DEPLOY_WITH_LIBJPEG
#include <jpeglib.h>
#endif

#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>

namespace resnet_deploy {
namespace {

// PIL's fixed-point precision for 8-bit resampling: 32 bits minus 8 for the result and 2 for overflow.
constexpr int kPrecisionBits = 32 - 8 - 2;

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// PIL's bicubic_filter: Keys' cubic convolution with a = -0.5, support 2.
double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// A PIL resampling filter: its kernel and its support (in input pixels, before widening for a downscale).
struct Filter {
  double (*kernel)(double);
  double support;
};

constexpr Filter kBilinear{triangle, 1.0};
constexpr Filter kBicubic{bicubic, 2.0};

// One axis of PIL's resampling: for every output pixel, the first input pixel, the count of input pixels
// and their fixed-point weights (ksize slots each).
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

Coefficients precompute(int in_size, int out_size, const Filter& filter) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = std::max(scale, 1.0);  // the kernel widens only when downscaling
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // C truncation toward zero, as PIL's "(int)(x + 0.5)" rounding
    int xmin = static_cast<int>(center - support + 0.5);
    xmin = std::max(xmin, 0);
    int xmax = static_cast<int>(center + support + 0.5);
    xmax = std::min(xmax, in_size) - xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = filter.kernel((x + xmin - center + 0.5) * ss);
      total += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[x] / total : k[x];
      const double fixed = w * (1 << kPrecisionBits);
      c.weights[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int v) {
  v >>= kPrecisionBits;  // arithmetic shift, as PIL's lookup table index
  return static_cast<uint8_t>(std::clamp(v, 0, 255));
}

RgbImage resample_horizontal(const RgbImage& in, int out_width, int row0, int rows, const Coefficients& c) {
  RgbImage out{out_width, rows, std::vector<uint8_t>(static_cast<size_t>(out_width) * rows * 3)};
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = &in.pixels[static_cast<size_t>(y + row0) * in.width * 3];
    uint8_t* dst = &out.pixels[static_cast<size_t>(y) * out_width * 3];
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      for (int ch = 0; ch < 3; ++ch) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < c.count[xx]; ++x) ss += src[(c.first[xx] + x) * 3 + ch] * k[x];
        dst[xx * 3 + ch] = clip8(ss);
      }
    }
  }
  return out;
}

RgbImage resample_vertical(const RgbImage& in, int out_height, int row_offset, const Coefficients& c) {
  RgbImage out{in.width, out_height, std::vector<uint8_t>(static_cast<size_t>(in.width) * out_height * 3)};
  const size_t stride = static_cast<size_t>(in.width) * 3;
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    const int ymin = c.first[yy] - row_offset;
    for (size_t i = 0; i < stride; ++i) {
      int ss = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y) ss += in.pixels[(ymin + y) * stride + i] * k[y];
      out.pixels[yy * stride + i] = clip8(ss);
    }
  }
  return out;
}

}  // namespace

namespace {

#ifdef RESNET_DEPLOY_WITH_LIBJPEG
// libjpeg reports errors through a callback that must not return: jump back to the decoder instead.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// JPEG through libjpeg(-turbo) with its defaults (islow IDCT, fancy upsampling), as PIL decodes it: the same
// pixels, where stb_image's own IDCT and upsampling differ by a level or two.
RgbImage decode_jpeg(const std::vector<unsigned char>& bytes, const std::string& path) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  RgbImage img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw UserError("cannot decode image '" + path + "': " + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img.width = static_cast<int>(cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = &img.pixels[static_cast<size_t>(cinfo.output_scanline) * img.width * 3];
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}
#endif

}  // namespace

RgbImage decode_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot decode image '" + path + "': cannot open the file");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
#ifdef RESNET_DEPLOY_WITH_LIBJPEG
  if (bytes.size() > 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return decode_jpeg(bytes, path);
#endif
  int w = 0, h = 0, channels = 0;
  stbi_uc* data = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &channels, 3);
  if (data == nullptr) {
    const char* why = stbi_failure_reason();
    throw UserError("cannot decode image '" + path + "': " + (why ? why : "unknown error") +
                    " (readable: PNG, JPEG, BMP, GIF, TGA, PNM)");
  }
  RgbImage img{w, h, std::vector<uint8_t>(data, data + static_cast<size_t>(w) * h * 3)};
  stbi_image_free(data);
  return img;
}

RgbImage resize(const RgbImage& in, int out_width, int out_height, const std::string& interpolation) {
  const Filter& filter = interpolation == "bicubic" ? kBicubic : kBilinear;
  const bool horizontal = out_width != in.width;
  const bool vertical = out_height != in.height;
  if (!horizontal && !vertical) return in;
  const Coefficients cv = precompute(in.height, out_height, filter);
  // Like PIL, the horizontal pass only covers the rows the vertical pass will read.
  const int row0 = cv.first.front();
  const int row_end = cv.first.back() + cv.count.back();
  if (!horizontal) return resample_vertical(in, out_height, 0, cv);
  RgbImage tmp = resample_horizontal(in, out_width, row0, row_end - row0, precompute(in.width, out_width, filter));
  if (!vertical) return tmp;
  return resample_vertical(tmp, out_height, row0, cv);
}

RgbImage resize_bilinear(const RgbImage& in, int out_width, int out_height) {
  return resize(in, out_width, out_height, "bilinear");
}

std::pair<int, int> resized_size(int width, int height, int shorter) {
  // Python: int(shorter * height / width): an exact integer product, a correctly rounded division, truncation.
  if (width <= height) {
    return {shorter, static_cast<int>(static_cast<double>(shorter) * height / width)};
  }
  return {static_cast<int>(static_cast<double>(shorter) * width / height), shorter};
}

namespace {
// Python's int(round(diff / 2.0)): round half to even.
int center_offset(int diff) {
  const int half = diff / 2;
  if (diff % 2 == 0) return half;
  return (half % 2 == 0) ? half : half + 1;  // diff / 2 = half + 0.5 (diff >= 0) rounds to the even neighbour
}
}  // namespace

std::vector<float> preprocess(const RgbImage& image, const Preprocessing& pre) {
  const auto [rw, rh] = resized_size(image.width, image.height, pre.resize);
  const RgbImage resized = resize(image, rw, rh, pre.interpolation);
  const int ch = pre.crop_height, cw = pre.crop_width;
  if (rw < cw || rh < ch) {
    throw UserError("resized image " + std::to_string(rw) + "x" + std::to_string(rh) + " is smaller than the crop " +
                    std::to_string(cw) + "x" + std::to_string(ch) + ": check the bundle's preprocessing");
  }
  const int top = center_offset(rh - ch);
  const int left = center_offset(rw - cw);
  std::vector<float> out(static_cast<size_t>(3) * ch * cw);
  const float scale = static_cast<float>(pre.scale);
  // float32 arithmetic in NumPy's order: (pixel * scale - mean) / std. Built with -ffp-contract=off, so no FMA.
  for (int y = 0; y < ch; ++y) {
    const uint8_t* row = &resized.pixels[(static_cast<size_t>(y + top) * rw + left) * 3];
    for (int x = 0; x < cw; ++x) {
      for (int c = 0; c < 3; ++c) {
        const float v = static_cast<float>(row[x * 3 + c]) * scale;
        out[(static_cast<size_t>(c) * ch + y) * cw + x] = (v - pre.mean[c]) / pre.std[c];
      }
    }
  }
  return out;
}

}  // namespace resnet_deploy
