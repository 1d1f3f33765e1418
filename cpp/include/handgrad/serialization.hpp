// Checkpoints in the safetensors format, exchanged with handgrad.save / handgrad.load both ways
// (mirrors src/handgrad/serialization.py): tensors under the PyTorch twin's state_dict names
// ("0.weight", ...), and in the header metadata, each value a JSON string, everything load needs
// to rebuild the model (format, handgrad_version, architecture, dtype, input_shape, normalization,
// classes, dataset, model, loss, epoch) and, optionally, "reference": a few inputs with per-layer
// checks of the outputs the saving side computed for them.
//
// The safetensors layout: 8 bytes little-endian header length, a JSON header
// {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}},
// then the raw little-endian tensor bytes.
#pragma once

#include "handgrad/models.hpp"

#include <map>
#include <optional>

namespace handgrad {

constexpr const char* FORMAT = "handgrad-checkpoint-1";
constexpr const char* VERSION = "0.1.0";

struct TensorFile {
    std::vector<std::pair<std::string, Tensor>> tensors;  // floating tensors, in file order
    std::map<std::string, std::string> metadata;          // raw strings
    std::vector<std::pair<std::string, int64_t>> counts;  // 0-d integer tensors (num_batches_tracked)
};

// Write float32 tensors, 0-d int64 counts and string metadata as one safetensors file, atomically
// (temp file + rename).
void save_tensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata,
                  const std::vector<std::pair<std::string, int64_t>>& counts = {});
// Read a safetensors file (F32 and F64 tensors, F64 converted to float32; 0-d I64 or I32 counts);
// a missing, truncated or corrupt file raises HandgradError naming the file.
TensorFile load_tensors(const std::string& path);

// JSON text as Python's json.dumps writes it (", " and ": " separators, ASCII only).
std::string py_dumps(const json& value);

// Per-layer checks of the model's outputs for `inputs` (N, *input_shape), in eval mode:
// {"input_shape": [...], "inputs": [flat values], "layers": [{"type", "shape", "sum", "abs_sum",
// "sum_sq", "first": [the first 8 values]}, ...]}: what Python's save(reference_inputs=...) stores.
json reference_checks(nn::Sequential& model, const Tensor& inputs);

// The model's outputs for the stored reference inputs do not match the stored checks.
class ReferenceMismatch : public HandgradError {
public:
    ReferenceMismatch(const std::string& where, const std::string& message, int64_t layer, std::string statistic,
                      double expected, double got)
        : HandgradError(where, message), layer(layer), statistic(std::move(statistic)), expected(expected), got(got) {}
    int64_t layer;  // index of the first layer whose output diverges
    std::string statistic;
    double expected, got;
};

struct ReferenceTolerance {
    double rtol = 1e-4, atol = 1e-4;  // |got - expected| <= atol + rtol * scale, per statistic
};
// Recompute the reference inputs through the model layer by layer; throw ReferenceMismatch naming
// the first layer whose output diverges. Returns the number of layers checked.
size_t check_reference(nn::Sequential& model, const json& reference, const std::string& where,
                       ReferenceTolerance tolerance = {});

// Save model with its architecture and the given metadata (values JSON-encoded here); with
// reference_inputs, also the per-layer reference checks.
void save(nn::Sequential& model, const std::string& path, const json& metadata = json::object(),
          const Tensor* reference_inputs = nullptr);

struct LoadOptions {
    bool check_reference = true;  // when the file carries "reference", recompute it on load
    ReferenceTolerance tolerance{};
};

struct Normalization {
    double mean = 0.0, std = 1.0;  // x -> (x - mean) / std
};

struct Checkpoint {
    nn::Sequential model;
    json metadata;  // decoded header metadata (normalization, classes, ...)
    size_t reference_layers_checked = 0;
    std::string path;
    // The metadata fields the C++ reads, checked on load; absent ones stay empty.
    std::optional<Shape> input_shape;  // (C, H, W) of one image
    std::optional<Normalization> normalization;
    std::vector<std::string> classes;
    std::optional<std::string> dataset, model_name, loss;

    // The names of the model's `outputs` classes: the stored ones, which must be that many, or
    // "0", "1", ... when the file names none.
    std::vector<std::string> class_names(int64_t outputs) const;
};
// Rebuild the model saved at path and load its weights. Nothing is allocated for the model before
// the file's tensors are checked against its architecture: tensors that do not fit raise
// HandgradError listing the missing, unexpected and mis-shaped keys. Every metadata field the C++
// reads (architecture, dtype, input_shape, normalization, classes, dataset, model, loss, reference)
// is checked, and a malformed one raises HandgradError naming the file and the field; so do
// non-finite weights.
Checkpoint load(const std::string& path, LoadOptions options = {});

}  // namespace handgrad
