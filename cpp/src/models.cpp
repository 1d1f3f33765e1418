// Named models and architecture <-> JSON (mirrors src/handgrad/models.py).
#include "handgrad/models.hpp"

#include <algorithm>
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
        m.add<nn::Linear>(nn::LinearOptions{width, h});
        if (activation == "sigmoid") m.add<nn::Sigmoid>();
        else m.add<nn::ReLU>();
        width = h;
    }
    m.add<nn::Linear>(nn::LinearOptions{width, num_classes});
}

// Three 3x3 conv blocks (8, 16, 42 channels) and one Linear: ~11.1k parameters on 28x28.
void tiny_cnn(Sequential& m, const Shape& s, int64_t num_classes) {
    int64_t c = s[0], h = s[1], w = s[2];
    for (int64_t out : {8, 16, 42}) {
        m.add<nn::Conv2d>(nn::Conv2dOptions{c, out, {3, 3}, {1, 1}, {1, 1}});
        m.add<nn::ReLU>();
        m.add<nn::MaxPool2d>(nn::Pool2dOptions{{2, 2}, std::nullopt, {0, 0}});
        c = out, h /= 2, w /= 2;
    }
    m.add<nn::Flatten>();
    m.add<nn::Linear>(nn::LinearOptions{42 * h * w, num_classes});
}

// LeNet-5 with ReLU and max pooling: conv 5x5 (6) - pool - conv 5x5 (16) - pool - 120 - 84.
// On inputs smaller than 28x28 the second conv is padded so the maps do not vanish.
void lenet5(Sequential& m, const Shape& s, int64_t num_classes) {
    const int64_t c = s[0], h = s[1], w = s[2];
    const int64_t pad2 = std::min(h, w) / 2 >= 10 ? 0 : 2;
    const int64_t h2 = (h / 2 + 2 * pad2 - 4) / 2, w2 = (w / 2 + 2 * pad2 - 4) / 2;
    m.add<nn::Conv2d>(nn::Conv2dOptions{c, 6, {5, 5}, {1, 1}, {2, 2}});
    m.add<nn::ReLU>();
    m.add<nn::MaxPool2d>(nn::Pool2dOptions{{2, 2}, std::nullopt, {0, 0}});
    m.add<nn::Conv2d>(nn::Conv2dOptions{6, 16, {5, 5}, {1, 1}, {pad2, pad2}});
    m.add<nn::ReLU>();
    m.add<nn::MaxPool2d>(nn::Pool2dOptions{{2, 2}, std::nullopt, {0, 0}});
    m.add<nn::Flatten>();
    m.add<nn::Linear>(nn::LinearOptions{16 * h2 * w2, 120});
    m.add<nn::ReLU>();
    m.add<nn::Linear>(nn::LinearOptions{120, 84});
    m.add<nn::ReLU>();
    m.add<nn::Linear>(nn::LinearOptions{84, num_classes});
}

struct Named {
    Builder build;
    TrainDefaults defaults;
};

const std::vector<std::pair<std::string, Named>>& models() {
    static const std::vector<std::pair<std::string, Named>> table = {
        {"linear", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {}); },
                    TrainDefaults{"sgd", 0.01, 0.9, 0.0, 64, 10, "none"}}},
        {"mlp-sigmoid", {[](Sequential& m, const Shape& s, int64_t n) {
                             mlp(m, s, n, {100}, "sigmoid");
                             m.add<nn::Sigmoid>();
                         },
                         TrainDefaults{"sgd", 1.0, 0.0, 0.0, 64, 10, "cosine", "mse"}}},
        {"mlp", {[](Sequential& m, const Shape& s, int64_t n) { mlp(m, s, n, {250, 250}); },
                 TrainDefaults{"sgd", 0.05, 0.9, 1e-3}}},
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

nn::Pair pair_from(const json& v) {
    if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
    if (v.is_array() && v.size() == 2) return {v[0].get<int64_t>(), v[1].get<int64_t>()};
    throw HandgradError("architecture", "expected an int or a pair of ints, got " + v.dump());
}

}  // namespace

