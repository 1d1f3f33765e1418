// The IDX file format of MNIST and Fashion-MNIST, with the same checks and messages as
// src/handgrad/data/idx.py.
//
// Format (big-endian throughout):
//     bytes 0-1   zero
//     byte  2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
//     byte  3     number of dimensions d
//     d x int32   the size of each dimension
//     data        prod(sizes) items of the dtype, C order, and nothing after them
// So the magic number is 0x00000801 for a label file and 0x00000803 for an image file. Files may be
// gzip-compressed; that is recognised from the content (bytes 1f 8b), not the name.
#pragma once

#include "handgrad/tensor.hpp"

#include <optional>
#include <string>

namespace handgrad::idx {

constexpr uint32_t LABELS_MAGIC = 0x00000801;
constexpr uint32_t IMAGES_MAGIC = 0x00000803;

// A decoded IDX array: its dtype code, shape and the items converted to double (exact for every
// IDX dtype), or kept as bytes for uint8 (the images), which would otherwise take 8x the memory.
struct Array {
    uint8_t code = 0x08;
    Shape shape;
    std::vector<uint8_t> bytes;   // uint8 items (code 0x08)
    std::vector<double> values;   // every other dtype, in native form
    int64_t numel() const { return Tensor::count(shape); }
    double at(int64_t i) const { return code == 0x08 ? bytes[i] : values[i]; }
};

std::string describe_magic(uint32_t magic);  // "0x00000803 (uint8, 3-D)"
// Decode IDX bytes (already decompressed); `where` names the file in errors; `magic`, when given,
// is the exact magic number the file must have.
Array parse_idx(const std::vector<uint8_t>& data, const std::string& where, std::optional<uint32_t> magic = {});
// Read a raw or gzip IDX file, checking the header against the size.
Array read_idx(const std::string& path, std::optional<uint32_t> magic = {});
// Write float32 (code 0x0D) or int32 (code 0x0C) values as an uncompressed IDX file.
void write_idx_float32(const std::string& path, const Tensor& array);
void write_idx_int32(const std::string& path, const std::vector<int32_t>& values, const Shape& shape);

// Images (uint8, N x rows x cols) and labels (uint8, N) that agree: equal counts, labels < num_classes.
struct Pair {
    Array images;
    std::vector<int64_t> labels;
};
Pair load_idx_pair(const std::string& images_path, const std::string& labels_path, int num_classes = 10);

}  // namespace handgrad::idx
