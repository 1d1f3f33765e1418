// The training loop (mirrors src/handgrad/training.py).
#include "handgrad/training.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

namespace handgrad {

TrainConfig TrainConfig::resolved() const {
    TrainConfig c = *this;
    const TrainDefaults d = defaults_for(model);
    if (!c.epochs) c.epochs = d.epochs;
    if (!c.batch_size) c.batch_size = d.batch_size;
    if (!c.optimizer) c.optimizer = d.optimizer;
    if (!c.lr) c.lr = d.lr;
    if (!c.momentum) c.momentum = d.momentum;
    if (!c.weight_decay) c.weight_decay = d.weight_decay;
    if (!c.schedule) c.schedule = d.schedule;
    if (!c.loss) c.loss = d.loss;
    if (!c.out) c.out = "runs/" + dataset + "-" + model + "-cpp";
    return c;
}

Objective::Objective(std::string kind_, int64_t num_classes) : kind(std::move(kind_)), num_classes(num_classes) {
    if (kind != "cross_entropy" && kind != "mse")
        throw HandgradError("Objective", "unknown loss '" + kind + "'; known: cross_entropy, mse");
}

float Objective::operator()(const Tensor& output, const std::vector<int64_t>& labels) {
    if (output.ndim() != 2 || output.shape[1] != num_classes)
        throw ShapeError("Objective(" + kind + ")", "model output", "(N, " + std::to_string(num_classes) + ")",
                         output.shape);
    if (kind == "cross_entropy") return cross_entropy.forward(output, labels);
    batch = output.shape[0];
    if (static_cast<int64_t>(labels.size()) != batch)
        throw ShapeError("Objective(mse)", "labels", "(" + std::to_string(batch) + ",)", {static_cast<int64_t>(labels.size())});
    for (auto t : labels)
        if (t < 0 || t >= num_classes)
            throw HandgradError("Objective(mse)", "class indices must be in [0, " + std::to_string(num_classes - 1) +
                                                      "], got " + std::to_string(t));
    Tensor onehot(output.shape);
    for (int64_t n = 0; n < batch; ++n) onehot[n * num_classes + labels[n]] = 1.0f;
    return mse.forward(output, onehot) / static_cast<float>(batch);
}

Tensor Objective::backward() {
    return kind == "cross_entropy" ? cross_entropy.backward() : mse.backward(1.0f / static_cast<float>(batch));
}

Evaluation evaluate(nn::Sequential& model, const Tensor& x, const std::vector<int64_t>& y, Objective* objective,
                    int64_t batch_size) {
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    const int64_t n = x.shape[0];
    Evaluation result;
    double loss_sum = 0;
    int64_t correct = 0;
    std::vector<float> logits;
    int64_t classes = 0;
    for (int64_t start = 0; start < n; start += batch_size) {
        const int64_t stop = std::min(n, start + batch_size);
        std::vector<int64_t> index(stop - start);
        for (int64_t i = start; i < stop; ++i) index[i - start] = i;
        const Tensor out = model.forward(data::take(x, index));
        if (out.ndim() != 2 || out.shape[0] != stop - start || out.shape[1] < 1)
            throw ShapeError("evaluate", "model output", "(" + std::to_string(stop - start) + ", classes)", out.shape);
        classes = out.shape[1];
        const auto labels = data::take(y, index);
        if (objective) loss_sum += static_cast<double>((*objective)(out, labels)) * static_cast<double>(stop - start);
        for (int64_t r = 0; r < stop - start; ++r) {
            const float* row = out.ptr() + r * classes;
            if (std::max_element(row, row + classes) - row == labels[r]) correct++;
        }
        logits.insert(logits.end(), out.data.begin(), out.data.end());
    }
    model.train(was_training);
    result.loss = loss_sum / static_cast<double>(std::max<int64_t>(n, 1));
    result.accuracy = n ? static_cast<double>(correct) / static_cast<double>(n) : NAN;
    result.logits = Tensor({n, classes}, std::move(logits));
    return result;
}

std::string format_epoch(const EpochRow& r, int64_t epochs) {
    const int width = static_cast<int>(std::to_string(epochs).size());
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "epoch %*lld/%lld  train loss %.4f acc %6.2f%%  |  val loss %.4f acc %6.2f%%  |  test acc %6.2f%%  |  %.1f s",
                  width, static_cast<long long>(r.epoch), static_cast<long long>(epochs), r.train_loss,
                  100 * r.train_acc, r.val_loss, 100 * r.val_acc, 100 * r.test_acc, r.seconds);
    return buf;
}

