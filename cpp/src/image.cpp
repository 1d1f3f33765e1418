// Images for predict, prepared as Python's load_image (mirrors src/handgrad/app/cli.py).
#include "handgrad/image.hpp"

#include "handgrad/idx.hpp"

#include <stb_image.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string_view>

namespace handgrad::image {

namespace detail {
// The most one stb_image allocation may take while decoding the current image (set by Decoding).
thread_local size_t allocation_limit = 0;
thread_local bool allocation_refused = false;

void* bounded_realloc(void* pointer, size_t size) {
    if (size > allocation_limit) {
        allocation_refused = true;
        return nullptr;
    }
    return std::realloc(pointer, size);
}
void bounded_free(void* pointer) { std::free(pointer); }
}  // namespace detail

namespace {
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// -- resampling, as Pillow's Resample.c ------------------------------------------------------------

double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return std::sin(x) / x;
}

double filter_weight(Filter filter, double x) {
    if (filter == Filter::box) return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;  // Lanczos: a sinc windowed by a 3x wider sinc
}

// Which inputs each output pixel reads (first, count) and with what weights (ksize per output).
struct Weights {
    int64_t ksize = 0;
    std::vector<int64_t> first, count;
    std::vector<double> k;
};

// Pillow's precompute_coeffs: output xx is centred on input coordinate (xx + 0.5) * scale; when
// shrinking, the filter is stretched by the scale so that every input pixel contributes.
Weights weights(int64_t in_size, int64_t out_size, Filter filter) {
    // Pillow holds the source box in float: the scale of a size above 2^24 rounds as it does there
    const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
    const double filterscale = std::max(scale, 1.0);
    const double support = (filter == Filter::box ? 0.5 : 3.0) * filterscale;
    Weights w;
    w.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    w.first.resize(out_size);
    w.count.resize(out_size);
    w.k.assign(static_cast<size_t>(out_size * w.ksize), 0.0);
    for (int64_t xx = 0; xx < out_size; ++xx) {
        const double center = (static_cast<double>(xx) + 0.5) * scale;
        const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
        const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
        double* k = &w.k[xx * w.ksize];
        double total = 0.0;
        for (int64_t x = 0; x < xmax; ++x) total += k[x] = filter_weight(filter, (static_cast<double>(x + xmin) - center + 0.5) / filterscale);
        if (total != 0.0)
            for (int64_t x = 0; x < xmax; ++x) k[x] /= total;
        w.first[xx] = xmin;
        w.count[xx] = std::max<int64_t>(xmax, 0);
    }
    return w;
}

// 8-bit images: weights in 22-bit fixed point, each sum started at one half (so that the shift
// rounds) and clamped to 0..255. Float images: weights and sums in double, stored as float.
template <class T>
struct Arithmetic;
template <>
struct Arithmetic<uint8_t> {
    using Weight = int64_t;
    static constexpr int BITS = 32 - 8 - 2;
    static Weight weight(double k) {
        const double fixed = k < 0 ? -0.5 + k * (1 << BITS) : 0.5 + k * (1 << BITS);
        return static_cast<int32_t>(std::clamp<double>(fixed, INT32_MIN, INT32_MAX));  // in range for any real filter
    }
    static int64_t start() { return int64_t{1} << (BITS - 1); }
    static uint8_t finish(int64_t sum) { return static_cast<uint8_t>(std::clamp<int64_t>(sum >> BITS, 0, 255)); }
};
template <>
struct Arithmetic<float> {
    using Weight = double;
    static Weight weight(double k) { return k; }
    static double start() { return 0.0; }
    static float finish(double sum) { return static_cast<float>(sum); }
};

// out[i] = sum_j in[first_i + j] * k_ij along one axis: `lines` lines of `length` inputs, `step`
// elements apart, each line `line_step` elements after the last. Lines [line0, line0 + lines).
template <class T>
std::vector<T> resample_axis(const T* in, const Weights& w, int64_t lines, int64_t out_size, int channels,
                             int64_t step, int64_t line_step, int64_t out_step, int64_t out_line_step) {
    using A = Arithmetic<T>;
    std::vector<typename A::Weight> k(w.k.size());
    std::transform(w.k.begin(), w.k.end(), k.begin(), A::weight);
    std::vector<T> out(static_cast<size_t>(lines * out_size * channels));
    for (int64_t line = 0; line < lines; ++line)
        for (int64_t i = 0; i < out_size; ++i)
            for (int c = 0; c < channels; ++c) {
                const T* p = in + line * line_step + w.first[i] * step + c;
                auto sum = A::start();
                for (int64_t j = 0; j < w.count[i]; ++j) sum += p[j * step] * k[i * w.ksize + j];
                out[line * out_line_step + i * out_step + c] = A::finish(sum);
            }
    return out;
}

// Pillow's ImagingResampleInner: the horizontal pass over the rows the vertical pass reads, then
// the vertical pass; an axis whose size does not change is not resampled.
template <class T>
std::vector<T> resample_planes(const std::vector<T>& pixels, int64_t width, int64_t height, int channels,
                               int64_t out_width, int64_t out_height, Filter filter) {
    if (Tensor::count({width, height, channels}) != static_cast<int64_t>(pixels.size()) || out_width < 1 || out_height < 1)
        throw HandgradError("image.resample", "expected " + std::to_string(width) + " x " + std::to_string(height) +
                                                  " x " + std::to_string(channels) + " pixels and an output size >= 1");
    Weights vertical = weights(height, out_height, filter);
    std::vector<T> rows = pixels;
    int64_t row_count = height;
    if (out_width != width) {
        const int64_t first_row = vertical.first[0];
        row_count = vertical.first[out_height - 1] + vertical.count[out_height - 1] - first_row;
        for (auto& f : vertical.first) f -= first_row;
        rows = resample_axis(pixels.data() + first_row * width * channels, weights(width, out_width, filter), row_count,
                             out_width, channels, channels, width * channels, channels, out_width * channels);
    }
    if (out_height == height) return rows;
    const int64_t C = channels;
    return resample_axis(rows.data(), vertical, out_width, out_height, channels, out_width * C, C, out_width * C, C);
}

// -- container walks: PNG chunks and JPEG segments, checked before stb_image sees the data -----------

uint32_t be32(const uint8_t* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }
uint32_t be16(const uint8_t* p) { return uint32_t{p[0]} << 8 | p[1]; }

// A chunk name or byte run from the file, safe to print in a one-line message.
std::string printable(const uint8_t* p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += p[i] >= 0x20 && p[i] < 0x7F ? static_cast<char>(p[i]) : '?';
    return s;
}

// Pillow's fallback when no EXIF orientation is found: the regex tiff:Orientation(="|>)([0-9]).
int xmp_orientation(std::string_view xmp) {
    constexpr std::string_view tag = "tiff:Orientation";
    for (size_t at = xmp.find(tag); at != std::string_view::npos; at = xmp.find(tag, at + 1)) {
        const std::string_view rest = xmp.substr(at + tag.size());
        const size_t skip = rest.substr(0, 2) == "=\"" ? 2 : rest.substr(0, 1) == ">" ? 1 : 0;
        if (skip && rest.size() > skip && rest[skip] >= '0' && rest[skip] <= '9') return rest[skip] - '0';
    }
    return 0;
}

// What the walk learns: the size, the orientation, whether a PNG is 16-bit greyscale, and how many
// bytes of compressed image data the file holds.
struct Header {
    int64_t width = 0, height = 0;
    int orientation = 1;
    bool grey16 = false;
    uint64_t raw_bytes = 0;  // the decoded size a PNG's header declares (scanlines and filter bytes)
    uint64_t compressed_bytes = 0;
};

constexpr uint8_t PNG_SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

Header scan_png(const Bytes& b, const std::string& where) {
    auto corrupt = [&](const std::string& why) { return HandgradError(where, "corrupt or truncated PNG: " + why); };
    Header h;
    std::string_view exif, xmp;
    bool seen_header = false;
    for (size_t at = sizeof PNG_SIGNATURE;;) {
        if (b.size() - at < 12) throw corrupt("the file ends at byte " + std::to_string(b.size()) + ", before the IEND chunk");
        const uint32_t length = be32(&b[at]);
        const std::string type = printable(&b[at + 4], 4);
        const std::string chunk = "chunk '" + type + "' at byte " + std::to_string(at);
        if (length > b.size() - at - 12)
            throw corrupt(chunk + " declares " + std::to_string(length) + " bytes, past the end of the file");
        const uint8_t* data = &b[at + 8];
        if (crc32(0, &b[at + 4], length + 4) != be32(data + length)) throw corrupt(chunk + " fails its CRC check");
        if (!seen_header && type != "IHDR") throw corrupt("the first chunk is '" + type + "', expected IHDR");
        if (type == "IHDR") {
            if (length != 13) throw corrupt("the IHDR chunk holds " + std::to_string(length) + " bytes, expected 13");
            h.width = be32(data);
            h.height = be32(data + 4);
            const int depth = data[8], colour = data[9];
            const int channels = colour == 2 ? 3 : colour == 4 ? 2 : colour == 6 ? 4 : 1;
            h.grey16 = colour == 0 && depth == 16;
            h.raw_bytes = static_cast<uint64_t>(h.height) *
                          (1 + (static_cast<uint64_t>(h.width) * static_cast<uint64_t>(channels * depth) + 7) / 8);
            seen_header = true;
        } else if (type == "IDAT") {
            h.compressed_bytes += length;
        } else if (type == "eXIf" && exif.empty()) {
            exif = {reinterpret_cast<const char*>(data), length};
        } else if (type == "iTXt" && length > 18 && std::memcmp(data, "XML:com.adobe.xmp\0", 18) == 0 && data[18] == 0) {
            // keyword, compression flag 0 (uncompressed), method, language tag and translated keyword, then the text
            size_t text = 20;
            for (int field = 0; field < 2 && text <= length; ++field)
                while (text < length && data[text++] != 0) {
                }
            if (text < length) xmp = {reinterpret_cast<const char*>(data + text), length - text};
        } else if (type == "IEND") {
            break;
        }
        at += 12 + size_t{length};
    }
    if (!h.compressed_bytes) throw corrupt("no IDAT chunk: the file holds no image data");
    h.orientation = exif_orientation(reinterpret_cast<const uint8_t*>(exif.data()), exif.size());
    if (!h.orientation) h.orientation = xmp_orientation(xmp);
    return h;
}

// Huffman tables (DHT) each declare at most 256 codes and fit their segment: stb_image 2.27 builds
// a table of more codes past the end of its arrays.
void check_huffman_tables(const uint8_t* data, size_t size, size_t offset, const std::function<HandgradError(std::string)>& corrupt) {
    for (size_t p = 0; p < size;) {
        const int table_class = data[p] >> 4, id = data[p] & 15;
        if (table_class > 1 || id > 3 || size - p < 17)
            throw corrupt("the Huffman table at byte " + std::to_string(offset + p) + " has a bad header");
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += data[p + i];
        if (codes > 256 || size - p - 17 < codes)
            throw corrupt("the Huffman table at byte " + std::to_string(offset + p) + " declares " + std::to_string(codes) +
                          " codes; expected at most 256, within its segment");
        p += 17 + codes;
    }
}

// Every segment, from the start-of-image marker to the end-of-image marker, stepping over each
// scan's entropy-coded data (which ends at the first FF followed by neither 00 nor a restart code).
Header scan_jpeg(const Bytes& b, const std::string& where) {
    const std::function<HandgradError(std::string)> corrupt = [&](const std::string& why) {
        return HandgradError(where, "corrupt or truncated JPEG: " + why);
    };
    Header h;
    std::string_view exif, xmp;
    bool frame = false;
    size_t first_scan = 0;
    for (size_t at = 2;;) {
        if (at >= b.size() || b[at] != 0xFF)
            throw corrupt(at >= b.size() ? "the file ends before its end-of-image marker: it is cut short"
                                         : "expected a marker at byte " + std::to_string(at));
        while (at < b.size() && b[at] == 0xFF) ++at;  // fill bytes
        if (at >= b.size()) throw corrupt("the file ends before its end-of-image marker: it is cut short");
        const uint8_t code = b[at++];
        if (code == 0x01 || (code >= 0xD0 && code <= 0xD8)) continue;  // markers without a length
        if (code == 0xD9) {
            if (!first_scan) throw corrupt("the end-of-image marker comes before any scan");
            break;
        }
        if (b.size() - at < 2) throw corrupt("the file ends inside the segment at byte " + std::to_string(at - 2));
        const size_t length = be16(&b[at]);
        if (length < 2 || length > b.size() - at)
            throw corrupt("the segment at byte " + std::to_string(at - 2) + " declares " + std::to_string(length) +
                          " bytes, past the end of the file");
        const uint8_t* data = &b[at + 2];
        const size_t size = length - 2;
        const std::string_view text(reinterpret_cast<const char*>(data), size);
        if (code == 0xE1 && text.substr(0, 6) == std::string_view("Exif\0\0", 6) && exif.empty()) exif = text;
        if (code == 0xE1 && text.substr(0, 29) == std::string_view("http://ns.adobe.com/xap/1.0/\0", 29)) xmp = text.substr(29);
        if (code == 0xC4) check_huffman_tables(data, size, at + 2, corrupt);
        if (code >= 0xC0 && code <= 0xCF && code != 0xC4 && code != 0xC8 && code != 0xCC) {  // a frame header (SOFn)
            if (size < 6) throw corrupt("the frame header holds " + std::to_string(size) + " bytes, expected at least 6");
            h.height = be16(data + 1);
            h.width = be16(data + 3);
            frame = true;
        }
        at += length;
        if (code == 0xDA) {  // a scan: its entropy-coded data follows the header
            if (!frame) throw corrupt("a scan comes before the frame header");
            if (!first_scan) first_scan = at;
            while (at + 1 < b.size() && !(b[at] == 0xFF && b[at + 1] != 0 && (b[at + 1] < 0xD0 || b[at + 1] > 0xD7))) ++at;
            if (at + 1 >= b.size()) throw corrupt("the file ends inside the scan data: it is cut short");
        }
    }
    h.compressed_bytes = b.size() - first_scan;
    h.orientation = exif_orientation(reinterpret_cast<const uint8_t*>(exif.data()), exif.size());
    if (!h.orientation) h.orientation = xmp_orientation(xmp);
    return h;
}

// -- decoded pixels --------------------------------------------------------------------------------

// An image's pixels, row-major: 8-bit RGBA, or one float channel (16-bit greyscale and PGM above 255).
struct Pixels {
    int64_t width = 0, height = 0;
    std::vector<uint8_t> rgba;
    std::vector<float> grey;
};

// Decode with stb_image, every allocation bounded by what the declared size needs.
Pixels decode(const Bytes& b, const Header& h, const std::string& where, const char* format) {
    struct Limit {  // every stb_image allocation while decoding this image is capped
        explicit Limit(size_t bytes) {
            detail::allocation_limit = bytes;
            detail::allocation_refused = false;
        }
        ~Limit() { detail::allocation_limit = 0; }
    } limit(2 * b.size() + 16 * static_cast<size_t>(h.width * h.height) + (size_t{1} << 20));
    Pixels p;
    int w = 0, ht = 0, channels = 0;
    void* data = h.grey16 ? static_cast<void*>(stbi_load_16_from_memory(b.data(), static_cast<int>(b.size()), &w, &ht, &channels, 1))
                          : static_cast<void*>(stbi_load_from_memory(b.data(), static_cast<int>(b.size()), &w, &ht, &channels, 4));
    if (!data) {
        std::string reason = stbi_failure_reason() ? stbi_failure_reason() : "unknown error";
        if (detail::allocation_refused)
            reason = "its compressed data expands past what the declared " + std::to_string(h.width) + " x " +
                     std::to_string(h.height) + " pixels need";
        else if (!h.grey16 && std::string_view(format) == "JPEG" && reason.find("PNG") != std::string::npos)
            reason = "Corrupt JPEG: its tables or frame header do not decode";  // stb_image tried PNG last
        throw HandgradError(where, std::string("cannot decode the ") + format + ": " + reason);
    }
    std::unique_ptr<void, void (*)(void*)> owner(data, stbi_image_free);
    p.width = w;
    p.height = ht;
    if (w != h.width || ht != h.height)
        throw HandgradError(where, std::string("cannot decode the ") + format + ": it decodes to " + std::to_string(w) + " x " +
                                       std::to_string(ht) + " pixels, its header declares " + std::to_string(h.width) +
                                       " x " + std::to_string(h.height));
    const size_t n = static_cast<size_t>(w) * static_cast<size_t>(ht);
    if (h.grey16) {
        const auto* v = static_cast<const uint16_t*>(data);
        p.grey.assign(v, v + n);
    } else {
        const auto* v = static_cast<const uint8_t*>(data);
        p.rgba.assign(v, v + 4 * n);
    }
    return p;
}

// Binary (P5) or ASCII (P2) PGM, as Pillow reads it: maxval 255 as is, a smaller one scaled to
// 0..255 (rounded), a larger one scaled to 0..65535 and read as a 16-bit image.
Pixels read_pgm(const Bytes& b, const std::string& where) {
    auto corrupt = [&](const std::string& why) { return HandgradError(where, "corrupt or truncated PGM: " + why); };
    size_t at = 2;
    auto number = [&]() -> int64_t {
        for (;;) {  // whitespace and # comments
            while (at < b.size() && std::isspace(b[at])) ++at;
            if (at >= b.size() || b[at] != '#') break;
            while (at < b.size() && b[at] != '\n' && b[at] != '\r') ++at;
        }
        const size_t start = at;
        int64_t v = 0;
        while (at < b.size() && std::isdigit(b[at]) && v < (int64_t{1} << 40)) v = 10 * v + (b[at++] - '0');
        if (at == start || (at < b.size() && !std::isspace(b[at])))
            throw corrupt(at >= b.size() ? "the file ends early" : "expected a number at byte " + std::to_string(start));
        return v;
    };
    const int64_t width = number(), height = number(), maxval = number();
    if (width < 1 || height < 1 || width > MAX_IMAGE_PIXELS || height > MAX_IMAGE_PIXELS || width * height > MAX_IMAGE_PIXELS)
        throw corrupt("the header declares " + std::to_string(width) + " x " + std::to_string(height) +
                      " pixels; expected 1 to " + std::to_string(MAX_IMAGE_PIXELS));
    if (maxval < 1 || maxval > 65535) throw corrupt("maxval " + std::to_string(maxval) + ", expected 1 to 65535");
    if (at >= b.size()) throw corrupt("the header ends early");
    const bool binary = b[1] == '5', wide = maxval > 255;
    const uint64_t pixels = static_cast<uint64_t>(width * height), left = b.size() - ++at;
    // a binary pixel takes 1 or 2 bytes, an ASCII one a digit and a separator (the last no separator)
    if (binary ? left < pixels * (wide ? 2 : 1) : left + 1 < 2 * pixels)
        throw corrupt(std::to_string(width) + " x " + std::to_string(height) + " pixels cannot fit in the " +
                      std::to_string(left) + " bytes after the header");
    const double top = wide ? 65535.0 : 255.0;
    Pixels p{.width = width, .height = height};
    if (wide) p.grey.resize(pixels);
    else p.rgba.resize(4 * pixels, 255);
    for (uint64_t i = 0; i < pixels; ++i) {
        const int64_t v = !binary ? number() : wide ? be16(&b[at + 2 * i]) : b[at + i];
        if (v > maxval)
            throw corrupt("pixel " + std::to_string(i) + " is " + std::to_string(v) + ", above maxval " + std::to_string(maxval));
        const double scaled = maxval == top ? static_cast<double>(v) : std::nearbyint(static_cast<double>(v) / static_cast<double>(maxval) * top);
        if (wide) p.grey[i] = static_cast<float>(scaled);
        else std::fill_n(&p.rgba[4 * i], 3, static_cast<uint8_t>(scaled));
    }
    return p;
}

// ImageOps.exif_transpose: output pixel (x, y) comes from input pixel source(x, y).
template <class T>
std::vector<T> orient(const std::vector<T>& in, int64_t& width, int64_t& height, int channels, int orientation) {
    if (orientation < 2 || orientation > 8) return in;
    const int64_t W = width, H = height;
    const bool swap = orientation >= 5;
    const int64_t out_w = swap ? H : W, out_h = swap ? W : H;
    std::vector<T> out(in.size());
    for (int64_t y = 0; y < out_h; ++y)
        for (int64_t x = 0; x < out_w; ++x) {
            int64_t sx = x, sy = y;
            switch (orientation) {
                case 2: sx = W - 1 - x; break;                   // mirrored left-right
                case 3: sx = W - 1 - x, sy = H - 1 - y; break;   // rotated 180
                case 4: sy = H - 1 - y; break;                   // mirrored top-bottom
                case 5: sx = y, sy = x; break;                   // transposed
                case 6: sx = y, sy = H - 1 - x; break;           // rotated 90 clockwise
                case 7: sx = W - 1 - y, sy = H - 1 - x; break;   // transversed
                default: sx = W - 1 - y, sy = x; break;          // 8: rotated 90 counter-clockwise
            }
            std::copy_n(&in[(sy * W + sx) * channels], channels, &out[(y * out_w + x) * channels]);
        }
    width = out_w;
    height = out_h;
    return out;
}

// Pillow's L: ITU-R 601-2 luma in 16-bit fixed point, rounded.
uint8_t luminance(const uint8_t* rgb) {
    return static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

// Is the ink dark? The alpha-weighted mean luminance of the image box-filtered to at most 64 x 64
// (in premultiplied alpha, as Pillow resizes RGBA), below 128.
bool ink_is_dark(const std::vector<uint8_t>& rgba, int64_t width, int64_t height) {
    const int64_t w = std::min<int64_t>(width, 64), h = std::min<int64_t>(height, 64);
    std::vector<uint8_t> small = rgba;
    if (w != width || h != height) {
        for (size_t i = 0; i < small.size(); i += 4)
            for (int c = 0; c < 3; ++c) {  // Pillow's MULDIV255: a * alpha / 255, rounded
                const uint32_t t = small[i + c] * uint32_t{small[i + 3]} + 128;
                small[i + c] = static_cast<uint8_t>(((t >> 8) + t) >> 8);
            }
        small = resample_planes(small, width, height, 4, w, h, Filter::box);
        for (size_t i = 0; i < small.size(); i += 4)
            if (const uint32_t alpha = small[i + 3]; alpha != 0 && alpha != 255)
                for (int c = 0; c < 3; ++c) small[i + c] = static_cast<uint8_t>(std::min<uint32_t>(255 * small[i + c] / alpha, 255));
    }
    double weighted = 0.0, total = 0.0;
    for (size_t i = 0; i < small.size(); i += 4) {
        weighted += static_cast<double>(luminance(&small[i])) * small[i + 3];
        total += small[i + 3];
    }
    return (total > 0 ? weighted / total : 0.0) < 128.0;
}

// Pillow's _gray for 8-bit images: transparent parts composited (Image.alpha_composite, in its
// integer arithmetic) onto white when the ink is dark, onto black when it is light; then luminance.
// An opaque pixel comes through unchanged, so an image without alpha is simply its luminance.
std::vector<uint8_t> grey_of(const std::vector<uint8_t>& rgba, int64_t width, int64_t height) {
    const uint32_t background = ink_is_dark(rgba, width, height) ? 255 : 0;
    std::vector<uint8_t> grey(rgba.size() / 4);
    for (size_t i = 0; i < grey.size(); ++i) {
        const uint8_t* p = &rgba[4 * i];
        const uint32_t alpha = p[3];
        // out = (src * alpha + background * (255 - alpha)) / 255 with 7 extra bits, rounded
        const uint32_t coef1 = alpha * 255 * 255 * 128 / (alpha * 255 + 255 * (255 - alpha)), coef2 = 255 * 128 - coef1;
        uint8_t rgb[3];
        for (int c = 0; c < 3; ++c) {
            const uint32_t t = p[c] * coef1 + background * coef2 + (0x80 << 7);
            rgb[c] = alpha == 0 ? static_cast<uint8_t>(background) : static_cast<uint8_t>((((t >> 8) + t) >> 8) >> 7);
        }
        grey[i] = luminance(rgb);
    }
    return grey;
}

// Inverted when the border is light; repeated over the input's channels.
Tensor model_input(std::vector<float> x, const Shape& shape) {
    const int64_t H = shape[1], W = shape[2];
    double border = 0;
    for (int64_t j = 0; j < W; ++j) border += x[j] + x[(H - 1) * W + j];
    for (int64_t i = 0; i < H; ++i) border += x[i * W] + x[i * W + W - 1];
    if (border / static_cast<double>(2 * (H + W)) > 0.5)
        for (float& v : x) v = 1.0f - v;
    Tensor out({shape[0], H, W});
    for (int64_t c = 0; c < shape[0]; ++c) std::copy(x.begin(), x.end(), out.ptr() + c * H * W);
    return out;
}

Bytes read_file(const std::string& path) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (fs::is_directory(status)) throw HandgradError(path, "is a folder, expected an image file");
    if (!fs::exists(status)) throw HandgradError(path, "no such image file");
    // a device or a pipe could be endless: only files of a known size are read
    if (!fs::is_regular_file(status)) throw HandgradError(path, "is not a regular file, expected an image file");
    if (fs::file_size(path, ec) >= (uintmax_t{1} << 31)) throw HandgradError(path, "the image file is larger than 2 GiB");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw HandgradError(path, std::string("cannot read the image: ") + std::strerror(errno));
    return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

enum class Format { png, jpeg, pgm, idx, unknown };
Format format_of(const Bytes& b) {
    if (b.size() >= 8 && std::equal(PNG_SIGNATURE, PNG_SIGNATURE + 8, b.begin())) return Format::png;
    if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return Format::jpeg;
    if (b.size() >= 2 && b[0] == 'P' && (b[1] == '2' || b[1] == '5')) return Format::pgm;
    if (b.size() >= 2 && ((b[0] == 0 && b[1] == 0) || (b[0] == 0x1F && b[1] == 0x8B))) return Format::idx;
    return Format::unknown;
}

void check_input_shape(const Shape& shape, const std::string& where) {
    if (shape.size() != 3 || shape[0] < 1 || shape[1] < 1 || shape[2] < 1 || shape[1] * shape[2] > MAX_IMAGE_PIXELS)
        throw HandgradError(where, "cannot make an input of shape " + fmt_shape(shape) + " from an image: expected (C, H, W) "
                                   "with H x W at most " + std::to_string(MAX_IMAGE_PIXELS) + " pixels");
}

Tensor image_from_bytes(const Bytes& b, Format format, const std::string& where, const Shape& shape) {
    Pixels p;
    if (format == Format::pgm) {
        p = read_pgm(b, where);
    } else {
        const char* name = format == Format::png ? "PNG" : "JPEG";
        const Header h = format == Format::png ? scan_png(b, where) : scan_jpeg(b, where);
        const uint64_t pixels = static_cast<uint64_t>(h.width) * static_cast<uint64_t>(h.height);  // each below 2^32
        if (pixels < 1 || pixels > MAX_IMAGE_PIXELS)
            throw HandgradError(where, "the image has " + std::to_string(h.width) + " x " + std::to_string(h.height) + " = " +
                                           std::to_string(pixels) + " pixels; expected 1 to the limit of " +
                                           std::to_string(MAX_IMAGE_PIXELS));
        // Deflate expands a byte to at most 1032; a JPEG block of 64 pixels takes at least a bit.
        // A header that declares more than its data could hold is refused before anything is allocated.
        const uint64_t most = format == Format::png ? 1032 * h.compressed_bytes + 4096 : 512 * h.compressed_bytes + 4096;
        const uint64_t needs = format == Format::png ? h.raw_bytes : static_cast<uint64_t>(h.width * h.height);
        if (needs > most)
            throw HandgradError(where, std::string("corrupt or truncated ") + name + ": the header declares " +
                                           std::to_string(h.width) + " x " + std::to_string(h.height) + " pixels, more than its " +
                                           std::to_string(h.compressed_bytes) + " bytes of compressed data can hold");
        p = decode(b, h, where, name);
        if (p.grey.empty()) p.rgba = orient(p.rgba, p.width, p.height, 4, h.orientation);
        else p.grey = orient(p.grey, p.width, p.height, 1, h.orientation);
    }
    const int64_t H = shape[1], W = shape[2];
    std::vector<float> x(static_cast<size_t>(H * W));
    if (p.grey.empty()) {  // 8-bit: luminance, resized in fixed point, then / 255
        const std::vector<uint8_t> grey = resample_planes(grey_of(p.rgba, p.width, p.height), p.width, p.height, 1, W, H, Filter::lanczos);
        std::transform(grey.begin(), grey.end(), x.begin(), [](uint8_t v) { return static_cast<float>(v) / 255.0f; });
    } else {  // 16-bit: v / 255 when no value exceeds 255, else v / 65535, resized in float
        const float top = *std::max_element(p.grey.begin(), p.grey.end()) <= 255.0f ? 255.0f : 65535.0f;
        for (float& v : p.grey) v /= top;
        x = resample_planes(p.grey, p.width, p.height, 1, W, H, Filter::lanczos);
    }
    for (float& v : x) v = std::clamp(v, 0.0f, 1.0f);
    return model_input(std::move(x), shape);
}

const char* KNOWN = "expected a PNG, JPEG, PGM (P2 or P5) or IDX file";

}  // namespace

std::vector<uint8_t> resample(const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int channels,
                              int64_t out_width, int64_t out_height, Filter filter) {
    return resample_planes(pixels, width, height, channels, out_width, out_height, filter);
}

std::vector<float> resample(const std::vector<float>& pixels, int64_t width, int64_t height, int64_t out_width,
                            int64_t out_height, Filter filter) {
    return resample_planes(pixels, width, height, 1, out_width, out_height, filter);
}

int exif_orientation(const uint8_t* data, size_t size) {
    if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) data += 6, size -= 6;
    if (size < 8) return 0;
    const bool little = data[0] == 'I' && data[1] == 'I';
    if (!little && !(data[0] == 'M' && data[1] == 'M')) return 0;
    auto u16 = [&](size_t at) { return little ? uint32_t{data[at]} | uint32_t{data[at + 1]} << 8 : be16(data + at); };
    auto u32 = [&](size_t at) { return little ? u16(at) | u16(at + 2) << 16 : be32(data + at); };
    if (u16(2) != 42) return 0;
    const size_t ifd = u32(4);
    if (ifd > size - 2) return 0;
    const size_t entries = u16(ifd);
    for (size_t i = 0; i < entries && ifd + 2 + 12 * (i + 1) <= size; ++i) {
        const size_t entry = ifd + 2 + 12 * i;  // tag, type, count, then the value itself when it fits in 4 bytes
        if (u16(entry) != 0x0112) continue;
        const uint32_t type = u16(entry + 2), count = u32(entry + 4);
        if (count != 1) return 0;
        const uint32_t value = type == 1 ? data[entry + 8] : type == 3 ? u16(entry + 8) : type == 4 ? u32(entry + 8) : 0;
        return value >= 1 && value <= 8 ? static_cast<int>(value) : 0;
    }
    return 0;
}

