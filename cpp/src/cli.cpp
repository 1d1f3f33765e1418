// handgrad-cpp: train, eval, predict (and bench) with the Python CLI's flags for what the port
// supports. Errors print one line (handgrad-cpp: error: ...) and exit non-zero.
#include "handgrad/image.hpp"
#include "handgrad/training.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <type_traits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

using namespace handgrad;

namespace {

// Each command's help, as `handgrad COMMAND --help` prints it: usage, what it does, its options.
struct CommandHelp {
    const char* name;
    const char* summary;
    const char* usage;
    const char* options;
};

const std::vector<CommandHelp>& commands() {
    static const std::vector<CommandHelp> table = {
        {"train", "train a model",
         "usage: handgrad-cpp train [-h] [--dataset NAME] [--data-dir DIR] [--model NAME] [--hidden SIZES]\n"
         "                          [--activation NAME] [--layers SPEC] [--no-bias] [--epochs N] [--batch-size N]\n"
         "                          [--optimizer sgd|adam|adamw|rmsprop|adagrad] [--lr LR] [--momentum M]\n"
         "                          [--weight-decay WD] [--schedule cosine|step|multistep|plateau|none]\n"
         "                          [--loss cross_entropy|mse] [--reduction R]\n"
         "                          [--seed S] [--train-size N] [--val-fraction F] [--out DIR] [--quiet]\n"
         "                          [--init NAME|CHECKPOINT] [--order ORDER.idx] [--max-steps N] [--threads N]\n\n"
         "Train a model; writes checkpoints, history (history.json, history.csv, steps.csv) and manifest.json to\n"
         "--out. Unset options take the model's defaults.\n",
         "  --dataset NAME        mnist (default) or fashion-mnist\n"
         "  --data-dir DIR        folder holding the dataset's four IDX files\n"
         "  --model NAME          named model (default: mlp-small): linear, mlp-sigmoid, mlp, mlp-small, tiny-mlp,\n"
         "                        tiny-cnn, lenet5\n"
         "  --hidden SIZES        custom MLP hidden sizes, e.g. 512,256 (overrides --model)\n"
         "  --activation NAME     activation for --hidden (relu, tanh, sigmoid, leaky_relu, elu, gelu, silu, softplus)\n"
         "  --layers SPEC         a layer spec (overrides --model), tokens joined by '-':\n"
         "                        conv<C>[k<K>][s<S>][p<P>][d<D>][g<G>][nb], maxpool|avgpool[<K>][s<S>][p<P>],\n"
         "                        adaptiveavg<N>, fc<N>[nb], bn, ln, dropout[<P>], an activation or none (replacing\n"
         "                        the ReLU before), out[nb]; e.g. conv8k5s1p2-maxpool3s2p1-fc120-sigmoid\n"
         "  --no-bias             no bias in any Linear or Conv2d layer\n"
         "  --epochs N            epochs (default: the model's)\n"
         "  --batch-size N        batch size (default: the model's)\n"
         "  --optimizer NAME      sgd, adam, adamw, rmsprop (with --momentum) or adagrad\n"
         "  --lr LR               learning rate (default: the model's)\n"
         "  --momentum M          SGD momentum (default: the model's)\n"
         "  --weight-decay WD     weight decay (default: the model's)\n"
         "  --schedule NAME       cosine, step (/10 every third of the epochs), multistep (/10 at 1/2 and 3/4),\n"
         "                        plateau (/10 after 2 epochs without a lower validation loss) or none\n"
         "  --loss NAME           cross_entropy (softmax outputs; the default) or mse (outputs regressed onto one-hot\n"
         "                        targets)\n"
         "  --reduction R         how the loss combines a batch of N: cross_entropy: mean (default) or sum; mse:\n"
         "                        batchmean (default) = 1/N sum_n ||y_n - onehot_n||^2, mean = the same / classes, or sum\n"
         "  --seed S              one seed for the split, the initial weights and the batch order\n"
         "  --train-size N        train on a class-stratified subset of this many images\n"
         "  --val-fraction F      fraction of the training images that validate (default 0.1)\n"
         "  --out DIR             run directory (default: runs/DATASET-MODEL-cpp)\n"
         "  --overwrite           replace the run already in --out (otherwise refused)\n"
         "  --quiet               no model table\n"
         "  --init NAME           weight initialisation of Linear and Conv2d layers: default (PyTorch's,\n"
         "                        U(+-1/sqrt(fan_in)) for weight and bias), kaiming_uniform, kaiming_normal,\n"
         "                        xavier_uniform, xavier_normal, normal or zeros (these set biases to 0)\n"
         "  --init CHECKPOINT     or start from this checkpoint's architecture and weights (C++ only)\n"
         "  --order ORDER.idx     visit the training images in this order, an IDX int32 (M,) or (epochs, M) (C++ only)\n"
         "  --max-steps N         stop after N optimizer steps in all (C++ only)\n"
         "  --threads N           at most N threads (default: every core, or HANDGRAD_NUM_THREADS); 1 on a shared\n"
         "                        machine\n"},
        {"eval", "evaluate a checkpoint on its dataset's test set",
         "usage: handgrad-cpp eval [-h] [--dataset NAME] [--data-dir DIR] [--top-k K] [--json] [--logits FILE.idx]\n"
         "                         [--no-reference-check] CHECKPOINT\n\n"
         "Evaluate a checkpoint on its dataset's test set: accuracy, top-k accuracy, per-class accuracy.\n",
         "  --dataset NAME        default: the checkpoint's dataset\n"
         "  --data-dir DIR        folder holding the dataset's IDX files\n"
         "  --top-k K             K for the top-K accuracy (default 5)\n"
         "  --json                print one JSON object\n"
         "  --logits FILE.idx     also write the logits as an IDX float32 file (C++ only)\n"
         "  --no-reference-check  do not recompute the checkpoint's stored reference outputs (C++ only)\n"},
        {"predict", "classify image files",
         "usage: handgrad-cpp predict [-h] [--top-k K] [--json] CHECKPOINT IMAGE [IMAGE ...]\n\n"
         "Classify images: PNG, JPEG, PGM, or IDX files of images, prepared as the Python's predict does.\n",
         "  --top-k K             classes shown per image (default 3)\n"
         "  --json                print one JSON list\n"},
        {"info", "describe a checkpoint",
         "usage: handgrad-cpp info [-h] CHECKPOINT\n\n"
         "Describe a checkpoint: its metadata and a table of its layers, output shapes and parameters.\n",
         ""},
        {"bench", "time training or inference steps on synthetic batches",
         "usage: handgrad-cpp bench [-h] [--model NAME] [--batch-size N] [--steps N] [--warmup N] [--seed S]\n"
         "                          [--inference] [--profile] [--json]\n\n"
         "Time forward, loss, backward and an SGD step (or, with --inference, the forward alone) on synthetic\n"
         "MNIST-shaped batches.\n",
         "  --model NAME          named model (default: mlp-small)\n"
         "  --batch-size N        batch size (default 64, or 1000 with --inference)\n"
         "  --steps N             timed steps (default 200)\n"
         "  --warmup N            untimed steps before them (default 10)\n"
         "  --seed S              seed of the weights and the batch\n"
         "  --inference           time the forward alone, in eval mode\n"
         "  --profile             also the mean time of each layer's forward and backward\n"
         "  --json                print one JSON object\n"},
        {"grad", "one forward and backward of a checkpoint on given inputs (for parity checks)",
         "usage: handgrad-cpp grad [-h] --inputs X.idx [--targets Y.idx] [--loss NAME] [--reduction R] [--eval]\n"
         "                         [--weight W,...] [--ignore-index I] [--label-smoothing E]\n"
         "                         --out FILE.safetensors CHECKPOINT\n\n"
         "Run the checkpoint's model on the inputs, apply the loss and backpropagate once; write the output\n"
         "('output'), the loss ('loss'), dL/dinput ('grad_input'), each parameter's gradient ('grad.NAME') and\n"
         "the buffers after the forward (their own names) as one safetensors file.\n",
         "  --inputs X.idx        the model's inputs, an IDX float32 file of shape (N, *input shape)\n"
         "  --targets Y.idx       class indices (IDX integers, (N, d1, ...)); for cross_entropy also class\n"
         "                        probabilities (IDX floats of the output's shape); for mse targets of the output's shape\n"
         "  --loss NAME           cross_entropy (default), nll_loss or mse\n"
         "  --reduction R         mean (default), sum or none (dL/dloss_n = 1 for each sample)\n"
         "  --weight W,...        class weights of cross_entropy and nll_loss, one per class\n"
         "  --ignore-index I      the target index whose samples count 0 (default -100)\n"
         "  --label-smoothing E   cross_entropy's label smoothing, in [0, 1] (default 0)\n"
         "  --eval                run the model in eval mode (default: training mode)\n"
         "  --out FILE            the safetensors file to write\n"},
        {"step", "optimizer steps on given gradients (for parity checks)",
         "usage: handgrad-cpp step [-h] --grads GRADS.safetensors [--optimizer NAME] [--options JSON]\n"
         "                         --out FILE.safetensors PARAMS.safetensors\n\n"
         "Build the optimizer over the tensors of PARAMS and step it once per gradient given; write the\n"
         "parameters after the last step (their own names) and the optimizer's state ('state.NAME.KEY', the\n"
         "Python optimizer's state keys) as one safetensors file.\n",
         "  --grads FILE          for each parameter NAME, a tensor NAME of shape (steps, *its shape): the\n"
         "                        gradient of each step in turn\n"
         "  --optimizer NAME      sgd (default), adam, adamw, rmsprop or adagrad\n"
         "  --options JSON        the optimizer's keyword arguments by torch's names, e.g. '{\"lr\": 0.01,\n"
         "                        \"amsgrad\": true, \"betas\": [0.8, 0.9]}'\n"
         "  --out FILE            the safetensors file to write\n"},
    };
    return table;
}

void print_usage(std::ostream& out) {
    out << "usage: handgrad-cpp [-h] COMMAND ...\n\nTrain, evaluate and inspect handgrad models (the C++ twin of "
           "`handgrad`).\n\ncommands:\n";
    for (auto& c : commands()) {
        char line[160];
        std::snprintf(line, sizeof line, "  %-9s %s\n", c.name, c.summary);
        out << line;
    }
    out << "\n`handgrad-cpp COMMAND --help` shows a command's options.\n";
}

void print_help(const CommandHelp& c) {
    std::cout << c.usage << "\noptions:\n  -h, --help            show this help message and exit\n" << c.options;
}

// --flag value pairs, bare --switches and positional arguments.
struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::string> options;
    std::set<std::string> switches;

