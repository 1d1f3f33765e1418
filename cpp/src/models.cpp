// Named models and architecture <-> JSON (mirrors src/handgrad/models.py).
#include "handgrad/models.hpp"

#include <algorithm>
#include <cctype>
#include <functional>
#include <iomanip>
#include <map>
#include <sstream>

namespace handgrad {
namespace {

using nn::Sequential;
using Builder = std::function<void(Sequential&, const Shape&, int64_t)>;

int64_t flat(const Shape& shape) { return Tensor::count(shape); }

void mlp(Sequential& m, const Shape& input_shape, int64_t num_classes, const std::vector<int64_t>& hidden,
         const std::string& activation = "relu") {
    m.add<nn::Flatten>();
    int64_t width = flat(input_shape);
    for (int64_t h : hidden) {
        m.add<nn::Linear>(nn::LinearOptions{.in_features = width, .out_features = h});
        m.append(make_activation(activation));
        width = h;
    }
    m.add<nn::Linear>(nn::LinearOptions{.in_features = width, .out_features = num_classes});
}

// Three 3x3 conv blocks (8, 16, 42 channels) and one Linear: ~11.1k parameters on 28x28.
void tiny_cnn(Sequential& m, const Shape& s, int64_t num_classes) {
    int64_t c = s[0], h = s[1], w = s[2];
    for (int64_t out : {8, 16, 42}) {
        m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = c, .out_channels = out, .kernel_size = {3, 3}, .padding = {1, 1}});
        m.add<nn::ReLU>();
        m.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}});
        c = out, h /= 2, w /= 2;
    }
    m.add<nn::Flatten>();
    m.add<nn::Linear>(nn::LinearOptions{.in_features = 42 * h * w, .out_features = num_classes});
}

// LeNet-5 with ReLU and max pooling: conv 5x5 (6) - pool - conv 5x5 (16) - pool - 120 - 84.
// On inputs smaller than 28x28 the second conv is padded so the maps do not vanish.
void lenet5(Sequential& m, const Shape& s, int64_t num_classes) {
    const int64_t c = s[0], h = s[1], w = s[2];
    const int64_t pad2 = std::min(h, w) / 2 >= 10 ? 0 : 2;
    const int64_t h2 = (h / 2 + 2 * pad2 - 4) / 2, w2 = (w / 2 + 2 * pad2 - 4) / 2;
    m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = c, .out_channels = 6, .kernel_size = {5, 5}, .padding = {2, 2}});
    m.add<nn::ReLU>();
    m.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}});
    m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 6, .out_channels = 16, .kernel_size = {5, 5}, .padding = {pad2, pad2}});
    m.add<nn::ReLU>();
    m.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}});
    m.add<nn::Flatten>();
    m.add<nn::Linear>(nn::LinearOptions{.in_features = 16 * h2 * w2, .out_features = 120});
    m.add<nn::ReLU>();
    m.add<nn::Linear>(nn::LinearOptions{.in_features = 120, .out_features = 84});
    m.add<nn::ReLU>();
    m.add<nn::Linear>(nn::LinearOptions{.in_features = 84, .out_features = num_classes});
}

struct Named {
    Builder build;
    TrainDefaults defaults;
};

const std::vector<std::pair<std::string, Named>>& models() {
    static const std::vector<std::pair<std::string, Named>> table = {
        {"linear", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {}); },
                    TrainDefaults{.lr = 0.01, .schedule = "none"}}},
        {"mlp-sigmoid", {[](Sequential& m, const Shape& s, int64_t n) {
                             mlp(m, s, n, {100}, "sigmoid");
                             m.add<nn::Sigmoid>();
                         },
                         TrainDefaults{.lr = 1.0, .momentum = 0.0, .loss = "mse"}}},
        {"mlp", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {250, 250}); },
                 TrainDefaults{.lr = 0.05, .weight_decay = 1e-3}}},
        {"mlp-small", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {128, 64}); }, TrainDefaults{}}},
        {"tiny-mlp", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {16}); }, TrainDefaults{}}},
        {"tiny-cnn", {tiny_cnn, TrainDefaults{}}},
        {"lenet5", {lenet5, TrainDefaults{}}},
    };
    return table;
}

const Named& find(const std::string& name) {
    for (auto& [n, named] : models())
        if (n == name) return named;
    std::string known;
    for (auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw HandgradError(name, "unknown model; known: " + known);
}

json pair_json(nn::Pair p) { return json::array({p[0], p[1]}); }

}  // namespace