namespace {

std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& c, std::vector<Parameter*> params) {
    if (c.optimizer == "sgd")
        return std::make_unique<optim::SGD>(
            params, optim::SGDOptions{.lr = *c.lr, .momentum = *c.momentum, .weight_decay = *c.weight_decay});
    if (c.optimizer == "adam" || c.optimizer == "adamw")
        return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = *c.lr, .weight_decay = *c.weight_decay,
                                                                        .decoupled_weight_decay = c.optimizer == "adamw"});
    throw HandgradError("train", "unknown optimizer '" + *c.optimizer + "'; known: sgd, adam, adamw");
}

json row_json(const EpochRow& r) {
    return {{"epoch", r.epoch},       {"train_loss", r.train_loss}, {"train_acc", r.train_acc},
            {"val_loss", r.val_loss}, {"val_acc", r.val_acc},       {"test_loss", r.test_loss},
            {"test_acc", r.test_acc}, {"lr", r.lr},                 {"seconds", r.seconds},
            {"samples_per_s", r.samples_per_s}};
}

bool all_finite(const Tensor& t) {
    return std::all_of(t.data.begin(), t.data.end(), [](float v) { return std::isfinite(v); });
}

// Which training-file images train and validate: the --order file's (and its per-epoch orders), or
// a seeded stratified split, optionally cut to train_size.
void choose_images(const TrainConfig& c, const data::Dataset& ds, std::vector<int64_t>& train_index,
                   std::vector<int64_t>& val_index, std::vector<std::vector<int64_t>>& orders) {
    const int64_t n_train_file = ds.train_images.shape[0];
    if (c.order) {
        const idx::Array file = idx::read_idx(*c.order);
        if (file.shape.size() > 2 || file.numel() == 0)
            throw HandgradError(*c.order, "expected an order of shape (M,) or (epochs, M), got " + fmt_shape(file.shape));
        const int64_t rows = file.shape.size() == 2 ? file.shape[0] : 1, m = file.shape.back();
        std::set<int64_t> members;
        std::vector<std::vector<int64_t>> given(rows, std::vector<int64_t>(m));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < m; ++i) {
                const double v = file.at(r * m + i);
                if (!(v >= 0 && v < static_cast<double>(n_train_file)) || v != std::floor(v))
                    throw HandgradError(*c.order, "index " + std::to_string(v) + " is outside the training file's " +
                                                      std::to_string(n_train_file) + " images");
                given[r][i] = static_cast<int64_t>(v);
                members.insert(given[r][i]);
            }
        train_index.assign(members.begin(), members.end());
        std::vector<int64_t> position(n_train_file, -1);
        for (size_t i = 0; i < train_index.size(); ++i) position[train_index[i]] = static_cast<int64_t>(i);
        for (auto& row : given) {
            for (auto& v : row) v = position[v];
            orders.push_back(row);
        }
        for (int64_t i = 0; i < n_train_file; ++i)
            if (position[i] < 0) val_index.push_back(i);
        return;
    }
    const auto val = data::stratified_indices(ds.train_labels, std::llround(c.val_fraction * n_train_file), c.seed);
    std::vector<bool> is_val(n_train_file);
    for (auto i : val) is_val[i] = true;
    for (int64_t i = 0; i < n_train_file; ++i) (is_val[i] ? val_index : train_index).push_back(i);
    if (c.train_size) {
        const auto labels = data::take(ds.train_labels, train_index);
        train_index = data::take(train_index, data::stratified_indices(labels, *c.train_size, c.seed));
    }
}

}  // namespace

Trainer::Trainer(const TrainConfig& config_, Log log_)
    : config(config_.resolved()), run_dir(*config.out),
      log(log_ ? std::move(log_) : [](const std::string& line) { std::cout << line << std::endl; }) {}