    std::optional<std::string> get(const std::string& key) const {
        auto it = options.find(key);
        return it == options.end() ? std::nullopt : std::optional<std::string>(it->second);
    }
    template <class T>
    std::optional<T> number(const std::string& key) const {
        auto v = get(key);
        if (!v) return std::nullopt;
        try {
            size_t used = 0;
            const double d = std::stod(*v, &used);
            if (used != v->size()) throw std::invalid_argument("trailing");
            if constexpr (std::is_integral_v<T>) {  // a whole number the type can hold
                if (!(d == std::floor(d) && d >= static_cast<double>(std::numeric_limits<T>::min()) &&
                      d <= static_cast<double>(std::numeric_limits<T>::max()) / 2))
                    throw std::out_of_range("not an integer");
            }
            return static_cast<T>(d);
        } catch (const std::exception&) {
            throw HandgradError("argument " + key, "invalid value '" + *v + "'");
        }
    }
};

Args parse(int argc, char** argv, int first, const std::set<std::string>& valued, const std::set<std::string>& flags) {
    Args a;
    for (int i = first; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) == 0) {
            const auto eq = s.find('=');
            std::string key = s.substr(0, eq);
            if (valued.count(key)) {
                if (eq != std::string::npos) a.options[key] = s.substr(eq + 1);
                else if (i + 1 < argc) a.options[key] = argv[++i];
                else throw HandgradError("argument " + key, "expected one argument");
            } else if (flags.count(key)) {
                a.switches.insert(key);
            } else {
                throw HandgradError(std::string("handgrad-cpp ") + argv[1],
                                    "unrecognized arguments: " + s + " (see handgrad-cpp " + argv[1] + " --help)");
            }
        } else {
            a.positional.push_back(s);
        }
    }
    return a;
}

