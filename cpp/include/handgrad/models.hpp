// The named models, each built for the dataset's input shape, and the architecture description
// stored in checkpoints (mirrors src/handgrad/models.py).
#pragma once

#include "handgrad/nn.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace handgrad {

using json = nlohmann::ordered_json;  // keeps keys in the order written, as Python's dicts

// Sensible training settings per model (the CLI's defaults), as models.TrainDefaults.
struct TrainDefaults {
    std::string optimizer = "sgd";
    double lr = 0.05, momentum = 0.9, weight_decay = 0.0;
    int64_t batch_size = 64, epochs = 10;
    std::string schedule = "cosine";
    std::string loss = "cross_entropy";  // or "mse" (on one-hot targets)
};

// Limits on a model from a spec or a file, so that a small text cannot ask for a large allocation:
// any one size (features, channels, kernel, stride, padding), and values per sample in any layer.
constexpr int64_t MAX_SIZE = int64_t{1} << 20, MAX_ELEMENTS = int64_t{1} << 26;

std::vector<std::string> model_names();
// The named model's defaults; TrainDefaults{} for any other name ("custom").
TrainDefaults defaults_for(const std::string& name);

// A custom model in place of a named one (as build_model's hidden, activation and layers in Python).
struct ModelOptions {
    std::vector<int64_t> hidden;        // an MLP of these hidden sizes ...
    std::string activation = "relu";    // ... with this activation between them
    std::optional<std::string> layers;  // or a layer spec (parse_layer_spec)
    bool bias = true;                   // false: no bias in any Linear or Conv2d (--no-bias)
    std::string init = "default";       // how Linear and Conv2d weights are drawn (nn::init_names)
};
// A named model for inputs of input_shape (C, H, W), or the custom one `custom` describes; weights
// drawn from default_generator().
nn::Sequential build_model(const std::string& name, const Shape& input_shape = {1, 28, 28}, int64_t num_classes = 10,
                           const ModelOptions& custom = {});

// The activations a spec, --hidden's --activation and a checkpoint can name: elu, gelu, leaky_relu,
// relu, sigmoid, silu, softplus, tanh (sorted). make_activation builds one (value: leaky_relu's slope); an unknown name
// raises HandgradError naming it and the known ones.
std::vector<std::string> activation_names();
std::unique_ptr<nn::Module> make_activation(const std::string& name, std::optional<double> value = {});

// -- layer specs (models.py's grammar, "conv8k5s1p2-maxpool3s2p1-fc120-sigmoid") -------------------
// One token: kind is conv, maxpool, avgpool, adaptiveavg, fc, out, bn, ln, dropout, activation or
// none; position counts from 1; kernel, stride, padding, dilation and groups are unset where the
// token leaves the default.
struct SpecToken {
    int position = 0;
    std::string text, kind;
    int64_t size = 0;
    std::optional<nn::Pair> kernel, stride, padding, dilation;
    std::optional<int64_t> groups;
    std::optional<nn::Pair> output_size;  // adaptiveavg's (h, w)
    bool bias = true;
    std::optional<double> value;  // dropout probability or leaky_relu slope
    std::string activation;
};
// What a spec token may be, in one line (the errors and --help say it).
std::string spec_grammar();
// The tokens of a spec, checked for syntax and order without any input shape; a bad one raises
// HandgradError "bad layer spec token 'x' (number 2) in 'spec': why", as Python's ValueError.
std::vector<SpecToken> tokenize_layer_spec(const std::string& spec);
// The layers of a spec for inputs of input_shape and num_classes outputs:
// conv<C>[k<K>][s<S>][p<P>][d<D>][g<G>][nb] (Conv2d then ReLU; kernel 3, stride 1, padding D*(K//2),
// dilation 1, 1 group), maxpool|avgpool[<K>][s<S>][p<P>] (2, K, 0), adaptiveavg<N> (to N x N maps, or
// <H>x<W>), fc<N>[nb] (Linear then ReLU, flattening first), bn (BatchNorm2d after maps, else 1d),
// ln (LayerNorm over each sample's features), dropout[<P>] (0.5), an activation or none (replacing
// the ReLU before), out[nb] (the final Linear, appended when absent). Each map size is
// (H + 2P - D*(K - 1) - 1) // S + 1.
nn::Sequential parse_layer_spec(const std::string& spec, const Shape& input_shape, int64_t num_classes);

// The model as a JSON list of {"type": ..., constructor arguments}, the same JSON Python writes.
json architecture(const nn::Sequential& model);
// Rebuild a Sequential from architecture(model) (Python's or C++'s). Every entry is checked first:
// a missing, mistyped, out-of-range or unknown field raises HandgradError("architecture", ...)
// naming the entry and the field.
nn::Sequential from_architecture(const json& layers);
// One tensor of a model's state_dict: a parameter or buffer of that shape, or (floating = false)
// an integer count such as BatchNorm's num_batches_tracked, 0-d.
struct StateEntry {
    std::string name;
    Shape shape;
    bool floating = true;
};
// The parameters and buffers from_architecture(layers) would create ("0.weight" -> shape), computed
// without allocating them, so a file's tensors can be checked before any layer is built.
std::vector<StateEntry> state_shapes(const json& layers);
// A JSON value for an error message: scalars as written (cut at 40 characters), lists and objects
// by their size.
std::string describe(const json& value);
// A table of layers, output shapes and parameter counts (one forward of a zero batch).
std::string summary(nn::Sequential& model, const Shape& input_shape);

}  // namespace handgrad