std::vector<std::string> activation_names() {
    return {"elu", "gelu", "leaky_relu", "relu", "sigmoid", "silu", "softplus", "tanh"};
}

std::unique_ptr<nn::Module> make_activation(const std::string& name, std::optional<double> value) {
    std::string key = name;  // case-insensitive, '-' and '_' alike, as nn.get_activation
    for (char& c : key) c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (key == "relu") return std::make_unique<nn::ReLU>();
    if (key == "leaky_relu") return std::make_unique<nn::LeakyReLU>(value.value_or(0.01));
    if (key == "elu") return std::make_unique<nn::ELU>();
    if (key == "sigmoid") return std::make_unique<nn::Sigmoid>();
    if (key == "tanh") return std::make_unique<nn::Tanh>();
    if (key == "gelu") return std::make_unique<nn::GELU>();
    if (key == "silu") return std::make_unique<nn::SiLU>();
    if (key == "softplus") return std::make_unique<nn::Softplus>();
    std::string known;
    for (auto& n : activation_names()) known += (known.empty() ? "" : ", ") + n;
    throw HandgradError("activation", "unknown activation '" + name + "'; known: " + known);
}

std::vector<std::string> model_names() {
    std::vector<std::string> names;
    for (auto& [n, _] : models()) names.push_back(n);
    return names;
}

TrainDefaults defaults_for(const std::string& name) {
    for (auto& [n, named] : models())
        if (n == name) return named.defaults;
    return TrainDefaults{};  // a custom model ("custom"), as models.defaults_for
}

Sequential build_model(const std::string& name, const Shape& input_shape, int64_t num_classes, const ModelOptions& custom) {
    if (custom.init != "default") {  // every Linear's and Conv2d's weight redrawn in layer order, its bias 0
        Sequential model = build_model(name, input_shape, num_classes, {custom.hidden, custom.activation, custom.layers, custom.bias});
        for (auto& layer : model.layers)
            if (auto* weighted = dynamic_cast<nn::WeightedLayer*>(layer.get())) {
                nn::init_weight(weighted->weight.data, custom.init, default_generator());
                if (weighted->bias) std::fill(weighted->bias->data.data.begin(), weighted->bias->data.data.end(), 0.0f);
            }
        return model;
    }
    if (!custom.bias) {  // the same layers, every Linear's and Conv2d's bias dropped (their weights drawn afresh)
        json layers = architecture(build_model(name, input_shape, num_classes, {custom.hidden, custom.activation, custom.layers}));
        for (auto& spec : layers)
            if (spec["type"] == "Linear" || spec["type"] == "Conv2d") spec["bias"] = false;
        return from_architecture(layers);
    }
    if (custom.layers) return parse_layer_spec(*custom.layers, input_shape, num_classes);
    Sequential model;
    if (!custom.hidden.empty()) {
        for (int64_t h : custom.hidden)
            if (h < 1 || h > MAX_SIZE)
                throw HandgradError("argument --hidden", "hidden sizes must be from 1 to " + std::to_string(MAX_SIZE) +
                                                             ", got " + std::to_string(h));
        mlp(model, input_shape, num_classes, custom.hidden, custom.activation);
    } else {
        find(name).build(model, input_shape, num_classes);
    }
    return model;
}