// --hidden 512,256: comma-separated sizes from 1 to MAX_SIZE, as the Python CLI reads them.
std::vector<int64_t> hidden_sizes(const std::string& text) {
    std::vector<int64_t> sizes;
    bool in_range = true;
    std::stringstream items(text);
    for (std::string item; std::getline(items, item, ',');) {
        if (item.find_first_not_of(" \t") == std::string::npos) continue;
        size_t used = 0;
        long long v = 0;
        try {
            v = std::stoll(item, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (!used || item.find_first_not_of(" \t", used) != std::string::npos)
            throw HandgradError("argument --hidden", "expected comma-separated integers, got '" + text + "'");
        in_range = in_range && v >= 1 && v <= MAX_SIZE;
        sizes.push_back(v);
    }
    if (sizes.empty() || !in_range)
        throw HandgradError("argument --hidden",
                            "expected comma-separated sizes from 1 to " + std::to_string(MAX_SIZE) + ", got '" + text + "'");
    return sizes;
}

// A value from a fixed list, refused as argparse refuses an invalid choice.
std::optional<std::string> choice(const Args& a, const std::string& key, const std::vector<std::string>& choices) {
    auto v = a.get(key);
    if (v && std::find(choices.begin(), choices.end(), *v) == choices.end()) {
        std::string listed;
        for (auto& c : choices) listed += (listed.empty() ? "'" : ", '") + c + "'";
        throw HandgradError("argument " + key, "invalid choice: '" + *v + "' (choose from " + listed + ")");
    }
    return v;
}

int cmd_train(int argc, char** argv) {
    const Args a = parse(argc, argv, 2,
                         {"--dataset", "--data-dir", "--model", "--epochs", "--batch-size", "--optimizer", "--lr",
                          "--momentum", "--weight-decay", "--schedule", "--loss", "--seed", "--train-size",
                          "--val-fraction", "--out", "--init", "--order", "--max-steps", "--hidden", "--activation",
                          "--layers", "--reduction", "--threads"},
                         {"--quiet", "--no-bias", "--overwrite"});
    if (auto threads = a.get("--threads")) {  // the kernels' pool: BLAS runs single-threaded inside it
        int64_t n = 0;
        try {
            size_t used = 0;
            n = std::stoll(*threads, &used);
            if (used != threads->size()) n = 0;
        } catch (const std::exception&) {
            n = 0;
        }
        if (n < 1 || n > 256)
            throw HandgradError("argument --threads", "expected a positive number of threads, got '" + *threads + "'");
        kernels::set_num_threads(static_cast<int>(n));
    }
    TrainConfig c;
    c.dataset = a.get("--dataset").value_or("mnist");
    c.model = a.get("--model").value_or("mlp-small");
    c.epochs = a.number<int64_t>("--epochs");
    c.batch_size = a.number<int64_t>("--batch-size");
    c.optimizer = a.get("--optimizer");
    c.lr = a.number<double>("--lr");
    c.momentum = a.number<double>("--momentum");
    c.weight_decay = a.number<double>("--weight-decay");
    c.schedule = a.get("--schedule");
    c.loss = choice(a, "--loss", {"cross_entropy", "mse"});
    c.reduction = choice(a, "--reduction", {"mean", "batchmean", "sum"});
    if (auto hidden = a.get("--hidden")) c.hidden = hidden_sizes(*hidden);
    if (auto activation = a.get("--activation")) {
        try {
            make_activation(*activation);
        } catch (const HandgradError& error) {
            throw HandgradError("argument --activation", std::string(error.what()).substr(error.where.size() + 2));
        }
        c.activation = *activation;
    }
    c.layers = a.get("--layers");
    c.bias = !a.switches.count("--no-bias");
    if (auto init = a.get("--init")) {  // a scheme's name, as the Python's --init, or a checkpoint to start from
        const auto& names = nn::init_names();
        if (std::find(names.begin(), names.end(), *init) != names.end()) c.weight_init = *init;
        else c.init = init;
    }
    if (c.layers) tokenize_layer_spec(*c.layers);  // a bad spec is refused before any data is read
    if (c.init && (c.custom() || !c.bias))
        throw HandgradError("train", "--init takes the checkpoint's architecture: give no --hidden, --layers or --no-bias with it");
    c.seed = a.number<uint64_t>("--seed").value_or(0);
    c.train_size = a.number<int64_t>("--train-size");
    c.val_fraction = a.number<double>("--val-fraction").value_or(0.1);
    c.data_dir = a.get("--data-dir");
    c.out = a.get("--out");
    c.order = a.get("--order");
    c.max_steps = a.number<int64_t>("--max-steps");
    c.quiet = a.switches.count("--quiet") > 0;
    c.overwrite = a.switches.count("--overwrite") > 0;
    if (c.init && !a.get("--model")) {  // the checkpoint's own model name and defaults
        const Checkpoint ck = load(*c.init, {.check_reference = false});
        if (ck.model_name) c.model = *ck.model_name;
    }
    train(c);
    return 0;
}

int cmd_eval(int argc, char** argv) {
    const Args a = parse(argc, argv, 2, {"--dataset", "--data-dir", "--top-k", "--logits"}, {"--json", "--no-reference-check"});
    if (a.positional.size() != 1) throw HandgradError("eval", "expected one CHECKPOINT argument");
    const std::string path = a.positional[0];
    Checkpoint ck = load(path, {.check_reference = !a.switches.count("--no-reference-check")});
    const int64_t k_requested = a.number<int64_t>("--top-k").value_or(5);
    if (k_requested < 1) throw HandgradError("argument --top-k", "expected a positive integer, got " + std::to_string(k_requested));
    const std::string dataset = a.get("--dataset").value_or(ck.dataset.value_or("mnist"));
    data::Dataset ds = data::load_dataset(dataset, a.get("--data-dir"));
    Tensor x = ds.test_images;
    const auto& y = ds.test_labels;
    if (y.empty()) throw HandgradError("dataset " + ds.name, "the test set holds no images");
    const Shape got(x.shape.begin() + 1, x.shape.end());
    if (ck.input_shape && *ck.input_shape != got)
        throw HandgradError(path, "dataset " + ds.name + ": images of shape " + fmt_shape(got) +
                                      " do not fit the checkpoint's input shape " + fmt_shape(*ck.input_shape));
    if (ck.normalization) x = data::Normalizer{.mean = ck.normalization->mean, .std = ck.normalization->std}(x);
    Evaluation ev;
    try {
        ev = evaluate(ck.model, x, y);
    } catch (const HandgradError& error) {  // the stored layers do not chain, or do not take these images
        throw HandgradError(path, "the model cannot run on the " + ds.name + " test set: " + error.what());
    }
    const int64_t C = ev.logits.shape[1], N = static_cast<int64_t>(y.size());
    if (C != static_cast<int64_t>(ds.classes.size()))
        throw HandgradError(path, "the model has " + std::to_string(C) + " outputs, dataset " + ds.name + " has " +
                                      std::to_string(ds.classes.size()) + " classes");
    const std::vector<std::string> classes = ck.class_names(C);
    for (float v : ev.logits.data)
        if (!std::isfinite(v))
            throw HandgradError(path, "the model's outputs are not finite (NaN or infinity) on the " + ds.name +
                                          " test set; refusing to report an accuracy");
    if (auto out = a.get("--logits")) idx::write_idx_float32(*out, ev.logits);
    const int64_t n = C;
    std::vector<std::vector<int64_t>> confusion(n, std::vector<int64_t>(n));
    const int64_t k = std::min<int64_t>(k_requested, n);
    int64_t top_hits = 0;
    for (int64_t r = 0; r < N; ++r) {
        const float* row = ev.logits.ptr() + r * C;
        confusion[y[r]][std::max_element(row, row + C) - row]++;
        std::vector<int64_t> order(C);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return row[p] > row[q]; });
        if (std::find(order.begin(), order.begin() + k, y[r]) != order.begin() + k) top_hits++;
    }
    json per_class = json::object();
    for (int64_t i = 0; i < n; ++i) {
        int64_t total = 0;
        for (auto v : confusion[i]) total += v;
        per_class[classes[i]] = static_cast<double>(confusion[i][i]) / static_cast<double>(std::max<int64_t>(total, 1));
    }
    const double top_k = static_cast<double>(top_hits) / static_cast<double>(N);
    json result = {{"checkpoint", path},
                   {"dataset", ds.name},
                   {"samples", N},
                   {"accuracy", ev.accuracy},
                   {"top" + std::to_string(k) + "_accuracy", top_k},
                   {"per_class_accuracy", per_class},
                   {"classes", classes},
                   {"confusion_matrix", confusion}};
    if (a.switches.count("--json")) {
        std::cout << py_dumps(result) << std::endl;
        return 0;
    }
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s test set, %lld images: accuracy %.2f%%, top-%lld %.2f%%", ds.name.c_str(),
                  static_cast<long long>(N), 100 * ev.accuracy, static_cast<long long>(k), 100 * top_k);
    std::cout << buf << "\n";
    std::string line = "per-class accuracy: ";
    for (int64_t i = 0; i < n; ++i) {
        std::snprintf(buf, sizeof buf, "%s%s %.1f%%", i ? ", " : "", classes[i].c_str(), 100 * per_class[classes[i]].get<double>());
        line += buf;
    }
    std::cout << line << "\n";
    if (ck.reference_layers_checked)
        std::cout << "reference outputs: all " << ck.reference_layers_checked << " layers match the saved ones\n";
    return 0;
}

