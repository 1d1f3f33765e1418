// safetensors read/write and handgrad checkpoints (mirrors src/handgrad/serialization.py).
#include "handgrad/serialization.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string_view>

namespace handgrad {
namespace fs = std::filesystem;

namespace {

void atomic_write_bytes(const std::string& path, const std::string& data) {
    const fs::path target(path);
    if (target.has_parent_path()) fs::create_directories(target.parent_path());
    const fs::path tmp = target.parent_path() / ("." + target.filename().string() + ".tmp");
    {
        std::ofstream f(tmp, std::ios::binary);
        if (!f) throw HandgradError(path, "cannot write the checkpoint");
        f.write(data.data(), static_cast<std::streamsize>(data.size()));
        if (!f) throw HandgradError(path, "cannot write the checkpoint");
    }
    fs::rename(tmp, target);
}

}  // namespace

std::string py_dumps(const json& value) {
    if (value.is_object()) {
        std::string s = "{";
        bool first = true;
        for (auto& [k, v] : value.items()) {
            s += (first ? "" : ", ") + json(k).dump(-1, ' ', true) + ": " + py_dumps(v);
            first = false;
        }
        return s + "}";
    }
    if (value.is_array()) {
        std::string s = "[";
        for (size_t i = 0; i < value.size(); ++i) s += (i ? ", " : "") + py_dumps(value[i]);
        return s + "]";
    }
    if (value.is_number_float()) {
        const double d = value.get<double>();
        if (std::isnan(d)) return "NaN";
        if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    }
    return value.dump(-1, ' ', true);
}

void save_tensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata,
                  const std::vector<std::pair<std::string, int64_t>>& counts) {
    json header = json::object();
    if (!metadata.empty()) {
        json meta = json::object();
        for (auto& [k, v] : metadata) meta[k] = v;
        header["__metadata__"] = meta;
    }
    size_t offset = 0;
    for (auto& [name, t] : tensors) {
        const size_t bytes = t.data.size() * sizeof(float);
        header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    for (auto& [name, _] : counts) {
        header[name] = {{"dtype", "I64"}, {"shape", json::array()}, {"data_offsets", {offset, offset + 8}}};
        offset += 8;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned, as the library writes
    std::string out(8, '\0');
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    out += text;
    for (auto& [name, t] : tensors)  // float32 little-endian: this machine's layout (x86-64, ARM64)
        out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
    for (auto& [name, count] : counts) out.append(reinterpret_cast<const char*>(&count), sizeof count);  // little-endian
    atomic_write_bytes(path, out);
}

namespace {

// A list of integers >= minimum whose nonzero sizes multiply to at most max_elements: a shape that
// can be allocated for what the file holds, and whose products cannot overflow. nullopt otherwise.
std::optional<Shape> bounded_shape(const json& v, int64_t minimum, uint64_t max_elements) {
    if (!v.is_array() || v.size() > 16) return std::nullopt;
    Shape shape;
    uint64_t product = 1;
    for (const auto& d : v) {
        if (d.is_number_unsigned() ? d.get<uint64_t>() > max_elements : !d.is_number_integer()) return std::nullopt;
        const int64_t size = d.get<int64_t>();
        if (size < minimum) return std::nullopt;
        shape.push_back(size);
        if (size == 0) continue;
        if (product > max_elements / static_cast<uint64_t>(size)) return std::nullopt;
        product *= static_cast<uint64_t>(size);
    }
    return shape;
}

// How deeply lists and objects nest in JSON text (strings skipped). Copying and printing a parsed
// value recurse once per level, so deep nesting is refused before parsing, not met as a stack overflow.
constexpr int MAX_JSON_DEPTH = 64;
int json_depth(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

}  // namespace

TensorFile load_tensors(const std::string& path) {
    if (!fs::is_regular_file(path)) throw HandgradError(path, "no such checkpoint file");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw HandgradError(path, "cannot open the checkpoint for reading");
    std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto corrupt = [&](const std::string& why) {
        return HandgradError(path, "not a readable safetensors file (truncated or corrupt?): " + why);
    };
    if (raw.size() < 8) throw corrupt("shorter than the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
    if (n > raw.size() - 8) throw corrupt("the header length " + std::to_string(n) + " exceeds the file");
    if (json_depth(std::string_view(raw).substr(8, n)) > MAX_JSON_DEPTH)
        throw corrupt("the header nests lists and objects more than " + std::to_string(MAX_JSON_DEPTH) + " deep");
    json header;
    try {
        header = json::parse(raw.begin() + 8, raw.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    } catch (const json::exception& e) {
        throw corrupt(std::string("header is not JSON: ") + e.what());
    }
    if (!header.is_object()) throw corrupt("the header is " + describe(header) + ", expected a JSON object");
    const size_t data_start = 8 + n, data_size = raw.size() - data_start;
    TensorFile file;
    std::vector<std::pair<size_t, size_t>> order;  // (data offset, index into file.tensors)
    for (auto& [name, info] : header.items()) {
        if (name == "__metadata__") {
            if (!info.is_object()) throw corrupt("'__metadata__' is " + describe(info) + ", expected an object");
            for (auto& [k, v] : info.items()) {
                if (!v.is_string()) throw corrupt("metadata '" + k + "' is " + describe(v) + ", expected a string");
                file.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor '" + name + "'";
        if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
            throw corrupt(where + " is " + describe(info) + ", expected {\"dtype\", \"shape\", \"data_offsets\"}");
        const json &dtype_json = info["dtype"], &offsets = info["data_offsets"];
        const std::string dtype = dtype_json.is_string() ? dtype_json.get<std::string>() : describe(dtype_json);
        const bool integer = dtype == "I64" || dtype == "I32";
        const size_t itemsize = dtype == "F32" || dtype == "I32" ? 4 : dtype == "F64" || dtype == "I64" ? 8 : 0;
        if (!itemsize) throw HandgradError(path, where + " has dtype " + dtype + "; expected F32 or F64 (or a 0-d I64 count)");
        if (integer && !(info["shape"].is_array() && info["shape"].empty()))
            throw HandgradError(path, where + " has dtype " + dtype + " and shape " + describe(info["shape"]) +
                                          "; integer tensors are 0-d counts (shape [])");
        // the shape is checked against the bytes present before anything is allocated for it
        const auto shape = bounded_shape(info["shape"], 0, std::max<uint64_t>(data_size / itemsize, 1));
        if (!shape)
            throw corrupt(where + " has shape " + describe(info["shape"]) + "; expected a list of sizes >= 0 whose " +
                          dtype + " data fits in the file's " + std::to_string(data_size) + " data bytes");
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
            !offsets[1].is_number_unsigned())
            throw corrupt(where + " has data_offsets " + describe(offsets) + "; expected [begin, end]");
        const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
        if (end < begin || end > data_size || (end - begin) != static_cast<uint64_t>(Tensor::count(*shape)) * itemsize)
            throw corrupt(where + " of shape " + fmt_shape(*shape) + " does not fit its data offsets [" +
                          std::to_string(begin) + ", " + std::to_string(end) + "] in " + std::to_string(data_size) +
                          " data bytes");
        const char* p = raw.data() + data_start + begin;
        if (integer) {
            int64_t count = 0;
            if (itemsize == 8) std::memcpy(&count, p, 8);
            else {
                int32_t narrow = 0;
                std::memcpy(&narrow, p, 4);
                count = narrow;
            }
            file.counts.emplace_back(name, count);
            continue;
        }
        Tensor t(*shape);
        if (itemsize == 4) std::memcpy(t.ptr(), p, end - begin);
        else
            for (int64_t i = 0; i < t.numel(); ++i) {
                double d;
                std::memcpy(&d, p + 8 * i, 8);
                t[i] = static_cast<float>(d);
            }
        order.emplace_back(begin, file.tensors.size());
        file.tensors.emplace_back(name, std::move(t));
    }
    std::stable_sort(order.begin(), order.end());
    std::vector<std::pair<std::string, Tensor>> sorted;
    for (auto& [_, k] : order) sorted.push_back(std::move(file.tensors[k]));
    file.tensors = std::move(sorted);
    return file;
}

// -- reference inputs: per-layer checks -------------------------------------------------------------
namespace {
constexpr int FIRST_VALUES = 8;

json layer_check(const std::string& type, const Tensor& h) {
    double sum = 0, abs_sum = 0, sum_sq = 0;
    for (float v : h.data) sum += v, abs_sum += std::fabs(v), sum_sq += double(v) * v;
    json first = json::array();
    for (int64_t i = 0; i < std::min<int64_t>(FIRST_VALUES, h.numel()); ++i) first.push_back(static_cast<double>(h[i]));
    return {{"type", type}, {"shape", h.shape}, {"sum", sum}, {"abs_sum", abs_sum}, {"sum_sq", sum_sq}, {"first", first}};
}

std::string short_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.7g", v);
    return buf;
}
}  // namespace

json reference_checks(nn::Sequential& model, const Tensor& inputs) {
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    json layers = json::array();
    Tensor h = inputs;
    for (auto& layer : model.layers) {
        h = layer->forward(h);
        layers.push_back(layer_check(layer->type(), h));
    }
    model.train(was_training);
    json values = json::array();
    for (float v : inputs.data) values.push_back(static_cast<double>(v));
    return {{"input_shape", inputs.shape}, {"inputs", values}, {"layers", layers}};
}

namespace {

// The stored reference, read and checked field by field before the model runs on it.
struct Reference {
    Tensor inputs;
    struct Layer {
        Shape shape;
        double sum, abs_sum, sum_sq;
        std::vector<double> first;
    };
    std::vector<Layer> layers;
};

Reference read_reference(const json& reference, const std::string& where) {
    auto bad = [&](const std::string& field, const std::string& expected, const json& got) {
        return HandgradError(where, "metadata 'reference': '" + field + "' must be " + expected + ", got " + describe(got));
    };
    if (!reference.is_object()) throw bad("reference", "an object", reference);
    for (const char* key : {"input_shape", "inputs", "layers"})
        if (!reference.contains(key)) throw HandgradError(where, "metadata 'reference' has no '" + std::string(key) + "'");
    const json &inputs = reference["inputs"], &layers = reference["layers"];
    if (!inputs.is_array() || !std::all_of(inputs.begin(), inputs.end(), [](const json& v) { return v.is_number(); }))
        throw bad("inputs", "a list of numbers", inputs);
    const auto shape = bounded_shape(reference["input_shape"], 1, inputs.size());
    if (!shape || static_cast<size_t>(Tensor::count(*shape)) != inputs.size())
        throw bad("input_shape", "a list of sizes >= 1 holding the " + std::to_string(inputs.size()) + " inputs",
                  reference["input_shape"]);
    Reference r{.inputs = Tensor(*shape)};
    for (size_t k = 0; k < inputs.size(); ++k) r.inputs[static_cast<int64_t>(k)] = inputs[k].get<float>();
    if (!layers.is_array()) throw bad("layers", "a list", layers);
    for (size_t i = 0; i < layers.size(); ++i) {
        const json& l = layers[i];
        const std::string field = "layers[" + std::to_string(i) + "]";
        if (!l.is_object()) throw bad(field, "an object", l);
        Reference::Layer layer;
        const auto out_shape = l.contains("shape") ? bounded_shape(l["shape"], 0, INT64_MAX) : std::nullopt;
        if (!out_shape) throw bad(field + ".shape", "a list of sizes", l.value("shape", json()));
        layer.shape = *out_shape;
        for (auto [key, value] : {std::pair{"sum", &layer.sum}, {"abs_sum", &layer.abs_sum}, {"sum_sq", &layer.sum_sq}}) {
            if (!l.contains(key) || !l[key].is_number()) throw bad(field + "." + key, "a number", l.value(key, json()));
            *value = l[key].get<double>();
        }
        const json first = l.value("first", json());
        if (!first.is_array() || first.size() > FIRST_VALUES ||
            !std::all_of(first.begin(), first.end(), [](const json& v) { return v.is_number(); }))
            throw bad(field + ".first", "a list of at most " + std::to_string(FIRST_VALUES) + " numbers", first);
        for (auto& v : first) layer.first.push_back(v.get<double>());
        r.layers.push_back(std::move(layer));
    }
    return r;
}

}  // namespace

size_t check_reference(nn::Sequential& model, const json& reference, const std::string& where,
                       ReferenceTolerance tol) {
    const Reference ref = read_reference(reference, where);
    if (ref.layers.size() != model.size())
        throw HandgradError(where, "reference checks cover " + std::to_string(ref.layers.size()) +
                                       " layers, the model has " + std::to_string(model.size()));
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    struct Restore {  // the model's mode comes back however this returns
        nn::Sequential& model;
        bool mode;
        ~Restore() { model.train(mode); }
    } restore{model, was_training};
    Tensor h = ref.inputs;
    for (size_t i = 0; i < model.size(); ++i) {
        const std::string layer = "layer " + std::to_string(i) + " (" + model[i].repr() + ")";
        try {
            h = model[i].forward(h);
        } catch (const HandgradError& error) {
            throw HandgradError(where, "reference check failed: the stored reference inputs do not fit " + layer + ": " +
                                           error.what());
        }
        const json got = layer_check(model[i].type(), h);
        const Reference::Layer& want = ref.layers[i];
        auto fail = [&](const std::string& statistic, double e, double g) {
            throw ReferenceMismatch(where, "reference check failed: the first layer whose output diverges from the "
                                           "saved outputs is " + layer + ": " + statistic + " expected " +
                                           short_number(e) + ", got " + short_number(g) +
                                           (i ? " (layers 0-" + std::to_string(i - 1) + " match)" : ""),
                                    static_cast<int64_t>(i), statistic, e, g);
        };
        if (want.shape != h.shape)
            throw ReferenceMismatch(where, "reference check failed at " + layer + ": output shape expected " +
                                               fmt_shape(want.shape) + ", got " + fmt_shape(h.shape),
                                    static_cast<int64_t>(i), "shape", 0, 0);
        auto check = [&](const std::string& statistic, double e, double g, double scale) {
            if (!(std::fabs(g - e) <= tol.atol + tol.rtol * scale)) fail(statistic, e, g);
        };
        check("sum", want.sum, got["sum"].get<double>(), want.abs_sum);
        check("abs_sum", want.abs_sum, got["abs_sum"].get<double>(), want.abs_sum);
        check("sum_sq", want.sum_sq, got["sum_sq"].get<double>(), want.sum_sq);
        if (want.first.size() > got["first"].size())
            fail("number of first values", static_cast<double>(want.first.size()),
                 static_cast<double>(got["first"].size()));
        for (size_t k = 0; k < want.first.size(); ++k)
            check("value " + std::to_string(k), want.first[k], got["first"][k].get<double>(), std::fabs(want.first[k]));
    }
    return model.size();
}

// -- checkpoints ---------------------------------------------------------------------------------
void save(nn::Sequential& model, const std::string& path, const json& metadata, const Tensor* reference_inputs) {
    json header = {{"format", FORMAT}, {"handgrad_version", VERSION}, {"architecture", architecture(model)},
                   {"dtype", "float32"}};
    for (auto& [k, v] : metadata.items()) header[k] = v;
    if (reference_inputs) header["reference"] = reference_checks(model, *reference_inputs);
    std::map<std::string, std::string> raw;
    for (auto& [k, v] : header.items()) raw[k] = py_dumps(v);
    std::vector<std::pair<std::string, Tensor>> tensors;
    std::vector<std::pair<std::string, int64_t>> counts;
    for (auto& [name, p] : model.named_parameters()) tensors.emplace_back(name, p->data);
    for (auto& [name, b] : model.named_buffers()) {
        if (b.values) tensors.emplace_back(name, *b.values);
        else counts.emplace_back(name, *b.count);
    }
    save_tensors(path, tensors, raw, counts);
}

namespace {

// Each metadata field the C++ reads, checked; absent fields stay empty.
void read_fields(Checkpoint& ck, const std::string& path) {
    const json& meta = ck.metadata;
    auto bad = [&](const char* field, const std::string& expected) {
        return HandgradError(path, "metadata '" + std::string(field) + "' must be " + expected + ", got " +
                                       describe(meta[field]));
    };
    auto string_field = [&](const char* field) -> std::optional<std::string> {
        if (!meta.contains(field)) return std::nullopt;
        if (!meta[field].is_string()) throw bad(field, "a string");
        return meta[field].get<std::string>();
    };
    if (auto dtype = string_field("dtype"); dtype && *dtype != "float32" && *dtype != "float64")
        throw bad("dtype", "\"float32\" or \"float64\"");
    if (meta.contains("input_shape")) {
        ck.input_shape = bounded_shape(meta["input_shape"], 1, uint64_t{1} << 31);
        if (!ck.input_shape || ck.input_shape->size() != 3)
            throw bad("input_shape", "[channels, height, width], each >= 1");
    }
    if (meta.contains("normalization")) {
        const json& n = meta["normalization"];
        auto number = [&](const char* key) {
            return n.is_object() && n.contains(key) && n[key].is_number() && std::isfinite(n[key].get<double>());
        };
        if (!number("mean") || !number("std") || !(n["std"].get<double>() > 0))
            throw bad("normalization", "{\"mean\": a finite number, \"std\": a finite number > 0}");
        ck.normalization = Normalization{n["mean"].get<double>(), n["std"].get<double>()};
    }
    if (meta.contains("classes")) {
        const json& c = meta["classes"];
        if (!c.is_array() || !std::all_of(c.begin(), c.end(), [](const json& v) { return v.is_string(); }))
            throw bad("classes", "a list of class names");
        ck.classes = c.get<std::vector<std::string>>();
    }
    ck.dataset = string_field("dataset");
    ck.model_name = string_field("model");
    ck.loss = string_field("loss");
    if (ck.loss && *ck.loss != "cross_entropy" && *ck.loss != "mse") throw bad("loss", "\"cross_entropy\" or \"mse\"");
}

// Strict loading, before anything is allocated for the model: every parameter present with its
// shape, nothing left over, and every value finite.
void check_tensors(const TensorFile& file, const json& architecture_json, const std::string& path) {
    std::vector<StateEntry> expected;
    try {
        expected = state_shapes(architecture_json);
    } catch (const HandgradError& error) {  // error.where is "architecture"
        throw HandgradError(path, "metadata 'architecture': " + std::string(error.what()).substr(error.where.size() + 2));
    }
    std::map<std::string, Shape> given;  // name -> shape, every tensor of the file
    std::set<std::string> integer;
    for (auto& [name, t] : file.tensors) given[name] = t.shape;
    for (auto& [name, _] : file.counts) given[name] = Shape{}, integer.insert(name);
    std::vector<std::string> missing, mis_shaped;
    for (auto& [name, shape, floating] : expected) {
        auto it = given.find(name);
        if (it == given.end()) {
            missing.push_back(name);
            continue;
        }
        if (it->second != shape)
            mis_shaped.push_back(name + ": expected " + fmt_shape(shape) + ", got " + fmt_shape(it->second));
        else if (floating == (integer.count(name) > 0))
            mis_shaped.push_back(name + ": expected " + (floating ? "a float dtype (F32, F64)" : "an integer dtype (I64)") +
                                 ", got " + (floating ? "an integer one" : "a float one"));
        given.erase(it);
    }
    if (!missing.empty() || !given.empty() || !mis_shaped.empty()) {
        std::string msg = "tensors do not match the stored architecture:";
        auto list = [&](const std::string& what, const std::vector<std::string>& keys) {
            if (keys.empty()) return;
            msg += " " + what + " ";
            for (size_t i = 0; i < keys.size(); ++i) msg += (i ? ", " : "") + keys[i];
            msg += ";";
        };
        std::vector<std::string> unexpected;
        for (auto& [k, _] : given) unexpected.push_back(k);
        list("missing keys", missing);
        list("unexpected keys", unexpected);
        list("mis-shaped", mis_shaped);
        msg.pop_back();
        throw HandgradError(path, msg);
    }
    // NaN or infinite weights give outputs that look like an accuracy but mean nothing
    for (auto& [name, t] : file.tensors) {
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < t.numel(); ++i)
            if (!std::isfinite(t[i]) && bad++ == 0) first = i;
        if (bad)
            throw HandgradError(path, "tensor '" + name + "' holds " + std::to_string(bad) + " non-finite value" +
                                          (bad > 1 ? "s" : "") + " (NaN or infinity; the first at flat index " +
                                          std::to_string(first) + "): the weights are broken, refusing to use them");
    }
}

}  // namespace

Checkpoint load(const std::string& path, LoadOptions options) {
    TensorFile file = load_tensors(path);
    json meta = json::object();
    for (auto& [k, v] : file.metadata) {
        if (json_depth(v) > MAX_JSON_DEPTH)
            throw HandgradError(path, "metadata '" + k + "' nests lists and objects more than " +
                                          std::to_string(MAX_JSON_DEPTH) + " deep");
        try {
            meta[k] = json::parse(v);
        } catch (const json::exception& e) {
            throw HandgradError(path, "metadata '" + k + "' is not valid JSON: " + e.what());
        }
    }
    const std::string format = meta.contains("format") && meta["format"].is_string() ? meta["format"].get<std::string>() : "";
    if (format != FORMAT || !meta.contains("architecture"))
        throw HandgradError(path, "not a handgrad checkpoint (metadata 'format' is " +
                                      (format.empty() ? std::string("None") : "'" + format + "'") + ", expected '" +
                                      FORMAT + "' with an 'architecture')");
    check_tensors(file, meta["architecture"], path);
    Checkpoint ck{.model = from_architecture(meta["architecture"]), .metadata = meta, .path = path};
    read_fields(ck, path);
    std::map<std::string, Tensor*> given;
    for (auto& [name, t] : file.tensors) given[name] = &t;
    for (auto& [name, p] : ck.model.named_parameters()) p->data = std::move(*given.at(name));
    std::map<std::string, int64_t> counts(file.counts.begin(), file.counts.end());
    for (auto& [name, b] : ck.model.named_buffers()) {
        if (b.values) *b.values = std::move(*given.at(name));
        else *b.count = counts.at(name);
    }
    if (options.check_reference && meta.contains("reference"))
        ck.reference_layers_checked = check_reference(ck.model, meta["reference"], path, options.tolerance);
    return ck;
}

std::vector<std::string> Checkpoint::class_names(int64_t outputs) const {
    if (classes.empty()) {
        std::vector<std::string> names;
        for (int64_t i = 0; i < outputs; ++i) names.push_back(std::to_string(i));
        return names;
    }
    if (static_cast<int64_t>(classes.size()) != outputs)
        throw HandgradError(path, "metadata 'classes' names " + std::to_string(classes.size()) +
                                      " classes, the model has " + std::to_string(outputs) + " outputs");
    return classes;
}

}  // namespace handgrad