Tensor load_image(const std::string& path, const Shape& input_shape) {
    check_input_shape(input_shape, path);
    const Bytes bytes = read_file(path);
    const Format format = format_of(bytes);
    if (format == Format::unknown || format == Format::idx)
        throw HandgradError(path, std::string("not an image: ") + KNOWN + " (the file starts with '" +
                                      printable(bytes.data(), std::min<size_t>(bytes.size(), 8)) + "')");
    return image_from_bytes(bytes, format, path, input_shape);
}

std::vector<Tensor> load_images(const std::string& path, const Shape& input_shape) {
    check_input_shape(input_shape, path);
    const Bytes bytes = read_file(path);
    const Format format = format_of(bytes);
    if (format == Format::unknown)
        throw HandgradError(path, std::string("not an image: ") + KNOWN + " (the file starts with '" +
                                      printable(bytes.data(), std::min<size_t>(bytes.size(), 8)) + "')");
    if (format != Format::idx) return {image_from_bytes(bytes, format, path, input_shape)};
    const idx::Array a = idx::read_idx(path);
    const int64_t per = input_shape[1] * input_shape[2];
    if (a.numel() % per || a.numel() == 0)
        throw HandgradError(path, "IDX images of shape " + fmt_shape(a.shape) + " do not fit the input " + fmt_shape(input_shape));
    const double scale = a.code == 0x08 ? 255.0 : 1.0;
    std::vector<Tensor> images;
    for (int64_t s = 0; s < a.numel() / per; ++s) {
        std::vector<float> x(static_cast<size_t>(per));
        for (int64_t i = 0; i < per; ++i) x[i] = static_cast<float>(a.at(s * per + i) / scale);
        images.push_back(model_input(std::move(x), input_shape));
    }
    return images;
}

}  // namespace handgrad::image