int cmd_predict(int argc, char** argv) {
    const Args a = parse(argc, argv, 2, {"--top-k"}, {"--json"});
    if (a.positional.size() < 2) throw HandgradError("predict", "expected CHECKPOINT IMAGE...");
    Checkpoint ck = load(a.positional[0]);
    const Shape shape = ck.input_shape.value_or(Shape{1, 28, 28});
    const int64_t k_requested = a.number<int64_t>("--top-k").value_or(3);
    if (k_requested < 1) throw HandgradError("argument --top-k", "expected a positive integer, got " + std::to_string(k_requested));
    std::vector<std::string> names;
    std::vector<float> values;
    for (size_t i = 1; i < a.positional.size(); ++i)
        for (auto& x : image::load_images(a.positional[i], shape)) {
            names.push_back(a.positional[i]);
            values.insert(values.end(), x.data.begin(), x.data.end());
        }
    if (names.empty()) throw HandgradError("predict", "the given files hold no images");
    Shape batch = shape;
    batch.insert(batch.begin(), static_cast<int64_t>(names.size()));
    Tensor x(batch, values);
    if (ck.normalization) x = data::Normalizer{.mean = ck.normalization->mean, .std = ck.normalization->std}(x);
    ck.model.eval();
    Tensor logits;
    try {
        const NoGradGuard no_grad;
        logits = ck.model.forward(std::move(x));
    } catch (const HandgradError& error) {
        throw HandgradError(a.positional[0], std::string("the model cannot run on the images: ") + error.what());
    }
    if (logits.ndim() != 2 || logits.shape[0] != static_cast<int64_t>(names.size()) || logits.shape[1] < 1)
        throw ShapeError(a.positional[0], "model output", "(" + std::to_string(names.size()) + ", classes)", logits.shape);
    for (float v : logits.data)
        if (!std::isfinite(v))
            throw HandgradError(a.positional[0], "the model's outputs are not finite (NaN or infinity); refusing to predict");
    const int64_t C = logits.shape[1];
    const std::vector<std::string> classes = ck.class_names(C);
    const int64_t k = std::min<int64_t>(k_requested, C);
    const bool mse = ck.loss.value_or("") == "mse";
    json results = json::array();
    for (size_t r = 0; r < names.size(); ++r) {
        std::vector<double> p(C);
        const float* row = logits.ptr() + r * C;
        if (mse) {
            for (int64_t c = 0; c < C; ++c) p[c] = row[c];
        } else {  // softmax in float64, as Python
            const double m = *std::max_element(row, row + C);
            double sum = 0;
            for (int64_t c = 0; c < C; ++c) sum += p[c] = std::exp(row[c] - m);
            for (auto& v : p) v /= sum;
        }
        std::vector<int64_t> order(C);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return p[i] > p[j]; });
        json top = json::array();
        for (int64_t j = 0; j < k; ++j) top.push_back({{"class", classes[order[j]]}, {"probability", p[order[j]]}});
        results.push_back({{"image", names[r]}, {"class", classes[order[0]]}, {"top", top}});
    }
    if (a.switches.count("--json")) {
        std::cout << py_dumps(results) << std::endl;
        return 0;
    }
    for (auto& r : results) {
        std::string line = r["image"].get<std::string>() + ": " + r["class"].get<std::string>() + "   (";
        char buf[64];
        for (size_t j = 0; j < r["top"].size(); ++j) {
            std::snprintf(buf, sizeof buf, "%s%s %.1f%%", j ? ", " : "", r["top"][j]["class"].get<std::string>().c_str(),
                          100 * r["top"][j]["probability"].get<double>());
            line += buf;
        }
        std::cout << line << ")\n";
    }
    return 0;
}

