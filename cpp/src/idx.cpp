// IDX reading with every check of src/handgrad/data/idx.py, word for word where it can be.
#include "handgrad/idx.hpp"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

namespace handgrad::idx {
namespace {

struct DType {
    const char* name;
    int itemsize;
};
const std::map<uint8_t, DType> DTYPES = {{0x08, {"uint8", 1}},   {0x09, {"int8", 1}},    {0x0B, {"int16", 2}},
                                         {0x0C, {"int32", 4}},   {0x0D, {"float32", 4}}, {0x0E, {"float64", 8}}};

std::string hex(uint32_t v, int digits) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%0*X", digits, v);
    return buf;
}

uint32_t big_endian_u32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Whether data starts as an IDX file does: two zero bytes, a known dtype, at least one dimension.
bool idx_magic(const std::vector<uint8_t>& data) {
    return data.size() >= 4 && data[0] == 0 && data[1] == 0 && DTYPES.count(data[2]) && data[3] != 0;
}

// The bytes the IDX header at the start of data declares in all (header and items), saturating at
// UINT64_MAX; 0 while the header is incomplete.
uint64_t declared_size(const std::vector<uint8_t>& data) {
    if (!idx_magic(data)) return 0;
    const auto dtype = DTYPES.find(data[2]);
    const uint64_t header = 4 + 4 * uint64_t{data[3]};
    if (data.size() < header) return 0;
    uint64_t bytes = static_cast<uint64_t>(dtype->second.itemsize);
    for (size_t i = 0; i < data[3]; ++i) {
        const uint64_t size = big_endian_u32(data.data() + 4 + 4 * i);
        bytes = size == 0 ? 0 : bytes > (UINT64_MAX - header) / size ? UINT64_MAX - header : bytes * size;
    }
    return header + bytes;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw HandgradError(path, std::string("cannot read the IDX file: ") + std::strerror(errno));
    std::vector<uint8_t> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
    // gzip: inflate with zlib (windowBits 15 + 32 detects the gzip header), never past what the
    // IDX header inside declares: a small file cannot make the reader allocate more than that
    z_stream z{};
    if (inflateInit2(&z, 15 + 32) != Z_OK) throw HandgradError(path, "cannot start zlib");
    std::vector<uint8_t> out;
    std::vector<uint8_t> chunk(1 << 20);
    z.next_in = raw.data();
    z.avail_in = static_cast<uInt>(raw.size());
    int status = Z_OK;
    uint64_t declared = 0;
    while (status != Z_STREAM_END) {
        z.next_out = chunk.data();
        z.avail_out = static_cast<uInt>(chunk.size());
        status = inflate(&z, Z_NO_FLUSH);
        if (status != Z_OK && status != Z_STREAM_END) break;
        out.insert(out.end(), chunk.data(), chunk.data() + (chunk.size() - z.avail_out));
        if (out.size() >= 4 && !idx_magic(out)) {  // not an IDX header: parse_idx names the fault
            inflateEnd(&z);
            return out;
        }
        if (!declared) declared = declared_size(out);
        if (declared && out.size() > declared) {
            inflateEnd(&z);
            throw HandgradError(path, "the gzip data holds more than the " + std::to_string(declared) +
                                          " bytes its IDX header declares; expected exactly that many");
        }
        if (status == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
            status = Z_DATA_ERROR;
            break;
        }
    }
    inflateEnd(&z);
    if (status != Z_STREAM_END)
        throw HandgradError(path, std::string("corrupt or truncated gzip data (") + (z.msg ? z.msg : "unexpected end") +
                                      "); delete the file and fetch it again");
    return out;
}

}  // namespace

std::string describe_magic(uint32_t magic) {
    auto it = DTYPES.find((magic >> 8) & 0xFF);
    const std::string kind = it != DTYPES.end() ? it->second.name : "unknown dtype";
    return hex(magic, 8) + " (" + kind + ", " + std::to_string(magic & 0xFF) + "-D)";
}