// -- architecture <-> JSON: the constructor arguments Python's _ARGS table writes -----------------
json architecture(const Sequential& model) {
    json layers = json::array();
    for (auto& layer : model.layers) {
        json spec = {{"type", layer->type()}};
        if (auto* l = dynamic_cast<const nn::Linear*>(layer.get())) {
            spec["in_features"] = l->options.in_features;
            spec["out_features"] = l->options.out_features;
            spec["bias"] = l->options.bias;
        } else if (auto* c = dynamic_cast<const nn::Conv2d*>(layer.get())) {
            const auto& o = c->options;
            spec["in_channels"] = o.in_channels;
            spec["out_channels"] = o.out_channels;
            spec["kernel_size"] = pair_json(o.kernel_size);
            spec["stride"] = pair_json(o.stride);
            spec["padding"] = o.padding_name.empty() ? pair_json(o.padding) : json(o.padding_name);
            spec["bias"] = o.bias;
            // only where not the default, as Python's constructor_args: a plain convolution reads as before them
            if (o.dilation != nn::Pair{1, 1}) spec["dilation"] = pair_json(o.dilation);
            if (o.groups != 1) spec["groups"] = o.groups;
            if (o.padding_mode != functional::PaddingMode::zeros) spec["padding_mode"] = functional::padding_mode_name(o.padding_mode);
        } else if (auto* p = dynamic_cast<const nn::Pool2dBase*>(layer.get())) {
            const auto& o = p->options;
            spec["kernel_size"] = pair_json(p->kernel_size);
            spec["stride"] = pair_json(p->stride);
            spec["padding"] = pair_json(p->padding);
            if (p->type() == "MaxPool2d" && (o.dilation != nn::Pair{1, 1} || o.ceil_mode)) {
                spec["dilation"] = pair_json(o.dilation);
                spec["return_indices"] = false;
                spec["ceil_mode"] = o.ceil_mode;
            }
            if (p->type() == "AvgPool2d" && (o.ceil_mode || !o.count_include_pad || o.divisor_override)) {
                spec["ceil_mode"] = o.ceil_mode;
                spec["count_include_pad"] = o.count_include_pad;
                spec["divisor_override"] = o.divisor_override ? json(*o.divisor_override) : json(nullptr);
            }
        } else if (auto* a = dynamic_cast<const nn::AdaptiveAvgPool2d*>(layer.get())) {
            spec["output_size"] = json::array();
            for (auto& size : a->output_size) spec["output_size"].push_back(size ? json(*size) : json(nullptr));
        } else if (auto* g = dynamic_cast<const nn::GELU*>(layer.get())) {
            spec["approximate"] = g->approximate;
        } else if (auto* sp = dynamic_cast<const nn::Softplus*>(layer.get())) {
            spec["beta"] = sp->beta;
            spec["threshold"] = sp->threshold;
        } else if (auto* ln = dynamic_cast<const nn::LayerNorm*>(layer.get())) {
            spec["normalized_shape"] = ln->options.normalized_shape;
            spec["eps"] = ln->options.eps;
            spec["elementwise_affine"] = ln->options.elementwise_affine;
            if (ln->options.elementwise_affine && !ln->options.bias) spec["bias"] = false;
        } else if (auto* f = dynamic_cast<const nn::Flatten*>(layer.get())) {
            spec["start_dim"] = f->start_dim;
            spec["end_dim"] = f->end_dim;
        } else if (auto* d = dynamic_cast<const nn::Dropout*>(layer.get())) {
            spec["p"] = static_cast<double>(d->p);
        } else if (auto* r = dynamic_cast<const nn::LeakyReLU*>(layer.get())) {
            spec["negative_slope"] = r->negative_slope;
        } else if (auto* e = dynamic_cast<const nn::ELU*>(layer.get())) {
            spec["alpha"] = e->alpha;
        } else if (auto* s = dynamic_cast<const nn::Softmax*>(layer.get())) {
            spec["dim"] = s->dim;
            if (s->dtype) spec["dtype"] = *s->dtype;  // only when given, as Python's constructor_args
        } else if (auto* b = dynamic_cast<const nn::BatchNormBase*>(layer.get())) {
            spec["num_features"] = b->options.num_features;
            spec["eps"] = b->options.eps;
            spec["momentum"] = b->options.momentum ? json(*b->options.momentum) : json(nullptr);
            spec["affine"] = b->options.affine;
            spec["track_running_stats"] = b->options.track_running_stats;
        }
        layers.push_back(spec);
    }
    return layers;
}

namespace {

// One architecture entry, read field by field: every error names the entry, the field, what was
// expected and what came, and nothing is allocated here (the weights' shapes are checked against
// the file's tensors before any layer is built).
class Entry {
public:
    Entry(const json& spec, size_t index) : spec(spec) {
        where = "entry " + std::to_string(index);
        if (!spec.is_object()) throw HandgradError(where, "expected an object {\"type\": ..., arguments}, got " + describe(spec));
        if (!spec.contains("type") || !spec["type"].is_string())
            throw HandgradError(where, "'type' must be a layer name, got " +
                                           (spec.contains("type") ? describe(spec["type"]) : std::string("nothing")));
        type = spec["type"].get<std::string>();
        where += " (" + type + ")";
    }