// A JSON value as Python prints it: str() at the top (a string bare), repr() inside lists and dicts.
std::string py_str(const json& v, bool top = true) {
    if (v.is_string()) return top ? v.get<std::string>() : "'" + v.get<std::string>() + "'";
    if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
    if (v.is_null()) return "None";
    if (v.is_number_float()) return nn::py_repr(v.get<double>());
    if (v.is_array()) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + py_str(v[i], false);
        return s + "]";
    }
    if (v.is_object()) {
        std::string s = "{";
        for (auto& [k, item] : v.items()) s += (s.size() > 1 ? ", '" : "'") + k + "': " + py_str(item, false);
        return s + "}";
    }
    return v.dump();
}

// The same lines as `handgrad info`: the file, version and dtype; the metadata a user reads; the
// table of layers.
int cmd_info(int argc, char** argv) {
    const Args a = parse(argc, argv, 2, {}, {});
    if (a.positional.size() != 1) throw HandgradError("info", "expected one CHECKPOINT argument");
    const std::string path = a.positional[0];
    Checkpoint ck = load(path, {.check_reference = false});
    const json& meta = ck.metadata;
    std::cout << path << ": handgrad " << py_str(meta.value("handgrad_version", json())) << " checkpoint, "
              << py_str(meta.value("dtype", json())) << "\n";
    for (const char* key : {"dataset", "model", "layers", "loss", "epoch", "input_shape", "classes", "normalization", "plugins"})
        if (meta.contains(key)) std::cout << "  " << key << ": " << py_str(meta[key]) << "\n";
    try {
        std::cout << summary(ck.model, ck.input_shape.value_or(Shape{1, 28, 28}));
    } catch (const HandgradError& error) {
        throw HandgradError(path, std::string("the model cannot run on its input shape: ") + error.what());
    }
    return 0;
}

