// Datasets by name (MNIST, Fashion-MNIST from their IDX files), the Normalizer, seeded stratified
// splits and the DataLoader's per-epoch order (mirrors src/handgrad/data/). The C++ port reads files
// already on disk and never downloads; splits and shuffles draw from a C++ generator, so they are
// the same kind of split as Python's, not the same members (pass --order for identical batches).
#pragma once

#include "handgrad/idx.hpp"

#include <optional>
#include <string>

namespace handgrad::data {

struct Dataset {
    std::string name;
    Tensor train_images;  // (N, 1, H, W) float32 in [0, 1], as x / 255
    std::vector<int64_t> train_labels;
    Tensor test_images;
    std::vector<int64_t> test_labels;
    std::vector<std::string> classes;
    std::string source;
};

// Looked up as in Python: data_dir (the folder or data_dir/<name>), then $HANDGRAD_DATA_DIR/<name>,
// then $XDG_CACHE_HOME/handgrad/<name> (default ~/.cache/handgrad/<name>).
Dataset load_dataset(const std::string& name, const std::optional<std::string>& data_dir = {});
std::vector<std::string> classes_for(const std::string& name);

// y = (x - mean) / std, float32; mean and std fitted on the training images (accumulated in float64).
struct Normalizer {
    double mean = 0.0, std = 1.0;
    static Normalizer fit(const Tensor& train_images);
    Tensor operator()(const Tensor& images) const;
};

// Rows `index` of a (N, ...) tensor / label vector.
Tensor take(const Tensor& x, const std::vector<int64_t>& index);
std::vector<int64_t> take(const std::vector<int64_t>& y, const std::vector<int64_t>& index);

// Sorted indices of `size` samples drawn per class in proportion to the class counts (the quotas
// exactly as Python's stratified_indices; the members a seeded C++ draw).
std::vector<int64_t> stratified_indices(const std::vector<int64_t>& labels, int64_t size, uint64_t seed);

// The visit order of `epoch`: a permutation of 0..n-1 seeded by (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace handgrad::data