Array parse_idx(const std::vector<uint8_t>& data, const std::string& where, std::optional<uint32_t> magic) {
    if (data.size() < 4)
        throw HandgradError(where, "too short for an IDX file: " + std::to_string(data.size()) +
                                       " bytes, the header alone needs at least 4");
    const uint32_t got = big_endian_u32(data.data());
    if (data[0] != 0 || data[1] != 0) {
        const std::string expected = magic ? describe_magic(*magic)
                                           : describe_magic(LABELS_MAGIC) + " for labels or " +
                                                 describe_magic(IMAGES_MAGIC) + " for images";
        throw HandgradError(where, "bad magic number " + hex(got, 8) + ", expected " + expected +
                                       ": an IDX file starts with two zero bytes, then the dtype code and the "
                                       "number of dimensions");
    }
    const uint8_t code = data[2], ndim = data[3];
    auto dtype = DTYPES.find(code);
    if (dtype == DTYPES.end()) {
        std::string known;
        for (auto& [c, d] : DTYPES) known += (known.empty() ? "" : ", ") + hex(c, 2) + " " + d.name;
        throw HandgradError(where, "unknown dtype code " + hex(code, 2) + " in magic number " + hex(got, 8) +
                                       "; expected one of " + known);
    }
    if (ndim == 0)
        throw HandgradError(where, "magic number " + hex(got, 8) + " declares 0 dimensions, expected at least 1");
    if (magic && got != *magic) {
        const std::string kind = *magic == LABELS_MAGIC ? "a labels file"
                                 : *magic == IMAGES_MAGIC ? "an images file" : "this file";
        const bool swapped = (got == LABELS_MAGIC && *magic == IMAGES_MAGIC) ||
                             (got == IMAGES_MAGIC && *magic == LABELS_MAGIC);
        throw HandgradError(where, "magic number " + describe_magic(got) + ", expected " + describe_magic(*magic) +
                                       " for " + kind + (swapped ? "; are the images and labels files swapped?" : ""));
    }
    const size_t header = 4 + 4 * size_t{ndim};
    if (data.size() < header)
        throw HandgradError(where, "truncated header: " + std::to_string(ndim) + " dimensions need " +
                                       std::to_string(header) + " header bytes, the file holds " +
                                       std::to_string(data.size()));
    Array array;
    array.code = code;
    std::string dims;
    for (size_t i = 0; i < ndim; ++i) {
        array.shape.push_back(big_endian_u32(data.data() + 4 + 4 * i));
        dims += (i ? " x " : "") + std::to_string(array.shape.back());
    }
    // the declared size, saturated rather than overflowed: a size past the file's is a truncation
    const uint64_t expected = declared_size(data) - header, body = data.size() - header;
    const std::string declared = expected == UINT64_MAX - header ? "more than 2^64" : std::to_string(expected);
    if (body < expected)
        throw HandgradError(where, "truncated: the header declares " + dims + " " + dtype->second.name + " = " +
                                       declared + " data bytes, the file holds " + std::to_string(body) + " (" +
                                       (expected == UINT64_MAX - header ? declared : std::to_string(expected - body)) +
                                       " missing)");
    if (body > expected)
        throw HandgradError(where, std::to_string(body - expected) + " trailing bytes: the header declares " + dims +
                                       " " + dtype->second.name + " = " + declared + " data bytes, the file holds " +
                                       std::to_string(body));
    const uint8_t* p = data.data() + header;
    if (code == 0x08) {
        array.bytes.assign(p, p + expected);
        return array;
    }
    array.values.resize(array.numel());
    const int size = dtype->second.itemsize;
    for (int64_t i = 0; i < array.numel(); ++i, p += size) {
        uint64_t bits = 0;
        for (int b = 0; b < size; ++b) bits = (bits << 8) | p[b];  // big-endian
        switch (code) {
            case 0x09: array.values[i] = static_cast<int8_t>(bits); break;
            case 0x0B: array.values[i] = static_cast<int16_t>(bits); break;
            case 0x0C: array.values[i] = static_cast<int32_t>(bits); break;
            case 0x0D: { uint32_t u = static_cast<uint32_t>(bits); float f; std::memcpy(&f, &u, 4); array.values[i] = f; break; }
            default: { double d; std::memcpy(&d, &bits, 8); array.values[i] = d; break; }
        }
    }
    return array;
}

Array read_idx(const std::string& path, std::optional<uint32_t> magic) { return parse_idx(read_bytes(path), path, magic); }

namespace {
void write_header(std::ofstream& f, uint8_t code, const Shape& shape) {
    const uint8_t head[4] = {0, 0, code, static_cast<uint8_t>(shape.size())};
    f.write(reinterpret_cast<const char*>(head), 4);
    for (int64_t s : shape) {
        const uint8_t b[4] = {uint8_t(s >> 24), uint8_t(s >> 16), uint8_t(s >> 8), uint8_t(s)};
        f.write(reinterpret_cast<const char*>(b), 4);
    }
}
void write_be32(std::ofstream& f, uint32_t u) {
    const uint8_t b[4] = {uint8_t(u >> 24), uint8_t(u >> 16), uint8_t(u >> 8), uint8_t(u)};
    f.write(reinterpret_cast<const char*>(b), 4);
}
}  // namespace

void write_idx_float32(const std::string& path, const Tensor& array) {
    std::ofstream f(path, std::ios::binary);
    if (!f) throw HandgradError(path, "cannot write the IDX file");
    write_header(f, 0x0D, array.shape);
    for (float v : array.data) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        write_be32(f, u);
    }
}

void write_idx_int32(const std::string& path, const std::vector<int32_t>& values, const Shape& shape) {
    std::ofstream f(path, std::ios::binary);
    if (!f) throw HandgradError(path, "cannot write the IDX file");
    write_header(f, 0x0C, shape);
    for (int32_t v : values) write_be32(f, static_cast<uint32_t>(v));
}

Pair load_idx_pair(const std::string& images_path, const std::string& labels_path, int num_classes) {
    Pair pair{read_idx(images_path, IMAGES_MAGIC), {}};
    const Array labels = read_idx(labels_path, LABELS_MAGIC);
    if (labels.shape[0] != pair.images.shape[0])
        throw HandgradError(labels_path, "holds " + std::to_string(labels.shape[0]) + " labels but the images file " +
                                             images_path + " holds " + std::to_string(pair.images.shape[0]) +
                                             " images; expected equal counts");
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < labels.numel(); ++i)
        if (labels.bytes[i] >= num_classes) bad++, first_bad = first_bad < 0 ? i : first_bad;
    if (bad)
        throw HandgradError(labels_path, "label " + std::to_string(labels.bytes[first_bad]) + " at index " +
                                             std::to_string(first_bad) + " is out of range (" + std::to_string(bad) +
                                             " such labels); expected 0 to " + std::to_string(num_classes - 1));
    pair.labels.assign(labels.bytes.begin(), labels.bytes.end());
    return pair;
}

}  // namespace handgrad::idx