// An IDX array's values as float32.
Tensor to_tensor(const idx::Array& array) {
    Tensor t(array.shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(array.at(i));
    return t;
}

// One forward, loss and backward of a checkpoint's model on given inputs, everything written to
// one safetensors file, so the Python tests can compare outputs, losses and gradients.
int cmd_grad(int argc, char** argv) {
    const Args a = parse(argc, argv, 2,
                         {"--inputs", "--targets", "--loss", "--reduction", "--out", "--weight", "--ignore-index",
                          "--label-smoothing"},
                         {"--eval"});
    if (a.positional.size() != 1) throw HandgradError("grad", "expected one CHECKPOINT argument");
    if (!a.get("--inputs") || !a.get("--out")) throw HandgradError("grad", "--inputs and --out are required");
    Checkpoint ck = load(a.positional[0], {.check_reference = false});
    const Tensor x = to_tensor(idx::read_idx(*a.get("--inputs")));
    const std::string loss = choice(a, "--loss", {"cross_entropy", "nll_loss", "mse"}).value_or("cross_entropy");
    const auto reduction = functional::reduction_from(choice(a, "--reduction", {"mean", "sum", "none"}).value_or("mean"), "grad");
    ck.model.train(!a.switches.count("--eval"));
    const Tensor out = ck.model.forward(x);
    if (!a.get("--targets")) throw HandgradError("grad", "--targets is required");
    const idx::Array targets = idx::read_idx(*a.get("--targets"));
    Tensor value, grad_output;
    auto upstream = [&](const Tensor& loss_value) { return Tensor(loss_value.shape, 1.0f); };  // dL/dloss = 1 each
    if (loss == "mse") {
        nn::MSELoss fn(reduction);
        value = fn.forward(out, to_tensor(targets));
        grad_output = fn.backward(upstream(value));
    } else {
        functional::ClassLossOptions options{.ignore_index = a.number<int64_t>("--ignore-index").value_or(-100),
                                             .label_smoothing = a.number<float>("--label-smoothing").value_or(0.0f)};
        if (auto weight = a.get("--weight")) {
            std::vector<float> values;
            std::stringstream items(*weight);
            for (std::string item; std::getline(items, item, ',');) {
                try {
                    values.push_back(std::stof(item));
                } catch (const std::exception&) {
                    throw HandgradError("argument --weight", "expected comma-separated numbers, got '" + *weight + "'");
                }
            }
            options.weight = Tensor({static_cast<int64_t>(values.size())}, values);
        }
        const bool probabilities = targets.code == 0x0D || targets.code == 0x0E;  // float32 or float64 IDX
        std::vector<int64_t> labels(probabilities ? 0 : targets.numel());
        for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(targets.at(static_cast<int64_t>(i)));
        if (loss == "cross_entropy") {
            nn::CrossEntropyLoss fn(reduction, options);
            value = probabilities ? fn.forward(out, to_tensor(targets)) : fn.forward(out, labels);
            grad_output = fn.backward(upstream(value));
        } else {
            nn::NLLLoss fn(reduction, options);
            value = fn.forward(out, labels);
            grad_output = fn.backward(upstream(value));
        }
    }
    ck.model.zero_grad();
    const Tensor grad_input = ck.model.backward(grad_output, true);
    std::vector<std::pair<std::string, Tensor>> tensors{{"output", out}, {"loss", value}, {"grad_input", grad_input}};
    std::vector<std::pair<std::string, int64_t>> counts;
    for (auto& [name, p] : ck.model.named_parameters()) tensors.emplace_back("grad." + name, p->grad);
    for (auto& [name, b] : ck.model.named_buffers()) {
        if (b.values) tensors.emplace_back(name, *b.values);
        else counts.emplace_back(name, *b.count);
    }
    save_tensors(*a.get("--out"), tensors, {}, counts);
    return 0;
}

// An optimizer by the Python class's lower-case name and its keyword arguments under torch's names,
// each at torch's default where not given; a keyword the optimizer lacks, or of the wrong type, is refused.
std::unique_ptr<optim::Optimizer> optimizer_from_options(const std::string& name, std::vector<Parameter*> params,
                                                         const json& options) {
    std::set<std::string> read;
    const auto wrong = [&](const std::string& key, const std::string& expected) {
        return HandgradError("argument --options", name + " " + key + ": expected " + expected + ", got " + describe(options[key]));
    };
    const auto number = [&](const std::string& key, double fallback) {
        read.insert(key);
        if (!options.contains(key)) return fallback;
        if (!options[key].is_number()) throw wrong(key, "a number");
        return options[key].get<double>();
    };
    const auto flag = [&](const std::string& key) {
        read.insert(key);
        if (options.contains(key) && !options[key].is_boolean()) throw wrong(key, "true or false");
        return options.contains(key) && options[key].get<bool>();
    };
    std::unique_ptr<optim::Optimizer> made;
    if (name == "sgd") {
        made = std::make_unique<optim::SGD>(
            params, optim::SGDOptions{.lr = number("lr", 1e-3), .momentum = number("momentum", 0), .dampening = number("dampening", 0),
                                      .weight_decay = number("weight_decay", 0), .nesterov = flag("nesterov"),
                                      .maximize = flag("maximize")});
    } else if (name == "adam" || name == "adamw") {
        read.insert("betas");
        const json betas = options.value("betas", json::array({0.9, 0.999}));
        if (!betas.is_array() || betas.size() != 2 || !betas[0].is_number() || !betas[1].is_number())
            throw wrong("betas", "a pair of numbers");
        made = std::make_unique<optim::Adam>(
            params, optim::AdamOptions{.lr = number("lr", 1e-3), .beta1 = betas[0].get<double>(), .beta2 = betas[1].get<double>(),
                                       .eps = number("eps", 1e-8), .weight_decay = number("weight_decay", name == "adamw" ? 1e-2 : 0),
                                       .decoupled_weight_decay = name == "adamw", .amsgrad = flag("amsgrad"),
                                       .maximize = flag("maximize")});
    } else if (name == "rmsprop") {
        made = std::make_unique<optim::RMSprop>(
            params, optim::RMSpropOptions{.lr = number("lr", 1e-2), .alpha = number("alpha", 0.99), .eps = number("eps", 1e-8),
                                          .weight_decay = number("weight_decay", 0), .momentum = number("momentum", 0),
                                          .centered = flag("centered"), .maximize = flag("maximize")});
    } else {
        made = std::make_unique<optim::Adagrad>(
            params, optim::AdagradOptions{.lr = number("lr", 1e-2), .lr_decay = number("lr_decay", 0),
                                          .weight_decay = number("weight_decay", 0),
                                          .initial_accumulator_value = number("initial_accumulator_value", 0),
                                          .eps = number("eps", 1e-10), .maximize = flag("maximize")});
    }
    for (auto& [key, _] : options.items())
        if (!read.count(key)) throw HandgradError("argument --options", name + " takes no keyword '" + key + "'");
    return made;
}

// The optimizer's state per parameter, under the Python optimizer's state keys.
std::vector<std::pair<std::string, std::vector<Tensor>*>> optimizer_state(optim::Optimizer& opt) {
    if (auto* sgd = dynamic_cast<optim::SGD*>(&opt)) return {{"momentum_buffer", &sgd->momentum_buffer}};
    if (auto* adam = dynamic_cast<optim::Adam*>(&opt))
        return {{"exp_avg", &adam->exp_avg}, {"exp_avg_sq", &adam->exp_avg_sq}, {"max_exp_avg_sq", &adam->max_exp_avg_sq}};
    if (auto* rmsprop = dynamic_cast<optim::RMSprop*>(&opt))
        return {{"square_avg", &rmsprop->square_avg}, {"grad_avg", &rmsprop->grad_avg},
                {"momentum_buffer", &rmsprop->momentum_buffer}};
    return {{"sum", &dynamic_cast<optim::Adagrad&>(opt).state_sum}};
}

// Optimizer steps on given gradients, everything written to one safetensors file, so the Python
// tests can compare the updates and the state bit for bit.
int cmd_step(int argc, char** argv) {
    const Args a = parse(argc, argv, 2, {"--grads", "--optimizer", "--options", "--out"}, {});
    if (a.positional.size() != 1) throw HandgradError("step", "expected one PARAMS argument");
    if (!a.get("--grads") || !a.get("--out")) throw HandgradError("step", "--grads and --out are required");
    const std::string name = choice(a, "--optimizer", {"sgd", "adam", "adamw", "rmsprop", "adagrad"}).value_or("sgd");
    const std::string text = a.get("--options").value_or("{}");
    const json options = json::parse(text, nullptr, false);
    if (!options.is_object())
        throw HandgradError("argument --options", "expected a JSON object of keyword arguments, got '" + text + "'");
    const TensorFile start = load_tensors(a.positional[0]), grads = load_tensors(*a.get("--grads"));
    std::vector<Parameter> params(start.tensors.size());
    std::vector<const Tensor*> sequences;
    int64_t steps = -1;
    for (size_t i = 0; i < params.size(); ++i) {
        const auto& [key, data] = start.tensors[i];
        params[i].data = data;
        const auto found = std::find_if(grads.tensors.begin(), grads.tensors.end(), [&](auto& g) { return g.first == key; });
        if (found == grads.tensors.end()) throw HandgradError(*a.get("--grads"), "no gradients for parameter '" + key + "'");
        const Tensor& sequence = found->second;
        if (sequence.ndim() != data.ndim() + 1 || !std::equal(data.shape.begin(), data.shape.end(), sequence.shape.begin() + 1) ||
            (steps >= 0 && sequence.shape[0] != steps))
            throw ShapeError(*a.get("--grads"), "'" + key + "'",
                             "(steps, " + fmt_shape(data.shape).substr(1) + (steps >= 0 ? " with steps " + std::to_string(steps) : ""),
                             sequence.shape);
        steps = sequence.shape[0];
        sequences.push_back(&sequence);
    }
    std::vector<Parameter*> pointers;
    for (auto& p : params) pointers.push_back(&p);
    auto opt = optimizer_from_options(name, pointers, options);
    for (int64_t t = 0; t < steps; ++t) {
        for (size_t i = 0; i < params.size(); ++i) {
            const int64_t n = params[i].data.numel();
            const auto begin = sequences[i]->data.begin() + t * n;
            params[i].grad = Tensor(params[i].data.shape, Tensor::Storage(begin, begin + n));
        }
        opt->step();
    }
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (size_t i = 0; i < params.size(); ++i) tensors.emplace_back(start.tensors[i].first, params[i].data);
    for (auto& [key, per_param] : optimizer_state(*opt))
        for (size_t i = 0; i < params.size(); ++i)
            if (!(*per_param)[i].data.empty()) tensors.emplace_back("state." + start.tensors[i].first + "." + key, (*per_param)[i]);
    save_tensors(*a.get("--out"), tensors, {});
    return 0;
}

// Training throughput on synthetic MNIST-shaped batches (no data files needed): forward, loss,
// backward and an SGD step per batch, timed after a warm-up. --inference times the forward alone,
// in eval mode; --profile adds the mean milliseconds of each layer's forward and backward, the loss
// and the optimizer step (timed one piece at a time, so the pieces add up to a little more than a step).
int cmd_bench(int argc, char** argv) {
    const Args a = parse(argc, argv, 2, {"--model", "--batch-size", "--steps", "--warmup", "--seed"},
                         {"--json", "--inference", "--profile"});
    const std::string name = a.get("--model").value_or("mlp-small");
    const bool inference = a.switches.count("--inference") > 0, profile = a.switches.count("--profile") > 0;
    const int64_t batch = a.number<int64_t>("--batch-size").value_or(inference ? 1000 : 64);
    const int64_t steps = a.number<int64_t>("--steps").value_or(200), warmup = a.number<int64_t>("--warmup").value_or(10);
    if (batch < 1 || steps < 1 || warmup < 0)
        throw HandgradError("bench", "--batch-size and --steps must be positive and --warmup at least 0");
    manual_seed(a.number<uint64_t>("--seed").value_or(0));
    nn::Sequential model = build_model(name, {1, 28, 28}, 10);
    const TrainDefaults d = defaults_for(name);
    optim::SGD opt(model.parameters(), {d.lr, d.momentum, 0.0, d.weight_decay});
    Objective objective(d.loss, 10);
    std::normal_distribution<float> normal;
    Tensor x({batch, 1, 28, 28});
    for (float& v : x.data) v = normal(default_generator());
    std::vector<int64_t> y(batch);
    for (auto& v : y) v = static_cast<int64_t>(default_generator()() % 10);

    using Clock = std::chrono::steady_clock;
    auto ms_since = [](Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); };
    // The runs of layers as forward runs them (a fused op as one), known after the warm-up.
    std::vector<nn::Sequential::Run> runs;
    std::vector<double> forward_ms, backward_ms;
    std::vector<bool> needs_input;  // as Sequential::backward: only when some layer before has parameters
    double loss_ms = 0, step_ms = 0;
    auto profiled_step = [&] {
        Tensor h = x;
        for (size_t r = 0; r < runs.size(); ++r) {
            const auto t = Clock::now();
            h = model.forward_run(runs[r], std::move(h));
            forward_ms[r] += ms_since(t);
        }
        auto t = Clock::now();
        objective(h, y);
        Tensor g = objective.backward();
        loss_ms += ms_since(t);
        opt.zero_grad();
        for (size_t r = runs.size(); r-- > 0;) {
            t = Clock::now();
            g = model.backward_run(runs[r], g, needs_input[r]);
            backward_ms[r] += ms_since(t);
            if (!needs_input[r]) break;
        }
        t = Clock::now();
        opt.step();
        step_ms += ms_since(t);
    };
    auto one_step = [&] {
        if (inference) {  // as predict and eval run it: no cache kept for backward
            const NoGradGuard no_grad;
            model.forward(x);
            return;
        }
        const Tensor out = model.forward(x);
        objective(out, y);
        opt.zero_grad();
        model.backward(objective.backward(), false);
        opt.step();
    };
    if (inference) model.eval();
    for (int64_t i = 0; i < warmup; ++i) one_step();
    const auto started = Clock::now();
    for (int64_t i = 0; i < steps; ++i) one_step();
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    const double rate = static_cast<double>(steps * batch) / seconds;
    if (profile && !inference) {
        runs = model.runs();
        forward_ms.assign(runs.size(), 0.0), backward_ms.assign(runs.size(), 0.0);
        bool seen = false;
        for (const auto& run : runs) {
            needs_input.push_back(seen);
            for (size_t i = run.start; i < run.start + run.size; ++i) seen = seen || !model[i].named_parameters().empty();
        }
        for (int64_t i = 0; i < steps; ++i) profiled_step();
    }
#ifdef _OPENMP
    const bool openmp = true;
#else
    const bool openmp = false;
#endif
    json result = {{"implementation", "handgrad-cpp"}, {"model", name},       {"batch_size", batch},
                   {"mode", inference ? "inference" : "train"},
                   {"steps", steps},                  {"seconds", seconds},    {"samples_per_s", rate},
                   {"threads", kernels::num_threads()}, {"kernels", kernels::enabled()},
                   {"eigen_threads", Eigen::nbThreads()}, {"openmp", openmp}, {"flags", HANDGRAD_CXX_FLAGS},
                   {"gemm", kernels::gemm_library()}};
    json pieces = json::array();
    if (profile && !inference) {
        const double n = static_cast<double>(steps);
        for (size_t r = 0; r < runs.size(); ++r) {
            const auto& run = runs[r];
            std::string label = std::to_string(run.start) + ": " + model[run.start].repr();
            if (run.size > 1) {  // a fused run: "0-2: Conv2d+ReLU+MaxPool2d (Conv2d(1, 8, ...))"
                label = std::to_string(run.start) + "-" + std::to_string(run.start + run.size - 1) + ": ";
                for (size_t i = run.start; i < run.start + run.size; ++i) label += (i > run.start ? "+" : "") + model[i].type();
                label += " (" + model[run.start].repr() + ")";
            }
            pieces.push_back({{"layer", label}, {"forward_ms", forward_ms[r] / n}, {"backward_ms", backward_ms[r] / n}});
        }
        pieces.push_back({{"layer", "loss (forward and backward)"}, {"forward_ms", loss_ms / n}, {"backward_ms", 0.0}});
        pieces.push_back({{"layer", "optimizer step"}, {"forward_ms", 0.0}, {"backward_ms", step_ms / n}});
        result["profile"] = pieces;
    }
    if (a.switches.count("--json")) {
        std::cout << py_dumps(result) << std::endl;
        return 0;
    }
    std::cout << name << ", " << (inference ? "inference" : "training") << ", batch " << batch << ", " << steps
              << " steps: " << static_cast<int64_t>(rate) << " samples/s (" << kernels::num_threads() << " thread(s), "
              << (kernels::enabled() ? "kernels" : "references") << ", " << HANDGRAD_CXX_FLAGS << ")\n";
    for (auto& piece : pieces) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "  %-60s forward %8.3f ms  backward %8.3f ms\n",
                      piece["layer"].get<std::string>().c_str(), piece["forward_ms"].get<double>(),
                      piece["backward_ms"].get<double>());
        std::cout << buf;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
        print_usage(argc < 2 ? std::cerr : std::cout);
        return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    const std::map<std::string, int (*)(int, char**)> run = {{"train", cmd_train}, {"eval", cmd_eval},
                                                             {"predict", cmd_predict}, {"info", cmd_info},
                                                             {"bench", cmd_bench}, {"grad", cmd_grad},
                                                             {"step", cmd_step}};
    const auto found = run.find(command);
    if (found == run.end()) {
        print_usage(std::cerr);
        std::cerr << "handgrad-cpp: error: unknown command '" << command << "'\n";
        return 2;
    }
    for (int i = 2; i < argc; ++i)
        if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") {
            print_help(*std::find_if(commands().begin(), commands().end(), [&](auto& c) { return c.name == command; }));
            return 0;
        }
    try {
        return found->second(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "handgrad-cpp: error: " << e.what() << "\n";
        return 1;
    }
}
