// Training and evaluation: the loop the CLI runs (mirrors src/handgrad/training.py). Data flows one
// way: batches -> model.forward -> loss -> loss.backward -> model.backward -> optimizer.step.
#pragma once

#include "handgrad/data.hpp"
#include "handgrad/optim.hpp"
#include "handgrad/serialization.hpp"

#include <optional>

namespace handgrad {

// Everything that defines a run; unset options take the model's defaults (models.hpp).
struct TrainConfig {
    std::string dataset = "mnist", model = "mlp-small";
    std::optional<int64_t> epochs, batch_size;
    std::optional<std::string> optimizer, schedule, loss;
    std::optional<double> lr, momentum, weight_decay;
    uint64_t seed = 0;
    std::optional<std::string> data_dir, out;
    std::optional<int64_t> train_size;
    double val_fraction = 0.1;
    // C++ only: start from this checkpoint's architecture and weights (and its normalisation) ...
    std::optional<std::string> init;
    // ... and visit the training file's images in this order: an IDX int32 file of shape (M,) or
    // (epochs, M), row e for epoch e; the training set is the images it names, the validation set
    // every other training-file image.
    std::optional<std::string> order;
    // Stop after this many optimizer steps in all (for timing: the epoch line then covers those steps).
    std::optional<int64_t> max_steps;
    bool quiet = false;

    TrainConfig resolved() const;  // defaults filled in
};

// The loss and the targets it takes: class indices for cross-entropy; one-hot rows for MSE, summed
// over the classes and averaged over the batch.
class Objective {
public:
    explicit Objective(std::string kind, int64_t num_classes);
    float operator()(const Tensor& output, const std::vector<int64_t>& labels);
    Tensor backward();
    std::string kind;

private:
    int64_t num_classes, batch = 1;
    nn::CrossEntropyLoss cross_entropy;
    nn::MSELoss mse{functional::Reduction::sum};
};

struct Evaluation {
    double loss = 0.0, accuracy = 0.0;
    Tensor logits;
};
// Mean loss, accuracy and logits over the whole set, in eval mode, in batches of batch_size.
Evaluation evaluate(nn::Sequential& model, const Tensor& x, const std::vector<int64_t>& y,
                    Objective* objective = nullptr, int64_t batch_size = 1000);

struct EpochRow {
    int64_t epoch = 0;
    double train_loss = 0, train_acc = 0, val_loss = 0, val_acc = 0, test_loss = 0, test_acc = 0, lr = 0,
           seconds = 0, samples_per_s = 0;
};
// The per-epoch line, character for character as Python's training.format_epoch.
std::string format_epoch(const EpochRow& row, int64_t epochs);

// Runs config into config.out: best.safetensors, last.safetensors, history.json; prints one line per epoch.
std::vector<EpochRow> train(const TrainConfig& config);

}  // namespace handgrad