Trainer& Trainer::setup() {
    const TrainConfig& c = config;
    data::Dataset ds = data::load_dataset(c.dataset, c.data_dir);
    std::vector<int64_t> train_index, val_index;
    choose_images(c, ds, train_index, val_index, data.orders);
    Tensor train_raw = data::take(ds.train_images, train_index);
    data.train_y = data::take(ds.train_labels, train_index);
    data.val_y = data::take(ds.train_labels, val_index);
    data.input_shape = Shape(ds.train_images.shape.begin() + 1, ds.train_images.shape.end());

    manual_seed(c.seed);  // the initial weights depend on the seed alone
    std::optional<Normalization> stored;
    if (c.init) {
        Checkpoint ck = load(*c.init);
        model = std::move(ck.model);
        init_metadata = ck.metadata;
        stored = ck.normalization;
    } else {
        model = build_model(c.model, data.input_shape, static_cast<int64_t>(ds.classes.size()));
    }
    // training statistics only (or the checkpoint's, to continue from it): never the test set's
    const data::Normalizer norm = stored ? data::Normalizer{.mean = stored->mean, .std = stored->std} : data::Normalizer::fit(train_raw);
    data.normalization = {norm.mean, norm.std};
    data.train_x = norm(train_raw);
    train_raw = Tensor();
    data.val_x = norm(data::take(ds.train_images, val_index));
    data.test_x = norm(ds.test_images);
    data.test_y = ds.test_labels;
    data.classes = ds.classes;
    data.dataset = ds.name;
    data.source = ds.source;

    objective.emplace(*c.loss, static_cast<int64_t>(data.classes.size()));
    optimizer = make_optimizer(c, model.parameters());
    if (c.schedule == "cosine") cosine.emplace(*optimizer, *c.epochs);
    else if (c.schedule == "step") step_lr.emplace(*optimizer, std::max<int64_t>(1, *c.epochs / 3), 0.1);
    else if (c.schedule != "none") throw HandgradError("train", "unknown schedule '" + *c.schedule + "'; known: cosine, step, none");

    log(c.dataset + ": " + std::to_string(data.train_y.size()) + " train / " + std::to_string(data.val_y.size()) +
        " val / " + std::to_string(data.test_y.size()) + " test images " + fmt_shape(data.input_shape) + ", from " +
        data.source);
    char buf[256];
    std::snprintf(buf, sizeof buf, "model %s; %s lr %g momentum %g weight decay %g, %s schedule, batch %lld, %lld epochs, seed %llu",
                  (c.init ? *c.init : c.model).c_str(), c.optimizer->c_str(), *c.lr, *c.momentum, *c.weight_decay,
                  c.schedule->c_str(), static_cast<long long>(*c.batch_size), static_cast<long long>(*c.epochs),
                  static_cast<unsigned long long>(c.seed));
    log(buf);
    if (!c.quiet) std::cout << summary(model, data.input_shape);
    return *this;
}

json Trainer::checkpoint_metadata() const {
    return {{"input_shape", data.input_shape},
            {"normalization", {{"mean", data.normalization.mean}, {"std", data.normalization.std}}},
            {"classes", data.classes},
            {"dataset", data.dataset},
            {"model", init_metadata.value("model", config.model)},
            {"loss", *config.loss},
            {"epoch", epoch}};
}

