// Images for `predict`, prepared as Python's load_image (src/handgrad/app/cli.py) prepares them:
// PNG and JPEG decoded by stb_image (Debian's libstb-dev), binary and ASCII PGM, and IDX files.
//
// The steps, each as Pillow computes it, so both sides feed the model the same pixels:
//     1. turned upright by the EXIF orientation (JPEG APP1 "Exif", PNG eXIf), else by the XMP
//        tiff:Orientation, as ImageOps.exif_transpose
//     2. one channel: a 16-bit greyscale image as floats v / 65535 (v / 255 when no value exceeds
//        255); any other image as 8-bit luminance L = (19595 R + 38470 G + 7471 B + 2^15) >> 16,
//        after compositing its transparent parts onto white when the ink (the alpha-weighted mean
//        luminance of a box-filtered copy at most 64x64) is dark, onto black when it is light
//     3. resized to the input's H x W with Pillow's two-pass Lanczos filter (fixed point for 8-bit)
//     4. x = L / 255, clipped to [0, 1]; inverted (1 - x) when the border's mean exceeds 0.5, since
//        the datasets hold light digits on black; repeated over the input's channels
// PNG and PGM give Pillow's pixels exactly. JPEG is the one step that differs: stb_image's IDCT and
// colour conversion are not libjpeg's, so a JPEG's pixels can differ from Pillow's by a level of 255
// (1/255 at most, measured by tests/test_cpp_predict.py).
#pragma once

#include "handgrad/tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace handgrad::image {

// The largest image decoded (8192 x 8192), as Python's MAX_IMAGE_PIXELS; checked before decoding.
constexpr int64_t MAX_IMAGE_PIXELS = int64_t{1} << 26;

// Pillow's resampling filters: a weight function and its support (half-width) in input pixels.
enum class Filter { box, lanczos };

// Resize row-major pixels of `channels` interleaved 8-bit channels from width x height to
// out_width x out_height, bit for bit as Pillow's Image.resize: separable, horizontal pass first,
// each output the filter-weighted sum of its inputs with weights normalised to sum to 1 and held
// in 22-bit fixed point, rounded and clamped to 0..255 after each pass.
std::vector<uint8_t> resample(const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int channels,
                              int64_t out_width, int64_t out_height, Filter filter);
// The same for one float channel (Pillow's mode "F"): weights and sums in double, stored as float.
std::vector<float> resample(const std::vector<float>& pixels, int64_t width, int64_t height, int64_t out_width,
                            int64_t out_height, Filter filter);

// The EXIF orientation (1-8) in a TIFF-structured EXIF block (an optional "Exif\0\0" prefix, then
// the II/MM header and IFD0), or 0 when the block holds none or is malformed. Reads only inside
// the block; offsets pointing outside it count as malformed.
int exif_orientation(const uint8_t* data, size_t size);

// The file at path as the model sees it: (C, H, W) float32 for input_shape (C, H, W). PNG, JPEG or
// PGM, recognised by their first bytes. Any failure raises HandgradError naming the file.
Tensor load_image(const std::string& path, const Shape& input_shape);
// load_image for a PNG, JPEG or PGM; each image of an IDX file (uint8 values / 255, others as
// stored), inverted when their border is light, as an image is.
std::vector<Tensor> load_images(const std::string& path, const Shape& input_shape);

}  // namespace handgrad::image