std::vector<std::string> model_names() {
    std::vector<std::string> names;
    for (auto& [n, _] : models()) names.push_back(n);
    return names;
}

TrainDefaults defaults_for(const std::string& name) { return find(name).defaults; }

Sequential build_model(const std::string& name, const Shape& input_shape, int64_t num_classes) {
    Sequential model;
    find(name).build(model, input_shape, num_classes);
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
            spec["in_channels"] = c->options.in_channels;
            spec["out_channels"] = c->options.out_channels;
            spec["kernel_size"] = pair_json(c->options.kernel_size);
            spec["stride"] = pair_json(c->options.stride);
            spec["padding"] = pair_json(c->options.padding);
            spec["bias"] = c->options.bias;
        } else if (auto* p = dynamic_cast<const nn::Pool2dBase*>(layer.get())) {
            spec["kernel_size"] = pair_json(p->kernel_size);
            spec["stride"] = pair_json(p->stride);
            spec["padding"] = pair_json(p->padding);
        } else if (auto* f = dynamic_cast<const nn::Flatten*>(layer.get())) {
            spec["start_dim"] = f->start_dim;
            spec["end_dim"] = f->end_dim;
        } else if (auto* d = dynamic_cast<const nn::Dropout*>(layer.get())) {
            spec["p"] = static_cast<double>(d->p);
        } else if (auto* r = dynamic_cast<const nn::LeakyReLU*>(layer.get())) {
            spec["negative_slope"] = static_cast<double>(r->negative_slope);
        }
        layers.push_back(spec);
    }
    return layers;
}

Sequential from_architecture(const json& layers) {
    Sequential model;
    for (const auto& spec : layers) {
        const std::string type = spec.at("type").get<std::string>();
        auto arg = [&](const char* key, const json& fallback) { return spec.contains(key) ? spec.at(key) : fallback; };
        if (type == "Linear") {
            model.add<nn::Linear>(nn::LinearOptions{spec.at("in_features").get<int64_t>(),
                                                    spec.at("out_features").get<int64_t>(), arg("bias", true).get<bool>()});
        } else if (type == "Conv2d") {
            model.add<nn::Conv2d>(nn::Conv2dOptions{spec.at("in_channels").get<int64_t>(),
                                                    spec.at("out_channels").get<int64_t>(),
                                                    pair_from(spec.at("kernel_size")), pair_from(arg("stride", 1)),
                                                    pair_from(arg("padding", 0)), arg("bias", true).get<bool>()});
        } else if (type == "MaxPool2d" || type == "AvgPool2d") {
            nn::Pool2dOptions options{pair_from(spec.at("kernel_size")), std::nullopt, pair_from(arg("padding", 0))};
            if (spec.contains("stride") && !spec.at("stride").is_null()) options.stride = pair_from(spec.at("stride"));
            if (type == "MaxPool2d") model.add<nn::MaxPool2d>(options);
            else model.add<nn::AvgPool2d>(options);
        } else if (type == "Flatten") {
            model.add<nn::Flatten>(arg("start_dim", 1).get<int>(), arg("end_dim", -1).get<int>());
        } else if (type == "ReLU") {
            model.add<nn::ReLU>();
        } else if (type == "LeakyReLU") {
            model.add<nn::LeakyReLU>(arg("negative_slope", 0.01).get<float>());
        } else if (type == "Sigmoid") {
            model.add<nn::Sigmoid>();
        } else if (type == "Tanh") {
            model.add<nn::Tanh>();
        } else if (type == "Dropout") {
            model.add<nn::Dropout>(arg("p", 0.5).get<float>());
        } else {
            throw HandgradError("architecture", "layer type " + type + " is not supported by the C++ port; supported: "
                                                "Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, ReLU, LeakyReLU, "
                                                "Sigmoid, Tanh, Dropout");
        }
    }
    return model;
}

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
                        std::to_string(params)});
    }
    model.train(was_training);
    rows.push_back({"total", "", std::to_string(model.num_parameters())});
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