    // Refuse keys the layer does not take, as a Python constructor would, and the arguments the
    // Python layer has but the C++ one does not (defaults: argument -> the values that mean "off",
    // the only ones the C++ computes): never silently ignored.
    void only(std::initializer_list<const char*> keys,
              const std::vector<std::pair<std::string, std::vector<json>>>& defaults = {}) const {
        for (auto& [key, value] : spec.items()) {
            if (key == "type" || std::find_if(keys.begin(), keys.end(), [&](const char* k) { return key == k; }) != keys.end())
                continue;
            const auto known_default = std::find_if(defaults.begin(), defaults.end(), [&](auto& d) { return d.first == key; });
            if (known_default != defaults.end()) {
                const auto& allowed = known_default->second;
                if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) continue;
                throw HandgradError(where, "argument '" + key + "' = " + describe(value) +
                                               " is not supported by the C++ port (only its default " +
                                               describe(allowed.front()) + ")");
            }
            std::string known;
            for (const char* k : keys) known += (known.empty() ? "" : ", ") + std::string(k);
            throw HandgradError(where, "unexpected argument '" + key + "' (= " + describe(value) +
                                           ") is not supported by the C++ port; " +
                                           (known.empty() ? "it takes none" : "it takes " + known));
        }
    }
    int64_t integer(const char* key, int64_t minimum, std::optional<int64_t> fallback = {}) const {
        if (!spec.contains(key) && fallback) return *fallback;
        const json* v = spec.contains(key) ? &spec[key] : nullptr;
        if (!v || !is_int(*v, minimum)) fail(key, "an integer >= " + std::to_string(minimum));
        return v->get<int64_t>();
    }
    nn::Pair pair(const char* key, int64_t minimum, std::optional<int64_t> fallback = {}) const {
        if (!spec.contains(key) && fallback) return {*fallback, *fallback};
        const json* v = spec.contains(key) ? &spec[key] : nullptr;
        if (v && is_int(*v, minimum)) return {v->get<int64_t>(), v->get<int64_t>()};
        if (v && v->is_array() && v->size() == 2 && is_int((*v)[0], minimum) && is_int((*v)[1], minimum))
            return {(*v)[0].get<int64_t>(), (*v)[1].get<int64_t>()};
        fail(key, "an integer >= " + std::to_string(minimum) + " or a pair of them");
    }
    bool boolean(const char* key, bool fallback) const {
        if (!spec.contains(key)) return fallback;
        if (!spec[key].is_boolean()) fail(key, "true or false");
        return spec[key].get<bool>();
    }
    double number(const char* key, double fallback, double lo, double hi) const {
        if (!spec.contains(key)) return fallback;
        const json& v = spec[key];
        if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
            fail(key, "a number in [" + short_number(lo) + ", " + short_number(hi) + "]");
        return v.get<double>();
    }
    [[noreturn]] void fail(const char* key, const std::string& expected) const {
        throw HandgradError(where, "'" + std::string(key) + "' must be " + expected + ", got " +
                                       (spec.contains(key) ? describe(spec[key]) : std::string("nothing")));
    }

    const json& spec;
    std::string type, where;

private:
    static bool is_int(const json& v, int64_t minimum) {
        if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX) &&
                                           static_cast<int64_t>(v.get<uint64_t>()) >= minimum;
        return v.is_number_integer() && v.get<int64_t>() >= minimum;
    }
    static std::string short_number(double v) {
        std::ostringstream s;
        s << v;
        return s.str();
    }
};

// A layer read from its entry: the options it is built with, and the shapes of its parameters.
struct LayerSpec {
    std::string type;
    nn::LinearOptions linear;
    nn::Conv2dOptions conv;
    nn::Pool2dOptions pool;
    nn::BatchNormOptions batch_norm;
    nn::LayerNormOptions layer_norm;
    nn::AdaptiveAvgPool2d::Size output_size;
    std::string approximate = "none";
    double beta = 1.0, threshold = 20.0;
    int start_dim = 1, end_dim = -1, dim = -1;
    double p = 0.5, negative_slope = 0.01;
    double alpha = 1.0;
    std::optional<std::string> dtype;