void Trainer::train_epoch() {
    const int64_t n = static_cast<int64_t>(data.train_y.size()), batch = *config.batch_size;
    const std::vector<int64_t> order = config.order ? data.orders[std::min<size_t>(epoch, data.orders.size() - 1)]
                                                    : data::epoch_order(n, config.seed, epoch);
    const int64_t m = static_cast<int64_t>(order.size());
    const auto started = std::chrono::steady_clock::now();
    for (int64_t start = 0; start < m && !out_of_steps(); start += batch) {
        const std::vector<int64_t> index(order.begin() + start, order.begin() + std::min(m, start + batch));
        const auto y = data::take(data.train_y, index);
        const Tensor out = model.forward(data::take(data.train_x, index));
        const float loss = (*objective)(out, y);
        if (!std::isfinite(loss)) diverged("the loss became " + std::to_string(loss));
        optimizer->zero_grad();
        model.backward(objective->backward(), false);
        for (auto* p : model.parameters())
            if (!all_finite(p->grad)) diverged("a gradient became non-finite");
        optimizer->step();
        partial.loss_sum += static_cast<double>(loss) * static_cast<double>(index.size());
        for (size_t r = 0; r < index.size(); ++r) {
            const float* row = out.ptr() + r * out.shape[1];
            if (std::max_element(row, row + out.shape[1]) - row == y[r]) partial.correct++;
        }
        partial.seen += static_cast<int64_t>(index.size());
        ++step_in_epoch, ++global_step;
    }
    partial.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (out_of_steps()) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "trained %lld steps (%lld samples) in %.3f s: %.0f samples/s",
                      static_cast<long long>(global_step), static_cast<long long>(partial.seen), partial.seconds,
                      partial.seen / std::max(partial.seconds, 1e-9));
        log(buf);
    }
}

void Trainer::diverged(const std::string& what) const {
    const auto last = run_dir / "last.safetensors";
    const std::string keep = std::filesystem::exists(last) ? "; the last good checkpoint is " + last.string()
                                                           : "; no checkpoint was written yet";
    throw HandgradError("epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(step_in_epoch + 1),
                        what + keep + ". Try a lower --lr.");
}

void Trainer::end_epoch() {
    for (auto& [name, p] : model.named_parameters())  // never write broken weights to best or last
        if (!all_finite(p->data)) diverged("weight " + name + " became non-finite");
    const Evaluation val = evaluate(model, data.val_x, data.val_y, &*objective);
    const Evaluation test = evaluate(model, data.test_x, data.test_y, &*objective);
    const Partial& p = partial;
    const EpochRow row{.epoch = epoch + 1,
                       .train_loss = p.loss_sum / std::max<int64_t>(p.seen, 1),
                       .train_acc = double(p.correct) / std::max<int64_t>(p.seen, 1),
                       .val_loss = val.loss,
                       .val_acc = val.accuracy,
                       .test_loss = test.loss,
                       .test_acc = test.accuracy,
                       .lr = optimizer->lr,
                       .seconds = p.seconds,
                       .samples_per_s = p.seen / std::max(p.seconds, 1e-9)};
    if (!std::isfinite(row.val_loss)) diverged("the validation loss became " + std::to_string(row.val_loss));
    history.push_back(row);
    if (cosine) cosine->step();
    if (step_lr) step_lr->step();
    epoch += 1, step_in_epoch = 0;
    partial = Partial{};
    log(format_epoch(row, *config.epochs));
    const json meta = checkpoint_metadata();
    if (row.val_loss < best_val_loss) {
        best_val_loss = row.val_loss;
        save(model, (run_dir / "best.safetensors").string(), meta);
    }
    save(model, (run_dir / "last.safetensors").string(), meta);
    write_history();
}

Trainer& Trainer::fit() {
    std::filesystem::create_directories(run_dir);
    while (epoch < *config.epochs && !out_of_steps()) {
        train_epoch();
        end_epoch();
    }
    if (!history.empty()) {
        const auto best = *std::min_element(history.begin(), history.end(),
                                            [](auto& a, auto& b) { return a.val_loss < b.val_loss; });
        char buf[256];
        std::snprintf(buf, sizeof buf, "best val loss %.4f at epoch %lld (test acc %.2f%%); final test acc %.2f%%",
                      best.val_loss, static_cast<long long>(best.epoch), 100 * best.test_acc, 100 * history.back().test_acc);
        log(buf);
    }
    log("run directory: " + run_dir.string() + "  (best.safetensors, last.safetensors, history.json)");
    return *this;
}

void Trainer::write_history() const {
    json rows = json::array();
    for (auto& r : history) rows.push_back(row_json(r));
    std::ofstream((run_dir / "history.json").string()) << json{{"epochs", rows}}.dump(1) << "\n";
}

std::vector<EpochRow> train(const TrainConfig& config) {
    Trainer trainer(config);
    trainer.setup().fit();
    return trainer.history;
}

}  // namespace handgrad
