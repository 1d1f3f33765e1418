// Datasets, normalisation, splits and shuffles (mirrors src/handgrad/data/).
#include "handgrad/data.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>

namespace handgrad::data {
namespace fs = std::filesystem;

namespace {
const std::vector<std::string> FILES = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

// The dataset files in folder, each as name.gz or, failing that, raw name.
std::vector<std::string> present(const fs::path& folder) {
    std::vector<std::string> found;
    for (auto& file : FILES) {
        for (auto candidate : {folder / file, folder / file.substr(0, file.size() - 3)})
            if (fs::is_regular_file(candidate)) {
                found.push_back(candidate.string());
                break;
            }
    }
    return found;
}

// uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1], as torchvision's ToTensor (x / 255)
Tensor to_float(const idx::Array& images) {
    Tensor out({images.shape[0], 1, images.shape[1], images.shape[2]});
    for (int64_t i = 0; i < out.numel(); ++i) out[i] = static_cast<float>(images.bytes[i]) / 255.0f;
    return out;
}
}  // namespace

std::vector<std::string> classes_for(const std::string& name) {
    if (name == "fashion-mnist")
        return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
}

Dataset load_dataset(const std::string& requested, const std::optional<std::string>& data_dir) {
    std::string name = requested;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return c == '_' ? '-' : std::tolower(c); });
    if (name == "fashionmnist" || name == "fmnist") name = "fashion-mnist";
    if (name == "digits")
        throw HandgradError(name, "the digits dataset ships with scikit-learn and is not available to the C++ port; "
                                  "use mnist or fashion-mnist");
    if (name != "mnist" && name != "fashion-mnist")
        throw HandgradError(requested, "unknown dataset; expected one of mnist, fashion-mnist");
    std::vector<std::pair<std::string, fs::path>> places;
    if (data_dir) {
        places = {{"data_dir", fs::path(*data_dir) / name}, {"data_dir", fs::path(*data_dir)}};
    } else {
        if (const char* env = std::getenv("HANDGRAD_DATA_DIR"); env && *env)
            places.emplace_back("HANDGRAD_DATA_DIR", fs::path(env) / name);
        const char* xdg = std::getenv("XDG_CACHE_HOME");
        const char* home = std::getenv("HOME");
        const fs::path cache = xdg && *xdg ? fs::path(xdg) : fs::path(home ? home : ".") / ".cache";
        places.emplace_back("cache", cache / "handgrad" / name);
    }
    std::string searched;
    for (auto& [label, folder] : places) {
        auto files = present(folder);
        if (files.size() == FILES.size()) {
            const auto classes = classes_for(name);
            auto train = idx::load_idx_pair(files[0], files[1], static_cast<int>(classes.size()));
            auto test = idx::load_idx_pair(files[2], files[3], static_cast<int>(classes.size()));
            if (train.images.shape[1] != test.images.shape[1] || train.images.shape[2] != test.images.shape[2])
                throw HandgradError(files[2], "images are " + std::to_string(test.images.shape[1]) + "x" +
                                                  std::to_string(test.images.shape[2]) + " but the training images are " +
                                                  std::to_string(train.images.shape[1]) + "x" +
                                                  std::to_string(train.images.shape[2]) + "; expected the same size");
            return Dataset{.name = name, .train_images = to_float(train.images), .train_labels = train.labels,
                           .test_images = to_float(test.images), .test_labels = test.labels, .classes = classes,
                           .source = label + ": " + folder.string()};
        }
        searched += "\n  " + label + ": " + folder.string() + " (" + std::to_string(files.size()) + " of 4 files)";
    }
    throw HandgradError(name, "the " + name + " files are not available. Searched:" + searched +
                                  "\nPut train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
                                  "and t10k-labels-idx1-ubyte.gz in one of these places (the C++ port does not "
                                  "download; `handgrad datasets` or any Python run fetches them into the cache)");
}

Normalizer Normalizer::fit(const Tensor& train_images) {
    if (train_images.numel() == 0) throw HandgradError("Normalizer.fit", "expected a non-empty train_images array");
    double sum = 0;
    for (float v : train_images.data) sum += v;
    const double mean = sum / static_cast<double>(train_images.numel());
    double sq = 0;
    for (float v : train_images.data) sq += (v - mean) * (v - mean);
    // stored as float32 values, as Python's Normalizer does
    return Normalizer{.mean = static_cast<float>(mean),
                      .std = static_cast<float>(std::sqrt(sq / static_cast<double>(train_images.numel())))};
}

Tensor Normalizer::operator()(const Tensor& images) const {
    Tensor out(images.shape);
    const float m = static_cast<float>(mean), s = static_cast<float>(std);
    for (int64_t i = 0; i < out.numel(); ++i) out[i] = (images[i] - m) / s;
    return out;
}

Tensor take(const Tensor& x, const std::vector<int64_t>& index) {
    Shape shape = x.shape;
    shape[0] = static_cast<int64_t>(index.size());
    Tensor out(shape);
    const int64_t row = x.numel() / std::max<int64_t>(x.shape[0], 1);
    for (size_t i = 0; i < index.size(); ++i)
        std::copy_n(x.ptr() + index[i] * row, row, out.ptr() + static_cast<int64_t>(i) * row);
    return out;
}

std::vector<int64_t> take(const std::vector<int64_t>& y, const std::vector<int64_t>& index) {
    std::vector<int64_t> out;
    out.reserve(index.size());
    for (auto i : index) out.push_back(y[i]);
    return out;
}

std::vector<int64_t> stratified_indices(const std::vector<int64_t>& labels, int64_t size, uint64_t seed) {
    std::map<int64_t, std::vector<int64_t>> members;
    for (size_t i = 0; i < labels.size(); ++i) members[labels[i]].push_back(static_cast<int64_t>(i));
    const double n = static_cast<double>(labels.size());
    std::vector<int64_t> take_count;
    std::vector<double> remainder;
    int64_t taken = 0;
    for (auto& [_, m] : members) {
        const double quota = static_cast<double>(size) * static_cast<double>(m.size()) / n;
        take_count.push_back(static_cast<int64_t>(std::floor(quota)));
        remainder.push_back(quota - std::floor(quota));
        taken += take_count.back();
    }
    // largest remainders take the leftover places, ties to the lower class
    std::vector<size_t> by_remainder(remainder.size());
    std::iota(by_remainder.begin(), by_remainder.end(), 0);
    std::stable_sort(by_remainder.begin(), by_remainder.end(), [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
    for (int64_t k = 0; k < size - taken; ++k) take_count[by_remainder[k]]++;
    std::mt19937_64 rng(seed);
    std::vector<int64_t> chosen;
    size_t k = 0;
    for (auto& [_, m] : members) {
        std::shuffle(m.begin(), m.end(), rng);
        chosen.insert(chosen.end(), m.begin(), m.begin() + take_count[k++]);
    }
    std::sort(chosen.begin(), chosen.end());
    return chosen;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(epoch)};
    std::mt19937_64 rng(seq);
    std::shuffle(order.begin(), order.end(), rng);
    return order;
}

}  // namespace handgrad::data