    // Its state_dict: parameters, then buffers, under their names within the layer.
    std::vector<StateEntry> state() const {
        if (type == "Linear") {
            std::vector<StateEntry> shapes{{"weight", {linear.out_features, linear.in_features}}};
            if (linear.bias) shapes.push_back({"bias", {linear.out_features}});
            return shapes;
        }
        if (type == "Conv2d") {
            std::vector<StateEntry> shapes{
                {"weight", {conv.out_channels, conv.in_channels / conv.groups, conv.kernel_size[0], conv.kernel_size[1]}}};
            if (conv.bias) shapes.push_back({"bias", {conv.out_channels}});
            return shapes;
        }
        if (type == "BatchNorm1d" || type == "BatchNorm2d") {
            const Shape c{batch_norm.num_features};
            std::vector<StateEntry> shapes;
            if (batch_norm.affine) shapes.insert(shapes.end(), {{"weight", c}, {"bias", c}});
            if (batch_norm.track_running_stats)
                shapes.insert(shapes.end(), {{"running_mean", c}, {"running_var", c}, {"num_batches_tracked", {}, false}});
            return shapes;
        }
        if (type == "LayerNorm" && layer_norm.elementwise_affine) {
            std::vector<StateEntry> shapes{{"weight", layer_norm.normalized_shape}};
            if (layer_norm.bias) shapes.push_back({"bias", layer_norm.normalized_shape});
            return shapes;
        }
        return {};
    }

    std::unique_ptr<nn::Module> build() const {
        if (type == "Linear") return std::make_unique<nn::Linear>(linear);
        if (type == "Conv2d") return std::make_unique<nn::Conv2d>(conv);
        if (type == "MaxPool2d") return std::make_unique<nn::MaxPool2d>(pool);
        if (type == "AvgPool2d") return std::make_unique<nn::AvgPool2d>(pool);
        if (type == "Flatten") return std::make_unique<nn::Flatten>(start_dim, end_dim);
        if (type == "ReLU") return std::make_unique<nn::ReLU>();
        if (type == "LeakyReLU") return std::make_unique<nn::LeakyReLU>(negative_slope);
        if (type == "Sigmoid") return std::make_unique<nn::Sigmoid>();
        if (type == "Tanh") return std::make_unique<nn::Tanh>();
        if (type == "ELU") return std::make_unique<nn::ELU>(alpha);
        if (type == "Softmax") return std::make_unique<nn::Softmax>(dim, dtype);
        if (type == "LogSoftmax") return std::make_unique<nn::LogSoftmax>(dim, dtype);
        if (type == "BatchNorm1d") return std::make_unique<nn::BatchNorm1d>(batch_norm);
        if (type == "BatchNorm2d") return std::make_unique<nn::BatchNorm2d>(batch_norm);
        if (type == "LayerNorm") return std::make_unique<nn::LayerNorm>(layer_norm);
        if (type == "AdaptiveAvgPool2d") return std::make_unique<nn::AdaptiveAvgPool2d>(output_size);
        if (type == "GELU") return std::make_unique<nn::GELU>(approximate);
        if (type == "SiLU") return std::make_unique<nn::SiLU>();
        if (type == "Softplus") return std::make_unique<nn::Softplus>(beta, threshold);
        if (type == "Identity") return std::make_unique<nn::Identity>();
        if (type == "Dropout2d") return std::make_unique<nn::Dropout2d>(p);
        return std::make_unique<nn::Dropout>(p);
    }
};

