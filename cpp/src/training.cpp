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
    if (kind == "cross_entropy") return cross_entropy.forward(output, labels);
    batch = output.shape[0];
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
        return std::make_unique<optim::SGD>(params, optim::SGDOptions{*c.lr, *c.momentum, 0.0, *c.weight_decay});
    if (c.optimizer == "adam" || c.optimizer == "adamw")
        return std::make_unique<optim::Adam>(
            params, optim::AdamOptions{*c.lr, 0.9, 0.999, 1e-8, *c.weight_decay, c.optimizer == "adamw"});
    throw HandgradError("train", "unknown optimizer '" + *c.optimizer + "'; known: sgd, adam, adamw");
}

json row_json(const EpochRow& r) {
    return {{"epoch", r.epoch},       {"train_loss", r.train_loss}, {"train_acc", r.train_acc},
            {"val_loss", r.val_loss}, {"val_acc", r.val_acc},       {"test_loss", r.test_loss},
            {"test_acc", r.test_acc}, {"lr", r.lr},                 {"seconds", r.seconds},
            {"samples_per_s", r.samples_per_s}};
}

}  // namespace

std::vector<EpochRow> train(const TrainConfig& config) {
    const TrainConfig c = config.resolved();
    const auto log = [&](const std::string& line) { std::cout << line << std::endl; };
    data::Dataset ds = data::load_dataset(c.dataset, c.data_dir);
    const int64_t n_train_file = ds.train_images.shape[0];

    // -- which images train and validate, in which order ------------------------------------------
    std::vector<int64_t> train_index, val_index;
    std::vector<std::vector<int64_t>> orders;  // per epoch, positions into train_index
    if (c.order) {
        const idx::Array file = idx::read_idx(*c.order);
        const int64_t rows = file.shape.size() == 2 ? file.shape[0] : 1, m = file.shape.back();
        std::set<int64_t> members;
        std::vector<std::vector<int64_t>> given(rows, std::vector<int64_t>(m));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < m; ++i) {
                const auto v = static_cast<int64_t>(file.at(r * m + i));
                if (v < 0 || v >= n_train_file)
                    throw HandgradError(*c.order, "index " + std::to_string(v) + " is outside the training file's " +
                                                      std::to_string(n_train_file) + " images");
                given[r][i] = v;
                members.insert(v);
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
    } else {
        const auto val = data::stratified_indices(ds.train_labels, std::llround(c.val_fraction * n_train_file), c.seed);
        std::vector<bool> is_val(n_train_file);
        for (auto i : val) is_val[i] = true;
        for (int64_t i = 0; i < n_train_file; ++i) (is_val[i] ? val_index : train_index).push_back(i);
        if (c.train_size) {
            const auto labels = data::take(ds.train_labels, train_index);
            train_index = data::take(train_index, data::stratified_indices(labels, *c.train_size, c.seed));
        }
    }
    Tensor train_raw = data::take(ds.train_images, train_index);
    const auto train_y = data::take(ds.train_labels, train_index);
    const auto val_y = data::take(ds.train_labels, val_index);
    const Shape input_shape(ds.train_images.shape.begin() + 1, ds.train_images.shape.end());

    // -- model, normalisation, objective, optimizer ------------------------------------------------
    manual_seed(c.seed);
    nn::Sequential model;
    data::Normalizer norm;
    json init_meta = json::object();
    if (c.init) {
        Checkpoint ck = load(*c.init);
        model = std::move(ck.model);
        init_meta = ck.metadata;
    } else {
        model = build_model(c.model, input_shape, static_cast<int64_t>(ds.classes.size()));
    }
    if (init_meta.contains("normalization"))
        norm = {init_meta["normalization"]["mean"].get<double>(), init_meta["normalization"]["std"].get<double>()};
    else
        norm = data::Normalizer::fit(train_raw);
    const Tensor train_x = norm(train_raw);
    train_raw = Tensor();
    const Tensor val_x = norm(data::take(ds.train_images, val_index));
    const Tensor test_x = norm(ds.test_images);
    Objective objective(*c.loss, static_cast<int64_t>(ds.classes.size()));
    auto optimizer = make_optimizer(c, model.parameters());
    std::optional<optim::CosineAnnealingLR> cosine;
    std::optional<optim::StepLR> step_lr;
    if (c.schedule == "cosine") cosine.emplace(*optimizer, *c.epochs);
    else if (c.schedule == "step") step_lr.emplace(*optimizer, std::max<int64_t>(1, *c.epochs / 3), 0.1);
    else if (c.schedule != "none") throw HandgradError("train", "unknown schedule '" + *c.schedule + "'; known: cosine, step, none");

    log(c.dataset + ": " + std::to_string(train_y.size()) + " train / " + std::to_string(val_y.size()) + " val / " +
        std::to_string(ds.test_labels.size()) + " test images " + fmt_shape(input_shape) + ", from " + ds.source);
    {
        char buf[256];
        std::snprintf(buf, sizeof buf, "model %s; %s lr %g momentum %g weight decay %g, %s schedule, batch %lld, %lld epochs, seed %llu",
                      (c.init ? *c.init : c.model).c_str(), c.optimizer->c_str(), *c.lr, *c.momentum, *c.weight_decay,
                      c.schedule->c_str(), static_cast<long long>(*c.batch_size), static_cast<long long>(*c.epochs),
                      static_cast<unsigned long long>(c.seed));
        log(buf);
    }
    if (!c.quiet) std::cout << summary(model, input_shape);

    const std::filesystem::path run_dir(*c.out);
    std::filesystem::create_directories(run_dir);
    json meta = {{"input_shape", input_shape},
                 {"normalization", {{"mean", norm.mean}, {"std", norm.std}}},
                 {"classes", ds.classes},
                 {"dataset", ds.name},
                 {"model", init_meta.value("model", c.model)},
                 {"loss", *c.loss},
                 {"epoch", 0}};
    std::vector<EpochRow> history;
    double best_val_loss = INFINITY;
    const int64_t n = static_cast<int64_t>(train_y.size()), batch = *c.batch_size;
    int64_t global_step = 0;
    for (int64_t epoch = 0; epoch < *c.epochs && !(c.max_steps && global_step >= *c.max_steps); ++epoch) {
        const std::vector<int64_t> order = c.order ? orders[std::min<size_t>(epoch, orders.size() - 1)]
                                                   : data::epoch_order(n, c.seed, epoch);
        const int64_t m = static_cast<int64_t>(order.size());
        double loss_sum = 0;
        int64_t correct = 0, seen = 0;
        const auto started = std::chrono::steady_clock::now();
        for (int64_t start = 0; start < m && !(c.max_steps && global_step >= *c.max_steps); start += batch, ++global_step) {
            const std::vector<int64_t> index(order.begin() + start, order.begin() + std::min(m, start + batch));
            const Tensor x = data::take(train_x, index);
            const auto y = data::take(train_y, index);
            const Tensor out = model.forward(x);
            const float loss = objective(out, y);
            if (!std::isfinite(loss))
                throw HandgradError("epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(start / batch + 1),
                                    "the loss became " + std::to_string(loss) + ". Try a lower --lr.");
            optimizer->zero_grad();
            model.backward(objective.backward(), false);
            optimizer->step();
            loss_sum += static_cast<double>(loss) * static_cast<double>(index.size());
            for (size_t r = 0; r < index.size(); ++r) {
                const float* row = out.ptr() + r * out.shape[1];
                if (std::max_element(row, row + out.shape[1]) - row == y[r]) correct++;
            }
            seen += static_cast<int64_t>(index.size());
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (c.max_steps && global_step >= *c.max_steps) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "trained %lld steps (%lld samples) in %.3f s: %.0f samples/s",
                          static_cast<long long>(global_step), static_cast<long long>(seen), seconds, seen / std::max(seconds, 1e-9));
            log(buf);
        }
        const Evaluation val = evaluate(model, val_x, val_y, &objective);
        const Evaluation test = evaluate(model, test_x, ds.test_labels, &objective);
        EpochRow row{epoch + 1, loss_sum / std::max<int64_t>(seen, 1), double(correct) / std::max<int64_t>(seen, 1),
                     val.loss, val.accuracy, test.loss, test.accuracy, optimizer->lr, seconds, seen / std::max(seconds, 1e-9)};
        history.push_back(row);
        if (cosine) cosine->step();
        if (step_lr) step_lr->step();
        log(format_epoch(row, *c.epochs));
        meta["epoch"] = epoch + 1;
        if (val.loss < best_val_loss) {
            best_val_loss = val.loss;
            save(model, (run_dir / "best.safetensors").string(), meta);
        }
        save(model, (run_dir / "last.safetensors").string(), meta);
        json rows = json::array();
        for (auto& r : history) rows.push_back(row_json(r));
        std::ofstream((run_dir / "history.json").string()) << json{{"epochs", rows}}.dump(1) << "\n";
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
    return history;
}

}  // namespace handgrad
