// safetensors read/write and handgrad checkpoints (mirrors src/handgrad/serialization.py).
#include "handgrad/serialization.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

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
                  const std::map<std::string, std::string>& metadata) {
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
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned, as the library writes
    std::string out(8, '\0');
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    out += text;
    for (auto& [name, t] : tensors)  // float32 little-endian: this machine's layout (x86-64, ARM64)
        out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
    atomic_write_bytes(path, out);
}

TensorFile load_tensors(const std::string& path) {
    if (!fs::is_regular_file(path)) throw HandgradError(path, "no such checkpoint file");
    std::ifstream f(path, std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto corrupt = [&](const std::string& why) {
        return HandgradError(path, "not a readable safetensors file (truncated or corrupt?): " + why);
    };
    if (raw.size() < 8) throw corrupt("shorter than the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
    if (n > raw.size() - 8) throw corrupt("the header length " + std::to_string(n) + " exceeds the file");
    json header;
    try {
        header = json::parse(raw.begin() + 8, raw.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    } catch (const json::exception& e) {
        throw corrupt(std::string("header is not JSON: ") + e.what());
    }
    const size_t data_start = 8 + n, data_size = raw.size() - data_start;
    TensorFile file;
    for (auto& [name, info] : header.items()) {
        if (name == "__metadata__") {
            for (auto& [k, v] : info.items()) file.metadata[k] = v.get<std::string>();
            continue;
        }
        const std::string dtype = info.at("dtype").get<std::string>();
        const Shape shape = info.at("shape").get<Shape>();
        const size_t begin = info.at("data_offsets")[0].get<size_t>(), end = info.at("data_offsets")[1].get<size_t>();
        const size_t itemsize = dtype == "F32" ? 4 : dtype == "F64" ? 8 : 0;
        if (!itemsize) throw HandgradError(path, "tensor " + name + " has dtype " + dtype + "; expected F32 or F64");
        if (end < begin || end > data_size || (end - begin) != static_cast<size_t>(Tensor::count(shape)) * itemsize)
            throw corrupt("tensor " + name + " of shape " + fmt_shape(shape) + " does not fit its data offsets");
        Tensor t(shape);
        const char* p = raw.data() + data_start + begin;
        if (itemsize == 4) std::memcpy(t.ptr(), p, end - begin);
        else
            for (int64_t i = 0; i < t.numel(); ++i) {
                double d;
                std::memcpy(&d, p + 8 * i, 8);
                t[i] = static_cast<float>(d);
            }
        file.tensors.emplace_back(name, std::move(t));
    }
    std::sort(file.tensors.begin(), file.tensors.end(),
              [&](auto& a, auto& b) { return header[a.first]["data_offsets"][0] < header[b.first]["data_offsets"][0]; });
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

size_t check_reference(nn::Sequential& model, const json& reference, const std::string& where,
                       ReferenceTolerance tol) {
    const Shape shape = reference.at("input_shape").get<Shape>();
    std::vector<float> values;
    for (auto& v : reference.at("inputs")) values.push_back(v.get<float>());
    Tensor h(shape, std::move(values));
    const json& expected_layers = reference.at("layers");
    if (expected_layers.size() != model.size())
        throw HandgradError(where, "reference checks cover " + std::to_string(expected_layers.size()) +
                                       " layers, the model has " + std::to_string(model.size()));
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    for (size_t i = 0; i < model.size(); ++i) {
        h = model[i].forward(h);
        const json got = layer_check(model[i].type(), h);
        const json& want = expected_layers[i];
        const std::string layer = "layer " + std::to_string(i) + " (" + model[i].repr() + ")";
        auto fail = [&](const std::string& statistic, double e, double g) {
            model.train(was_training);
            throw ReferenceMismatch(where, "reference check failed: the first layer whose output diverges from the "
                                           "saved outputs is " + layer + ": " + statistic + " expected " +
                                           short_number(e) + ", got " + short_number(g) +
                                           (i ? " (layers 0-" + std::to_string(i - 1) + " match)" : ""),
                                    static_cast<int64_t>(i), statistic, e, g);
        };
        if (want.at("shape").get<Shape>() != h.shape)
            throw ReferenceMismatch(where, "reference check failed at " + layer + ": output shape expected " +
                                               fmt_shape(want.at("shape").get<Shape>()) + ", got " + fmt_shape(h.shape),
                                    static_cast<int64_t>(i), "shape", 0, 0);
        const double abs_sum = want.at("abs_sum").get<double>(), sum_sq = want.at("sum_sq").get<double>();
        auto check = [&](const std::string& statistic, double e, double g, double scale) {
            if (!(std::fabs(g - e) <= tol.atol + tol.rtol * scale)) fail(statistic, e, g);
        };
        check("sum", want.at("sum").get<double>(), got["sum"].get<double>(), abs_sum);
        check("abs_sum", abs_sum, got["abs_sum"].get<double>(), abs_sum);
        check("sum_sq", sum_sq, got["sum_sq"].get<double>(), sum_sq);
        for (size_t k = 0; k < want.at("first").size(); ++k) {
            const double e = want["first"][k].get<double>();
            check("value " + std::to_string(k), e, got["first"][k].get<double>(), std::fabs(e));
        }
    }
    model.train(was_training);
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
    for (auto& [name, p] : model.named_parameters()) tensors.emplace_back(name, p->data);
    save_tensors(path, tensors, raw);
}

Checkpoint load(const std::string& path, LoadOptions options) {
    TensorFile file = load_tensors(path);
    json meta = json::object();
    for (auto& [k, v] : file.metadata) {
        try {
            meta[k] = json::parse(v);
        } catch (const json::exception& e) {
            throw HandgradError(path, std::string("checkpoint metadata is not valid JSON: ") + e.what());
        }
    }
    const std::string format = meta.contains("format") && meta["format"].is_string() ? meta["format"].get<std::string>() : "";
    if (format != FORMAT || !meta.contains("architecture"))
        throw HandgradError(path, "not a handgrad checkpoint (metadata 'format' is " +
                                      (format.empty() ? std::string("None") : "'" + format + "'") + ", expected '" +
                                      FORMAT + "' with an 'architecture')");
    Checkpoint ck{from_architecture(meta["architecture"]), meta, 0};
    // strict loading: every parameter present with its shape, nothing left over
    std::map<std::string, Tensor*> given;
    for (auto& [name, t] : file.tensors) given[name] = &t;
    std::vector<std::string> missing, mis_shaped;
    for (auto& [name, p] : ck.model.named_parameters()) {
        auto it = given.find(name);
        if (it == given.end()) {
            missing.push_back(name);
            continue;
        }
        if (it->second->shape != p->data.shape)
            mis_shaped.push_back(name + ": expected " + fmt_shape(p->data.shape) + ", got " + fmt_shape(it->second->shape));
        else
            p->data = *it->second;
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
    if (options.check_reference && meta.contains("reference"))
        ck.reference_layers_checked = check_reference(ck.model, meta["reference"], path, options.tolerance);
    return ck;
}

}  // namespace handgrad