LayerSpec read_entry(const json& spec, size_t index) {
    const Entry e(spec, index);
    LayerSpec layer{.type = e.type};
    if (e.type == "Linear") {
        e.only({"in_features", "out_features", "bias"});
        layer.linear = {.in_features = e.integer("in_features", 0), .out_features = e.integer("out_features", 0),
                        .bias = e.boolean("bias", true)};
    } else if (e.type == "Conv2d") {
        e.only({"in_channels", "out_channels", "kernel_size", "stride", "padding", "bias", "dilation", "groups",
                "padding_mode"});
        const bool named = spec.contains("padding") && spec["padding"].is_string();
        layer.conv = {.in_channels = e.integer("in_channels", 0), .out_channels = e.integer("out_channels", 0),
                      .kernel_size = e.pair("kernel_size", 1), .stride = e.pair("stride", 1, 1),
                      .padding = named ? nn::Pair{0, 0} : e.pair("padding", 0, 0), .bias = e.boolean("bias", true),
                      .dilation = e.pair("dilation", 1, 1), .groups = e.integer("groups", 1, 1)};
        if (named) {
            layer.conv.padding_name = spec["padding"].get<std::string>();
            if (layer.conv.padding_name != "same" && layer.conv.padding_name != "valid")
                e.fail("padding", "'same', 'valid', an integer >= 0 or a pair of them");
            if (layer.conv.padding_name == "same" && layer.conv.stride != nn::Pair{1, 1})
                e.fail("padding", "numbers with a stride other than 1 (torch's padding='same' needs stride 1)");
        }
        if (spec.contains("padding_mode")) {
            const auto& names = functional::padding_mode_names();
            const auto mode = spec["padding_mode"].is_string()
                                  ? std::find(names.begin(), names.end(), spec["padding_mode"].get<std::string>())
                                  : names.end();
            if (mode == names.end()) e.fail("padding_mode", "'zeros', 'reflect', 'replicate' or 'circular'");
            layer.conv.padding_mode = static_cast<functional::PaddingMode>(mode - names.begin());
        }
        if (std::max(layer.conv.dilation[0], layer.conv.dilation[1]) > MAX_SIZE)
            e.fail("dilation", "an integer from 1 to " + std::to_string(MAX_SIZE) + " or a pair of them");
        if (layer.conv.groups > MAX_SIZE || layer.conv.in_channels % layer.conv.groups ||
            layer.conv.out_channels % layer.conv.groups)
            e.fail("groups", "an integer >= 1 dividing in_channels " + std::to_string(layer.conv.in_channels) +
                                 " and out_channels " + std::to_string(layer.conv.out_channels));
        // A zero padding as large as the (dilated) kernel only adds outputs that see no input; refused
        // so that a small file cannot ask for unbounded work (the other modes copy the input's pixels,
        // and the layer bounds the padded maps).
        const bool zeros = layer.conv.padding_mode == functional::PaddingMode::zeros;
        for (int a = 0; a < 2; ++a) {
            const int64_t span = functional::dilated_size(std::min(layer.conv.kernel_size[a], MAX_SIZE), layer.conv.dilation[a]);
            if (layer.conv.kernel_size[a] > MAX_SIZE || (zeros && layer.conv.padding[a] >= span))
                e.fail("padding", "smaller than kernel_size " + nn::fmt_pair(layer.conv.kernel_size) +
                                      (layer.conv.dilation != nn::Pair{1, 1} ? " dilated by " + nn::fmt_pair(layer.conv.dilation) : ""));
            if (layer.conv.padding[a] > MAX_SIZE) e.fail("padding", "at most " + std::to_string(MAX_SIZE));
        }
    } else if (e.type == "MaxPool2d" || e.type == "AvgPool2d") {
        if (e.type == "MaxPool2d") {  // a Sequential cannot pass the indices on
            e.only({"kernel_size", "stride", "padding", "dilation", "ceil_mode"}, {{"return_indices", {false}}});
        } else {
            e.only({"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"});
        }
        layer.pool = {.kernel_size = e.pair("kernel_size", 1), .padding = e.pair("padding", 0, 0),
                      .dilation = e.pair("dilation", 1, 1), .ceil_mode = e.boolean("ceil_mode", false),
                      .count_include_pad = e.boolean("count_include_pad", true)};
        if (spec.contains("stride") && !spec["stride"].is_null()) layer.pool.stride = e.pair("stride", 1);
        if (std::max(layer.pool.dilation[0], layer.pool.dilation[1]) > MAX_SIZE)
            e.fail("dilation", "an integer from 1 to " + std::to_string(MAX_SIZE) + " or a pair of them");
        if (spec.contains("divisor_override") && !spec["divisor_override"].is_null()) {
            const json& v = spec["divisor_override"];
            if (!v.is_number_integer() || v.get<int64_t>() == 0 || std::abs(v.get<int64_t>()) > MAX_ELEMENTS)
                e.fail("divisor_override", "null or a nonzero integer");
            layer.pool.divisor_override = v.get<int64_t>();
        }
    } else if (e.type == "AdaptiveAvgPool2d") {
        e.only({"output_size"});
        const json* v = spec.contains("output_size") ? &spec["output_size"] : nullptr;
        const auto size = [&](const json& o) -> std::optional<int64_t> {
            if (o.is_null()) return std::nullopt;
            if (!o.is_number_integer() || o.get<int64_t>() < 0 || o.get<int64_t>() > MAX_SIZE)
                e.fail("output_size", "an integer from 0 to " + std::to_string(MAX_SIZE) + " or a pair of them (or null)");
            return o.get<int64_t>();
        };
        if (!v || (v->is_array() && v->size() != 2) || !(v->is_array() || v->is_number_integer()))
            e.fail("output_size", "an integer from 0 to " + std::to_string(MAX_SIZE) + " or a pair of them (or null)");
        layer.output_size = v->is_array() ? nn::AdaptiveAvgPool2d::Size{size((*v)[0]), size((*v)[1])}
                                          : nn::AdaptiveAvgPool2d::Size{size(*v), size(*v)};
    } else if (e.type == "GELU") {
        e.only({"approximate"});
        if (spec.contains("approximate")) {
            if (spec["approximate"] != "none" && spec["approximate"] != "tanh") e.fail("approximate", "'none' or 'tanh'");
            layer.approximate = spec["approximate"].get<std::string>();
        }
    } else if (e.type == "Softplus") {
        e.only({"beta", "threshold"});
        layer.beta = e.number("beta", 1.0, -1e6, 1e6);
        layer.threshold = e.number("threshold", 20.0, -1e6, 1e6);
    } else if (e.type == "LayerNorm") {
        e.only({"normalized_shape", "eps", "elementwise_affine", "bias"});
        const json* v = spec.contains("normalized_shape") ? &spec["normalized_shape"] : nullptr;
        const std::string expected = "an integer >= 0 or a list of at most 32 of them, " + std::to_string(MAX_ELEMENTS) +
                                     " values in all";
        if (!v || !(v->is_array() || v->is_number_integer()) || (v->is_array() && v->size() > 32)) e.fail("normalized_shape", expected);
        const json dims = v->is_array() ? *v : json::array({*v});
        int64_t count = 1;
        for (auto& d : dims) {
            if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > MAX_ELEMENTS) e.fail("normalized_shape", expected);
            layer.layer_norm.normalized_shape.push_back(d.get<int64_t>());
            count = std::min(count * d.get<int64_t>(), MAX_ELEMENTS + 1);
        }
        if (count > MAX_ELEMENTS) e.fail("normalized_shape", expected);
        layer.layer_norm.eps = e.number("eps", 1e-5, 1e-300, 1e6);
        layer.layer_norm.elementwise_affine = e.boolean("elementwise_affine", true);
        layer.layer_norm.bias = e.boolean("bias", true);
    } else if (e.type == "Flatten") {
        e.only({"start_dim", "end_dim"});
        const auto dim = [&](const char* key, int fallback) {
            const int64_t d = e.integer(key, -64, fallback);
            if (d > 64) e.fail(key, "an integer in [-64, 64]");
            return static_cast<int>(d);
        };
        layer.start_dim = dim("start_dim", 1);
        layer.end_dim = dim("end_dim", -1);
    } else if (e.type == "LeakyReLU") {
        e.only({"negative_slope"});
        layer.negative_slope = e.number("negative_slope", 0.01, -1e6, 1e6);
    } else if (e.type == "Dropout" || e.type == "Dropout2d") {
        e.only({"p"});
        layer.p = e.number("p", 0.5, 0.0, 1.0);
    } else if (e.type == "ELU") {
        e.only({"alpha"});
        layer.alpha = e.number("alpha", 1.0, -1e6, 1e6);
    } else if (e.type == "Softmax" || e.type == "LogSoftmax") {
        e.only({"dim", "dtype"});
        const int64_t dim = e.integer("dim", -8, -1);
        if (dim > 7) e.fail("dim", "an integer from -8 to 7");
        layer.dim = static_cast<int>(dim);
        if (spec.contains("dtype") && !spec["dtype"].is_null()) {
            if (spec["dtype"] != "float32" && spec["dtype"] != "float64") e.fail("dtype", "null, \"float32\" or \"float64\"");
            layer.dtype = spec["dtype"].get<std::string>();
        }
    } else if (e.type == "BatchNorm1d" || e.type == "BatchNorm2d") {
        e.only({"num_features", "eps", "momentum", "affine", "track_running_stats"});
        layer.batch_norm = {.num_features = e.integer("num_features", 1), .eps = e.number("eps", 1e-5, 1e-300, 1e6),
                            .affine = e.boolean("affine", true),
                            .track_running_stats = e.boolean("track_running_stats", true)};
        if (spec.contains("momentum") && spec["momentum"].is_null()) layer.batch_norm.momentum = std::nullopt;
        else layer.batch_norm.momentum = e.number("momentum", 0.1, 0.0, 1.0);
        if (layer.batch_norm.num_features > MAX_SIZE) e.fail("num_features", "an integer from 1 to " + std::to_string(MAX_SIZE));
    } else if (e.type == "ReLU" || e.type == "Sigmoid" || e.type == "Tanh" || e.type == "SiLU" || e.type == "Identity") {
        e.only({});
    } else {
        throw HandgradError(e.where, "layer type " + e.type + " is not supported by the C++ port; supported: "
                                     "Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity, ReLU, "
                                     "LeakyReLU, ELU, GELU, SiLU, Softplus, Sigmoid, Tanh, Softmax, LogSoftmax, "
                                     "BatchNorm1d, BatchNorm2d, LayerNorm, Dropout, Dropout2d");
    }
    try {  // the layer's own checks (pooling padding at most half the kernel, ...), on an empty build
        if (layer.state().empty()) layer.build();
    } catch (const HandgradError& error) {
        throw HandgradError(e.where, error.what());
    }
    return layer;
}

