// Training and evaluation: the loop the CLI runs (mirrors src/handgrad/training.py). Data flows one
// way: batches -> model.forward -> loss -> loss.backward -> model.backward -> optimizer.step.
#pragma once

#include "handgrad/data.hpp"
#include "handgrad/optim.hpp"
#include "handgrad/serialization.hpp"

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

namespace handgrad {

// Everything that defines a run; unset options take the model's defaults (models.hpp). The fields
// Python's TrainConfig has carry its names, and go to manifest.json under them.
struct TrainConfig {
    std::string dataset = "mnist", model = "mlp-small";
    std::optional<int64_t> epochs, batch_size;
    std::optional<std::string> optimizer, schedule, loss;
    std::optional<double> lr, momentum, weight_decay;
    uint64_t seed = 0;
    std::optional<std::string> data_dir, out;
    std::optional<int64_t> train_size;
    double val_fraction = 0.1;
    // A custom model instead of the named one: an MLP of these hidden sizes with `activation`, or
    // a layer spec (models.hpp: parse_layer_spec). Its model name is then "custom".
    std::vector<int64_t> hidden;
    std::string activation = "relu";
    std::optional<std::string> layers;
    bool bias = true;  // false: no bias in any Linear or Conv2d (--no-bias)
    std::string weight_init = "default";  // --init NAME: how Linear and Conv2d weights are drawn (nn::init_names)
    std::optional<std::string> reduction;  // how the loss combines a batch (reductions_of); none: its default
    int64_t grad_norm_every = 50;          // record per-parameter gradient norms every this many steps
    bool custom() const { return !hidden.empty() || layers.has_value(); }
    // C++ only: start from this checkpoint's architecture and weights (and its normalisation) ...
    std::optional<std::string> init;
    // ... and visit the training file's images in this order: an IDX int32 file of shape (M,) or
    // (epochs, M), row e for epoch e; the training set is the images it names, the validation set
    // every other training-file image.
    std::optional<std::string> order;
    // Stop after this many optimizer steps in all (for timing: the epoch line then covers those steps).
    std::optional<int64_t> max_steps;
    bool quiet = false;
    bool overwrite = false;  // replace a run already in out (else refused, as the Python's --overwrite)

    TrainConfig resolved() const;  // defaults filled in
};

// The loss a run minimises and the targets it takes: class indices for cross-entropy, one-hot rows
// t_n for MSE (as training.Objective). The reduction says how a batch of N combines:
//     cross_entropy  mean (default), sum
//     mse            batchmean (default) = 1/N sum_n ||y_n - t_n||^2, mean = the same / C, sum
class Objective {
public:
    // reduction: none for the loss's default; one it does not take raises HandgradError.
    explicit Objective(std::string kind, int64_t num_classes, std::optional<std::string> reduction = {});
    float operator()(const Tensor& output, const std::vector<int64_t>& labels);
    Tensor backward();
    // The mean per-sample loss of a batch of n whose loss (as reduced) is `loss`.
    double sample_mean(double loss, int64_t n) const { return reduction == "sum" ? loss / std::max<int64_t>(n, 1) : loss; }
    std::string kind, reduction;

private:
    int64_t num_classes;
    float scale = 1.0f;  // N for batchmean: the summed loss is divided by it
    std::optional<nn::CrossEntropyLoss> cross_entropy;
    std::optional<nn::MSELoss> mse;
};

// The reductions each loss takes, its default first.
const std::vector<std::string>& reductions_of(const std::string& kind);

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
    std::optional<double> val_top_k, test_top_k;  // with more classes than HISTORY_TOP_K
};
// The k of the top-k accuracy the history records, for more classes than k (as metrics.history_top_k).
constexpr int64_t HISTORY_TOP_K = 5;
// The fraction of rows of logits (N, C) whose label is among the k largest outputs.
double top_k_accuracy(const Tensor& logits, const std::vector<int64_t>& labels, int64_t k);
// How many of `available` training images validate (as training.validation_size): the fraction
// val_fraction; with train_size N, round(N f / (1 - f)), so that validation stays the fraction f of
// the images the run uses. At least 1; a train_size that leaves too few images raises HandgradError.
int64_t validation_size(int64_t available, double val_fraction, std::optional<int64_t> train_size,
                        const std::string& dataset);
// The per-epoch line, character for character as Python's training.format_epoch.
std::string format_epoch(const EpochRow& row, int64_t epochs);

// The arrays a run trains and evaluates on, already normalised (as training.Data).
struct Data {
    Tensor train_x, val_x, test_x;
    std::vector<int64_t> train_y, val_y, test_y;
    std::vector<std::string> classes;
    Normalization normalization;
    Shape input_shape;   // (C, H, W)
    std::string dataset, source;
    // C++ only, with --order: per epoch, positions into train_x (the last row repeats)
    std::vector<std::vector<int64_t>> orders;
};

// Runs config into config.out (mirrors training.Trainer): setup() reads the data and builds the
// model, optimizer and schedule; fit() trains epoch by epoch, each epoch's end writing
// best.safetensors (lowest validation loss), last.safetensors and history.json.
//     Trainer trainer(config);
//     trainer.setup().fit();
class Trainer {
public:
    using Log = std::function<void(const std::string&)>;
    explicit Trainer(const TrainConfig& config, Log log = {});

    Trainer& setup();
    json checkpoint_metadata() const;
    // One pass over the training set (or up to max_steps): forward, loss, backward, step per batch.
    void train_epoch();
    // Evaluate, log the epoch's line, step the schedule, save the checkpoints and the history.
    void end_epoch();
    Trainer& fit();
    // history.json ({"epochs": rows, "grad_norms": [...]}) and history.csv, as Python writes them.
    void write_history() const;
    // manifest.json: the configuration (under Python's TrainConfig names), data, model and build.
    void write_manifest();

    TrainConfig config;  // resolved: every default filled in
    std::filesystem::path run_dir;
    Data data;
    nn::Sequential model;
    std::optional<Objective> objective;
    std::unique_ptr<optim::Optimizer> optimizer;
    std::optional<optim::CosineAnnealingLR> cosine;
    std::optional<optim::StepLR> step_lr;
    std::optional<optim::MultiStepLR> multistep;
    std::optional<optim::ReduceLROnPlateau> plateau;
    std::vector<EpochRow> history;
    json grad_norm_log = json::array();  // {"step", "epoch", name: norm, ...} every grad_norm_every steps
    double best_val_loss = INFINITY;
    int64_t epoch = 0, step_in_epoch = 0, global_step = 0;

private:
    // The loss, a gradient or a weight became NaN or infinite: stop before saving bad weights.
    [[noreturn]] void diverged(const std::string& what) const;
    bool out_of_steps() const { return config.max_steps && global_step >= *config.max_steps; }

    struct Partial {  // the running sums of the epoch in progress
        double loss_sum = 0;
        int64_t correct = 0, seen = 0;
        double seconds = 0;
        std::string steps;  // its rows of steps.csv: step,epoch,loss,acc
    } partial;
    Log log;
    json init_metadata = json::object();
};

// Train as config says and return the history (one row per epoch); prints one line per epoch.
std::vector<EpochRow> train(const TrainConfig& config);

}  // namespace handgrad
