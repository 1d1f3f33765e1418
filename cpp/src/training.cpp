// The training loop (mirrors src/handgrad/training.py).
#include "handgrad/training.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

namespace handgrad {

TrainConfig TrainConfig::resolved() const {
    TrainConfig c = *this;
    const TrainDefaults d = defaults_for(custom() ? "custom" : model);
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

const std::vector<std::string>& reductions_of(const std::string& kind) {
    static const std::map<std::string, std::vector<std::string>> table = {
        {"cross_entropy", {"mean", "sum"}}, {"mse", {"batchmean", "mean", "sum"}}};
    auto it = table.find(kind);
    if (it == table.end()) throw HandgradError("Objective", "unknown loss '" + kind + "'; known: cross_entropy, mse");
    return it->second;
}

Objective::Objective(std::string kind_, int64_t num_classes, std::optional<std::string> reduction_)
    : kind(std::move(kind_)), num_classes(num_classes) {
    const auto& known = reductions_of(kind);
    reduction = reduction_.value_or(known[0]);
    if (std::find(known.begin(), known.end(), reduction) == known.end()) {
        std::string takes;
        for (auto& r : known) takes += (takes.empty() ? "'" : " or '") + r + "'";
        throw HandgradError("argument --reduction", kind + " takes " + takes + ", got '" + reduction + "'");
    }
    // batchmean is the sum divided by N here
    const auto inner = functional::reduction_from(reduction == "batchmean" ? "sum" : reduction, "Objective");
    if (kind == "cross_entropy") cross_entropy.emplace(inner);
    else mse.emplace(inner);
}

float Objective::operator()(const Tensor& output, const std::vector<int64_t>& labels) {
    if (output.ndim() != 2 || output.shape[1] != num_classes)
        throw ShapeError("Objective(" + kind + ")", "model output", "(N, " + std::to_string(num_classes) + ")",
                         output.shape);
    const int64_t batch = output.shape[0];
    scale = reduction == "batchmean" ? static_cast<float>(std::max<int64_t>(batch, 1)) : 1.0f;
    if (kind == "cross_entropy") return cross_entropy->forward(output, labels)[0] / scale;
    if (static_cast<int64_t>(labels.size()) != batch)
        throw ShapeError("Objective(mse)", "labels", "(" + std::to_string(batch) + ",)", {static_cast<int64_t>(labels.size())});
    for (auto t : labels)
        if (t < 0 || t >= num_classes)
            throw HandgradError("Objective(mse)", "class indices must be in [0, " + std::to_string(num_classes - 1) +
                                                      "], got " + std::to_string(t));
    Tensor onehot(output.shape);
    for (int64_t n = 0; n < batch; ++n) onehot[n * num_classes + labels[n]] = 1.0f;
    return mse->forward(output, onehot)[0] / scale;
}

Tensor Objective::backward() {
    return kind == "cross_entropy" ? cross_entropy->backward(1.0f / scale) : mse->backward(1.0f / scale);
}

Evaluation evaluate(nn::Sequential& model, const Tensor& x, const std::vector<int64_t>& y, Objective* objective,
                    int64_t batch_size) {
    const bool was_training = !model.layers.empty() && model.layers[0]->training;
    model.eval();
    const NoGradGuard no_grad;  // forward alone: no layer keeps a cache for a backward that never comes
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
        if (objective) {
            const double n_out = static_cast<double>(stop - start);
            loss_sum += objective->sample_mean((*objective)(out, labels), stop - start) * n_out;
        }
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

double top_k_accuracy(const Tensor& logits, const std::vector<int64_t>& labels, int64_t k) {
    const int64_t n = logits.shape[0], C = logits.shape[1];
    int64_t hits = 0;
    for (int64_t r = 0; r < n; ++r) {
        const float* row = logits.ptr() + r * C;
        const int64_t label = labels[r];
        int64_t above = 0;  // classes ranked before the label (ties by class index, as metrics.top_k_accuracy)
        for (int64_t c = 0; c < C; ++c) above += row[c] > row[label] || (row[c] == row[label] && c < label);
        hits += above < k;
    }
    return n ? static_cast<double>(hits) / static_cast<double>(n) : NAN;
}

int64_t validation_size(int64_t available, double f, std::optional<int64_t> train_size, const std::string& dataset) {
    if (!train_size) return std::max<int64_t>(1, std::llround(f * static_cast<double>(available)));
    const auto proportionate = [f](int64_t n) {
        return std::max<int64_t>(1, std::llround(static_cast<double>(n) * f / (1 - f)));
    };
    const int64_t val = proportionate(*train_size);
    if (*train_size + val > available) {
        int64_t largest = static_cast<int64_t>(static_cast<double>(available) * (1 - f)) + 1;
        while (largest + proportionate(largest) > available) --largest;
        char f_text[32];
        std::snprintf(f_text, sizeof f_text, "%g", f);
        throw HandgradError("argument --train-size",
                            std::to_string(*train_size) + " training images and their proportionate validation set of " +
                                std::to_string(val) + " (--val-fraction " + f_text + ") need " +
                                std::to_string(*train_size + val) + " images; the " + dataset + " training set has " +
                                std::to_string(available) + ": give at most " + std::to_string(largest));
    }
    return val;
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
    if (c.optimizer == "rmsprop")
        return std::make_unique<optim::RMSprop>(
            params, optim::RMSpropOptions{.lr = *c.lr, .weight_decay = *c.weight_decay, .momentum = *c.momentum});
    if (c.optimizer == "adagrad")
        return std::make_unique<optim::Adagrad>(params, optim::AdagradOptions{.lr = *c.lr, .weight_decay = *c.weight_decay});
    throw HandgradError("train", "unknown optimizer '" + *c.optimizer + "'; known: sgd, adam, adamw, rmsprop, adagrad");
}

json row_json(const EpochRow& r) {
    json row = {{"epoch", r.epoch},       {"train_loss", r.train_loss}, {"train_acc", r.train_acc},
                {"val_loss", r.val_loss}, {"val_acc", r.val_acc},       {"test_loss", r.test_loss},
                {"test_acc", r.test_acc}, {"lr", r.lr},                 {"seconds", r.seconds},
                {"samples_per_s", r.samples_per_s}};
    const std::string k = std::to_string(HISTORY_TOP_K);
    if (r.val_top_k) row["val_top" + k + "_acc"] = *r.val_top_k, row["test_top" + k + "_acc"] = *r.test_top_k;
    return row;
}

// Write text to path through a temporary file and a rename, so a reader never sees half of it.
void atomic_write_text(const std::filesystem::path& path, const std::string& text) {
    const auto tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
    {
        std::ofstream f(tmp, std::ios::binary);
        f << text;
        if (!f) throw HandgradError(path.string(), "cannot write the file");
    }
    std::filesystem::rename(tmp, path);
}

// A CSV cell as Python's csv module writes a number: str() of it (json's shortest round trip).
std::string csv_cell(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

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
    const int64_t val_size = validation_size(n_train_file, c.val_fraction, c.train_size, ds.name);
    if (val_size >= n_train_file)
        throw HandgradError("argument --val-fraction", "leaves no training image of the " + std::to_string(n_train_file));
    const auto val = data::stratified_indices(ds.train_labels, val_size, c.seed);
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
        model = build_model(c.model, data.input_shape, static_cast<int64_t>(ds.classes.size()),
                            {.hidden = c.hidden, .activation = c.activation, .layers = c.layers, .bias = c.bias,
                             .init = c.weight_init});
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

    objective.emplace(*c.loss, static_cast<int64_t>(data.classes.size()), c.reduction);
    optimizer = make_optimizer(c, model.parameters());
    if (c.schedule == "cosine") cosine.emplace(*optimizer, *c.epochs);
    else if (c.schedule == "step") step_lr.emplace(*optimizer, std::max<int64_t>(1, *c.epochs / 3), 0.1);
    else if (c.schedule == "multistep")  // decay by 10 at half and three quarters of the run
        multistep.emplace(*optimizer, std::vector<int64_t>{*c.epochs / 2, *c.epochs * 3 / 4}, 0.1);
    else if (c.schedule == "plateau")  // stepped with the validation loss
        plateau.emplace(*optimizer, optim::ReduceLROnPlateauOptions{.factor = 0.1, .patience = 2});
    else if (c.schedule != "none")
        throw HandgradError("train", "unknown schedule '" + *c.schedule + "'; known: cosine, step, multistep, plateau, none");

    log(c.dataset + ": " + std::to_string(data.train_y.size()) + " train / " + std::to_string(data.val_y.size()) +
        " val / " + std::to_string(data.test_y.size()) + " test images " + fmt_shape(data.input_shape) + ", from " +
        data.source);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "model %s; %s lr %g momentum %g weight decay %g, %s schedule, batch %lld, %lld epochs, %s loss (%s), seed %llu",
                  (c.init ? *c.init : c.custom() ? "custom" : c.model).c_str(), c.optimizer->c_str(), *c.lr, *c.momentum,
                  *c.weight_decay, c.schedule->c_str(), static_cast<long long>(*c.batch_size),
                  static_cast<long long>(*c.epochs), objective->kind.c_str(), objective->reduction.c_str(),
                  static_cast<unsigned long long>(c.seed));
    log(buf);
    if (!c.quiet) std::cout << summary(model, data.input_shape);
    return *this;
}

json Trainer::checkpoint_metadata() const {
    json meta = {{"input_shape", data.input_shape},
                 {"normalization", {{"mean", data.normalization.mean}, {"std", data.normalization.std}}},
                 {"classes", data.classes},
                 {"dataset", data.dataset},
                 {"model", init_metadata.value("model", config.custom() ? "custom" : config.model)},
                 {"loss", *config.loss},
                 {"reduction", objective->reduction},
                 {"epoch", epoch}};
    if (config.layers) meta["layers"] = *config.layers;
    return meta;
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
        const int64_t seen = static_cast<int64_t>(index.size());
        const double loss_sum = objective->sample_mean(loss, seen) * static_cast<double>(seen);
        int64_t correct = 0;
        for (size_t r = 0; r < index.size(); ++r) {
            const float* row = out.ptr() + r * out.shape[1];
            if (std::max_element(row, row + out.shape[1]) - row == y[r]) correct++;
        }
        partial.loss_sum += loss_sum, partial.correct += correct, partial.seen += seen;
        ++step_in_epoch, ++global_step;
        char line[96];
        std::snprintf(line, sizeof line, "%lld,%lld,%.7g,%.7g\n", static_cast<long long>(global_step),
                      static_cast<long long>(epoch + 1), loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(seen));
        partial.steps += line;
        if (config.grad_norm_every && global_step % config.grad_norm_every == 0) {
            json norms = {{"step", global_step}, {"epoch", epoch + 1}};
            for (auto& [name, p] : model.named_parameters()) {
                if (p->grad.data.empty()) continue;
                double sq = 0;
                for (float g : p->grad.data) sq += static_cast<double>(g) * g;
                norms[name] = std::sqrt(sq);
            }
            grad_norm_log.push_back(norms);
        }
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
    EpochRow row{.epoch = epoch + 1,
                       .train_loss = p.loss_sum / std::max<int64_t>(p.seen, 1),
                       .train_acc = double(p.correct) / std::max<int64_t>(p.seen, 1),
                       .val_loss = val.loss,
                       .val_acc = val.accuracy,
                       .test_loss = test.loss,
                       .test_acc = test.accuracy,
                       .lr = optimizer->lr,
                       .seconds = p.seconds,
                       .samples_per_s = p.seen / std::max(p.seconds, 1e-9)};
    if (static_cast<int64_t>(data.classes.size()) > HISTORY_TOP_K) {
        row.val_top_k = top_k_accuracy(val.logits, data.val_y, HISTORY_TOP_K);
        row.test_top_k = top_k_accuracy(test.logits, data.test_y, HISTORY_TOP_K);
    }
    if (!std::isfinite(row.val_loss)) diverged("the validation loss became " + std::to_string(row.val_loss));
    history.push_back(row);
    if (cosine) cosine->step();
    if (step_lr) step_lr->step();
    if (multistep) multistep->step();
    if (plateau) plateau->step(row.val_loss);
    epoch += 1, step_in_epoch = 0;
    {  // this epoch's steps, appended in one write (Python's STEPS_FILE format)
        const auto steps_path = run_dir / "steps.csv";
        const bool fresh = !std::filesystem::exists(steps_path);
        std::ofstream(steps_path, std::ios::app) << (fresh ? "step,epoch,loss,acc\n" : "") << partial.steps;
    }
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

namespace {
// What a run writes into its folder (the Python's RUN_FILES): a folder holding any of them holds a run.
constexpr std::array<const char*, 9> kRunFiles = {"manifest.json", "resume.safetensors", "best.safetensors",
                                                  "last.safetensors", "history.json", "history.csv",
                                                  "steps.csv", "curves.png", "report.html"};

// Ready run_dir for a new run, as the Python's claim_run_folder: a folder holding another run is
// refused, or with overwrite emptied of that run's files and their leftover temporaries (files a run
// does not write are left alone).
void claim_run_folder(const std::filesystem::path& run_dir, bool overwrite) {
    std::vector<std::string> present;
    for (const char* name : kRunFiles)
        if (std::filesystem::exists(run_dir / name)) present.emplace_back(name);
    if (present.empty()) return;
    if (!overwrite) {
        std::string names;
        for (const auto& name : present) names += (names.empty() ? "" : ", ") + name;
        throw HandgradError(run_dir.string(), "holds another run (" + names +
                                                  "); replace it with --overwrite, or choose another --out");
    }
    for (const auto& name : present) std::filesystem::remove(run_dir / name);
    for (const auto& entry : std::filesystem::directory_iterator(run_dir)) {  // from a run killed mid-write
        const std::string file = entry.path().filename().string();
        for (const char* name : kRunFiles)
            if (file.rfind(std::string(".") + name + ".", 0) == 0 && file.size() > 4 && file.substr(file.size() - 4) == ".tmp")
                std::filesystem::remove(entry.path());
    }
}
}  // namespace

Trainer& Trainer::fit() {
    std::filesystem::create_directories(run_dir);
    claim_run_folder(run_dir, config.overwrite);
    write_manifest();
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
    log("run directory: " + run_dir.string() + "  (best.safetensors, last.safetensors, history.json/.csv, steps.csv)");
    return *this;
}

void Trainer::write_history() const {
    json rows = json::array();
    for (auto& r : history) rows.push_back(row_json(r));
    atomic_write_text(run_dir / "history.json", json{{"epochs", rows}, {"grad_norms", grad_norm_log}}.dump(1));
    std::string csv;
    for (size_t i = 0; i < rows.size(); ++i) {
        std::string header, line;
        for (auto& [key, value] : rows[i].items()) {
            header += header.empty() ? "" : ",";
            header += key;
            line += line.empty() ? "" : ",";
            line += csv_cell(value);
        }
        csv += (i == 0 ? header + "\r\n" : "") + line + "\r\n";  // csv.DictWriter's line ends
    }
    atomic_write_text(run_dir / "history.csv", csv);
}

void Trainer::write_manifest() {
    const TrainConfig& c = config;
    auto optional = [](const auto& v) { return v ? json(*v) : json(nullptr); };
    const json settings = {
        {"dataset", c.dataset}, {"model", c.custom() ? "custom" : c.model}, {"epochs", *c.epochs},
        {"batch_size", *c.batch_size}, {"optimizer", *c.optimizer}, {"lr", *c.lr}, {"momentum", *c.momentum},
        {"weight_decay", *c.weight_decay}, {"schedule", *c.schedule}, {"seed", c.seed},
        {"data_dir", optional(c.data_dir)}, {"out", *c.out}, {"train_size", optional(c.train_size)},
        {"val_fraction", c.val_fraction}, {"hidden", c.hidden.empty() ? json(nullptr) : json(c.hidden)},
        {"activation", c.activation}, {"layers", optional(c.layers)}, {"bias", c.bias}, {"init", c.weight_init},
        {"loss", *c.loss}, {"reduction", objective->reduction}, {"grad_norm_every", c.grad_norm_every}};
    const json manifest = {
        {"config", settings},
        {"seed", c.seed},
        {"environment", {{"handgrad", VERSION}, {"implementation", "handgrad-cpp"}, {"threads", kernels::num_threads()}}},
        {"data",
         {{"dataset", data.dataset},
          {"source", data.source},
          {"files", json::object()},
          {"normalization", {{"mean", data.normalization.mean}, {"std", data.normalization.std}}},
          {"sizes", {{"train", data.train_y.size()}, {"val", data.val_y.size()}, {"test", data.test_y.size()}}}}},
        {"model", {{"parameters", model.num_parameters()}, {"repr", model.repr()}}},
        {"distributed", {{"world_size", 1}, {"threads_per_rank", kernels::num_threads()}}},
        // what only the C++ takes: the checkpoint it started from, the --order file, a step limit
        {"cpp", {{"init", optional(c.init)}, {"order", optional(c.order)}, {"max_steps", optional(c.max_steps)}}}};
    atomic_write_text(run_dir / "manifest.json", manifest.dump(1));
}

std::vector<EpochRow> train(const TrainConfig& config) {
    Trainer trainer(config);
    trainer.setup().fit();
    return trainer.history;
}

}  // namespace handgrad