std::vector<LayerSpec> read_architecture(const json& layers) {
    if (!layers.is_array()) throw HandgradError("architecture", "expected a list of layers, got " + describe(layers));
    std::vector<LayerSpec> specs;
    for (size_t i = 0; i < layers.size(); ++i) {
        try {
            specs.push_back(read_entry(layers[i], i));
        } catch (const HandgradError& error) {
            throw HandgradError("architecture", error.what());
        }
    }
    return specs;
}

}  // namespace

std::string describe(const json& value) {
    const auto scalar = [](const json& v) { return v.is_primitive(); };
    if (value.is_array() && value.size() <= 8 && std::all_of(value.begin(), value.end(), scalar)) {
        const std::string text = value.dump(-1, ' ', true);  // short and flat: show it
        if (text.size() <= 40) return text;
    }
    if (value.is_array()) return "a list of " + std::to_string(value.size()) + " items";
    if (value.is_object()) return "an object with " + std::to_string(value.size()) + " keys";
    std::string text = value.dump(-1, ' ', true);
    return text.size() > 40 ? text.substr(0, 37) + "..." : text;
}

std::vector<StateEntry> state_shapes(const json& layers) {
    std::vector<StateEntry> shapes;
    const auto specs = read_architecture(layers);
    for (size_t i = 0; i < specs.size(); ++i)
        for (auto& entry : specs[i].state()) shapes.push_back({std::to_string(i) + "." + entry.name, entry.shape, entry.floating});
    return shapes;
}

