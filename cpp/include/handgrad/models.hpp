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

std::vector<std::string> model_names();
TrainDefaults defaults_for(const std::string& name);
// A named model for inputs of input_shape (C, H, W); weights drawn from default_generator().
nn::Sequential build_model(const std::string& name, const Shape& input_shape = {1, 28, 28}, int64_t num_classes = 10);

// The model as a JSON list of {"type": ..., constructor arguments}, the same JSON Python writes.
json architecture(const nn::Sequential& model);
// Rebuild a Sequential from architecture(model) (Python's or C++'s). Every entry is checked first:
// a missing, mistyped, out-of-range or unknown field raises HandgradError("architecture", ...)
// naming the entry and the field.
nn::Sequential from_architecture(const json& layers);
// The parameters from_architecture(layers) would create ("0.weight" -> shape), computed without
// allocating them, so a file's tensors can be checked before any layer is built.
std::vector<std::pair<std::string, Shape>> parameter_shapes(const json& layers);
// A JSON value for an error message: scalars as written (cut at 40 characters), lists and objects
// by their size.
std::string describe(const json& value);
// A table of layers, output shapes and parameter counts (one forward of a zero batch).
std::string summary(nn::Sequential& model, const Shape& input_shape);

}  // namespace handgrad