Sequential from_architecture(const json& layers) {
    Sequential model;
    for (const auto& spec : read_architecture(layers)) model.append(spec.build());
    return model;
}

namespace {
// 50698 -> "50,698", as Python's f"{n:,}"
std::string thousands(int64_t n) {
    std::string digits = std::to_string(n), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}
}  // namespace

std::string summary(Sequential& model, const Shape& input_shape) {
    Shape shape = input_shape;
    shape.insert(shape.begin(), 1);
    Tensor x(shape);
    std::vector<std::array<std::string, 3>> rows{{"layer", "output shape", "params"}};
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    for (size_t i = 0; i < model.size(); ++i) {
        x = model[i].forward(x);
        Shape out = x.shape;
        std::string s = "(N";
        for (size_t d = 1; d < out.size(); ++d) s += ", " + std::to_string(out[d]);
        int64_t params = 0;
        for (auto& np : model[i].named_parameters()) params += np.second->data.numel();
        rows.push_back({std::to_string(i) + ": " + model[i].repr(), s + (out.size() == 1 ? ",)" : ")"),
                        thousands(params)});
    }
    model.train(was_training);
    rows.push_back({"total", "", thousands(model.num_parameters())});
    size_t w0 = 0, w1 = 0, w2 = 0;
    for (auto& r : rows) w0 = std::max(w0, r[0].size()), w1 = std::max(w1, r[1].size()), w2 = std::max(w2, r[2].size());
    std::ostringstream out;
    const std::string rule(w0 + w1 + w2 + 4, '-');
    for (size_t i = 0; i < rows.size(); ++i) {
        if (i == 1 || i + 1 == rows.size()) out << rule << "\n";
        out << std::left << std::setw(w0) << rows[i][0] << "  " << std::setw(w1) << rows[i][1] << "  " << std::right
            << std::setw(w2) << rows[i][2] << "\n";
    }
    return out.str();
}

}  // namespace handgrad
