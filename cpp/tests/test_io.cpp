// IDX validation, safetensors round trips, architecture JSON and the reference-output check.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "handgrad/serialization.hpp"
#include "handgrad/idx.hpp"
#include "handgrad/image.hpp"

#include <doctest/doctest.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <numeric>

using namespace handgrad;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / ("handgrad-cpp-test-" + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

std::vector<uint8_t> idx_bytes(uint8_t code, Shape shape, size_t data_bytes) {
    std::vector<uint8_t> b{0, 0, code, static_cast<uint8_t>(shape.size())};
    for (auto s : shape)
        for (int k = 3; k >= 0; --k) b.push_back(static_cast<uint8_t>(s >> (8 * k)));
    b.resize(b.size() + data_bytes, 7);
    return b;
}

// A (2, 1, 8, 8) input of distinct values.
Tensor gradcheck_input() {
    Tensor x({2, 1, 8, 8});
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    return x;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const HandgradError& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE("IDX: the header is checked against the size, as Python's parse_idx") {
    CHECK(idx::parse_idx(idx_bytes(0x08, {2, 3, 3}, 18), "f", idx::IMAGES_MAGIC).shape == Shape{2, 3, 3});
    CHECK(error_of([] { idx::parse_idx({0, 0, 8}, "f"); }) ==
          "f: too short for an IDX file: 3 bytes, the header alone needs at least 4");
    CHECK(error_of([] { idx::parse_idx(idx_bytes(0x08, {2, 3, 3}, 17), "f"); }) ==
          "f: truncated: the header declares 2 x 3 x 3 uint8 = 18 data bytes, the file holds 17 (1 missing)");
    CHECK(error_of([] { idx::parse_idx(idx_bytes(0x08, {2, 3, 3}, 20), "f"); }) ==
          "f: 2 trailing bytes: the header declares 2 x 3 x 3 uint8 = 18 data bytes, the file holds 20");
    CHECK(error_of([] { idx::parse_idx(idx_bytes(0x08, {4}, 4), "f", idx::IMAGES_MAGIC); }) ==
          "f: magic number 0x00000801 (uint8, 1-D), expected 0x00000803 (uint8, 3-D) for an images file; "
          "are the images and labels files swapped?");
    CHECK(error_of([] { idx::parse_idx(idx_bytes(0x07, {4}, 4), "f"); }).find("unknown dtype code 0x07") != std::string::npos);
    CHECK(error_of([] { idx::parse_idx({1, 0, 8, 1, 0, 0, 0, 0}, "f"); }).find("bad magic number 0x01000801") != std::string::npos);
    CHECK(error_of([] { idx::parse_idx({0, 0, 8, 0}, "f"); }) ==
          "f: magic number 0x00000800 declares 0 dimensions, expected at least 1");
}

TEST_CASE("IDX: gzip files are recognised from their content; a corrupt stream is named") {
    const auto raw = idx_bytes(0x08, {5}, 5);
    const fs::path path = temp_dir() / "labels.gz";
    {
        gzFile gz = gzopen(path.c_str(), "wb");
        gzwrite(gz, raw.data(), static_cast<unsigned>(raw.size()));
        gzclose(gz);
    }
    CHECK(idx::read_idx(path.string(), idx::LABELS_MAGIC).bytes == std::vector<uint8_t>(5, 7));
    std::string bytes;
    {
        std::ifstream f(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 10);
    CHECK(error_of([&] { idx::read_idx(path.string()); }).find("corrupt or truncated gzip data") != std::string::npos);
    // float32 round trip through the writer
    Tensor t({2, 2}, std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f});
    idx::write_idx_float32((temp_dir() / "t.idx").string(), t);
    const auto back = idx::read_idx((temp_dir() / "t.idx").string());
    CHECK(back.shape == Shape{2, 2});
    CHECK(back.values == std::vector<double>{1.5, -2.0, 3.25, 0.0});
}

TEST_CASE("checkpoints: architecture, weights and metadata survive a round trip") {
    manual_seed(5);
    for (const auto& name : model_names()) {
        nn::Sequential model = build_model(name, {1, 28, 28}, 10);
        const std::string path = (temp_dir() / (name + ".safetensors")).string();
        save(model, path, {{"input_shape", {1, 28, 28}}, {"normalization", {{"mean", 0.1307}, {"std", 0.3081}}}});
        Checkpoint ck = load(path);
        CHECK(architecture(ck.model) == architecture(model));
        CHECK(ck.metadata["normalization"]["std"].get<double>() == 0.3081);
        CHECK(ck.metadata["format"] == FORMAT);
        auto a = model.named_parameters(), b = ck.model.named_parameters();
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            CHECK(a[i].first == b[i].first);
            CHECK(a[i].second->data.data == b[i].second->data.data);
        }
    }
}

TEST_CASE("checkpoints: BatchNorm's buffers and the new layers survive a round trip; defaults Python writes load") {
    manual_seed(6);
    nn::Sequential model = build_model("", {1, 8, 8}, 4, {.layers = "conv4-bn-pool-fc8-elu-bn-dropout0.25-out-sigmoid"});
    model.add<nn::LogSoftmax>(1);
    const Tensor x = gradcheck_input();
    model.forward(x);  // training: the running statistics and the batch count move
    const std::string path = (temp_dir() / "bn.safetensors").string();
    save(model, path, {{"input_shape", {1, 8, 8}}}, &x);
    const TensorFile file = load_tensors(path);
    REQUIRE(file.counts.size() == 2);
    CHECK(file.counts[0] == std::pair<std::string, int64_t>{"2.num_batches_tracked", 1});
    Checkpoint ck = load(path);  // the reference check runs it in eval mode: the running statistics
    CHECK(architecture(ck.model) == architecture(model));
    auto a = model.named_buffers(), b = ck.model.named_buffers();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].first == b[i].first);
        if (a[i].second.values) CHECK(a[i].second.values->data == b[i].second.values->data);
        else CHECK(*a[i].second.count == *b[i].second.count);
    }
    model.eval(), ck.model.eval();
    CHECK(ck.model.forward(x).data == model.forward(x).data);
    // a Python Conv2d or pool that spells out its defaults is the same layer
    json arch = json::array({{{"type", "Conv2d"}, {"in_channels", 1}, {"out_channels", 2}, {"kernel_size", {3, 3}},
                              {"dilation", {1, 1}}, {"groups", 1}, {"padding_mode", "zeros"}},
                             {{"type", "MaxPool2d"}, {"kernel_size", 2}, {"ceil_mode", false}, {"dilation", 1}},
                             {{"type", "AvgPool2d"}, {"kernel_size", 2}, {"ceil_mode", false}, {"count_include_pad", true}}});
    CHECK(from_architecture(arch).size() == 3);
    // an integer tensor where a float one belongs is named
    TensorFile swapped = load_tensors(path);
    swapped.counts.emplace_back("2.running_mean", 0);
    std::erase_if(swapped.tensors, [](auto& t) { return t.first == "2.running_mean"; });
    save_tensors(path, swapped.tensors, swapped.metadata, swapped.counts);
    CHECK(error_of([&] { load(path); }).find("mis-shaped 2.running_mean: expected (4,), got ()") != std::string::npos);
}

TEST_CASE("checkpoints: strict loading names missing, unexpected and mis-shaped keys") {
    nn::Sequential model = build_model("tiny-mlp");
    const std::string path = (temp_dir() / "bad.safetensors").string();
    std::map<std::string, std::string> meta{{"format", py_dumps(FORMAT)}, {"architecture", py_dumps(architecture(model))}};
    save_tensors(path, {{"1.weight", Tensor({16, 784})}, {"1.bias", Tensor({15})}, {"9.weight", Tensor({1})}}, meta);
    CHECK(error_of([&] { load(path); }) ==
          path + ": tensors do not match the stored architecture: missing keys 3.weight, 3.bias; unexpected keys "
                 "9.weight; mis-shaped 1.bias: expected (16,), got (15,)");
    save_tensors(path, {}, {{"format", "\"other\""}});
    CHECK(error_of([&] { load(path); }).find("not a handgrad checkpoint") != std::string::npos);
    std::ofstream(path, std::ios::binary) << "abc";
    CHECK(error_of([&] { load(path); }).find("not a readable safetensors file") != std::string::npos);
}

TEST_CASE("reference inputs: checked on load; a mismatch names the first diverging layer") {
    manual_seed(9);
    nn::Sequential model = build_model("tiny-cnn", {1, 12, 12}, 10);
    const std::string path = (temp_dir() / "ref.safetensors").string();
    Tensor inputs({2, 1, 12, 12});
    for (int64_t i = 0; i < inputs.numel(); ++i) inputs[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    save(model, path, {{"input_shape", {1, 12, 12}}}, &inputs);
    CHECK(load(path).reference_layers_checked == model.size());

    // change the weights of layer 3 (the second conv) and keep the old reference checks
    TensorFile file = load_tensors(path);
    for (auto& [name, t] : file.tensors)
        if (name == "3.weight") t[0] += 0.5f;
    save_tensors(path, file.tensors, file.metadata);
    try {
        load(path);
        FAIL("no mismatch found");
    } catch (const ReferenceMismatch& e) {
        CHECK(e.layer == 3);
        CHECK(std::string(e.what()).find("layer 3 (Conv2d(8, 16, kernel_size=(3, 3)") != std::string::npos);
    }
    CHECK(load(path, {.check_reference = false}).reference_layers_checked == 0);
}

TEST_CASE("py_dumps writes JSON as Python's json.dumps") {
    const json v = {{"a", 1}, {"b", {0.5, 1e-05, true}}, {"c", "\xc3\xa9"}};
    CHECK(py_dumps(v) == "{\"a\": 1, \"b\": [0.5, 1e-05, true], \"c\": \"\\u00e9\"}");
}

namespace {

// A tiny-mlp checkpoint with one metadata field replaced (raw JSON text) or removed (nullopt).
std::string checkpoint_with(const std::string& field, const std::optional<std::string>& value) {
    manual_seed(1);
    nn::Sequential model = build_model("tiny-mlp", {1, 4, 4}, 3);
    const std::string path = (temp_dir() / "meta.safetensors").string();
    save(model, path, {{"input_shape", {1, 4, 4}}, {"normalization", {{"mean", 0.1}, {"std", 0.3}}},
                       {"classes", {"a", "b", "c"}}, {"dataset", "mnist"}, {"model", "tiny-mlp"},
                       {"loss", "cross_entropy"}});
    TensorFile file = load_tensors(path);
    if (value) file.metadata[field] = *value;
    else file.metadata.erase(field);
    save_tensors(path, file.tensors, file.metadata);
    return path;
}

}  // namespace

TEST_CASE("checkpoints: every metadata field the C++ reads is checked, and the error names the file and the field") {
    struct Case {
        std::string field, value, message;
    };
    const std::vector<Case> cases = {
        {"architecture", "{\"type\": \"Linear\"}", "metadata 'architecture': expected a list of layers, got an object with 1 keys"},
        {"architecture", "[{\"in_features\": 3}]", "entry 0: 'type' must be a layer name, got nothing"},
        {"architecture", "[{\"type\": \"Linear\", \"in_features\": \"16\", \"out_features\": 3}]",
         "entry 0 (Linear): 'in_features' must be an integer >= 0, got \"16\""},
        {"architecture", "[{\"type\": \"Linear\", \"in_features\": 16, \"out_features\": -3}]",
         "entry 0 (Linear): 'out_features' must be an integer >= 0, got -3"},
        {"architecture", "[{\"type\": \"Linear\", \"in_features\": 16, \"out_features\": 3, \"bias\": 1}]",
         "entry 0 (Linear): 'bias' must be true or false, got 1"},
        {"architecture", "[{\"type\": \"ReLU\", \"inplace\": true}]", "entry 0 (ReLU): unexpected argument 'inplace'"},
        {"architecture", "[{\"type\": \"Hardswish\"}]", "entry 0 (Hardswish): layer type Hardswish is not supported"},
        // what the Python layers may hold and the C++ ones do not compute: refused, never ignored
        {"architecture", "[{\"type\": \"MaxUnpool2d\", \"kernel_size\": 2}]",
         "metadata 'architecture': entry 0 (MaxUnpool2d): layer type MaxUnpool2d is not supported by the C++ port"},
        {"architecture", "[{\"type\": \"MaxPool2d\", \"kernel_size\": 2, \"return_indices\": true}]",
         "entry 0 (MaxPool2d): argument 'return_indices' = true is not supported by the C++ port (only its default false)"},
        // the options the C++ computes, checked as the Python's constructors check them
        {"architecture", "[{\"type\": \"LayerNorm\", \"normalized_shape\": [16, -1]}]",
         "entry 0 (LayerNorm): 'normalized_shape' must be an integer >= 0 or a list of at most 32 of them"},
        {"architecture", "[{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 3, \"dilation\": [2, 0]}]",
         "entry 0 (Conv2d): 'dilation' must be an integer >= 1 or a pair of them, got [2,0]"},
        {"architecture", "[{\"type\": \"Conv2d\", \"in_channels\": 3, \"out_channels\": 2, \"kernel_size\": 3, \"groups\": 2}]",
         "entry 0 (Conv2d): 'groups' must be an integer >= 1 dividing in_channels 3 and out_channels 2, got 2"},
        {"architecture", "[{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 3, \"stride\": 2, \"padding\": \"same\"}]",
         "entry 0 (Conv2d): 'padding' must be numbers with a stride other than 1"},
        {"architecture", "[{\"type\": \"AvgPool2d\", \"kernel_size\": 2, \"divisor_override\": 1.5}]",
         "entry 0 (AvgPool2d): 'divisor_override' must be null or a nonzero integer, got 1.5"},
        {"architecture", "[{\"type\": \"GELU\", \"approximate\": \"erf\"}]",
         "entry 0 (GELU): 'approximate' must be 'none' or 'tanh', got \"erf\""},
        {"architecture", "[{\"type\": \"Linear\", \"in_features\": 16, \"out_features\": 3, \"dtype\": \"float16\"}]",
         "entry 0 (Linear): unexpected argument 'dtype' (= \"float16\") is not supported by the C++ port; it takes "
         "in_features, out_features, bias"},
        {"architecture", "[{\"type\": \"BatchNorm1d\", \"num_features\": 0}]",
         "entry 0 (BatchNorm1d): 'num_features' must be an integer >= 1, got 0"},
        {"architecture", "[{\"type\": \"Softmax\", \"dtype\": \"int8\"}]",
         "entry 0 (Softmax): 'dtype' must be null, \"float32\" or \"float64\", got \"int8\""},
        {"architecture", "[{\"type\": \"MaxPool2d\", \"kernel_size\": [2, 2, 2]}]",
         "entry 0 (MaxPool2d): 'kernel_size' must be an integer >= 1 or a pair of them, got [2,2,2]"},
        {"architecture", "[{\"type\": \"MaxPool2d\", \"kernel_size\": 2, \"padding\": 2}]",
         "entry 0 (MaxPool2d): MaxPool2d: padding (2, 2) should be at most half of kernel_size (2, 2)"},
        {"architecture", "[{\"type\": \"Conv2d\", \"in_channels\": 1, \"out_channels\": 1, \"kernel_size\": 1, \"padding\": 100000}]",
         "'padding' must be smaller than kernel_size (1, 1), got 100000"},
        {"architecture", "[{\"type\": \"Dropout\", \"p\": 2}]", "entry 0 (Dropout): 'p' must be a number in [0, 1], got 2"},
        {"architecture", "[{\"type\": \"Flatten\", \"start_dim\": 1e9}]", "entry 0 (Flatten): 'start_dim' must be an integer >= -64"},
        {"dtype", "\"int8\"", "metadata 'dtype' must be \"float32\" or \"float64\", got \"int8\""},
        {"input_shape", "[1, -4, 4]", "metadata 'input_shape' must be [channels, height, width], each >= 1, got [1,-4,4]"},
        {"input_shape", "\"1x4x4\"", "metadata 'input_shape' must be [channels, height, width]"},
        {"normalization", "{\"mean\": 0.1}", "metadata 'normalization' must be {\"mean\": a finite number, \"std\": a finite number > 0}"},
        {"normalization", "{\"mean\": 0.1, \"std\": 0}", "metadata 'normalization' must be"},
        {"classes", "[\"a\", 2, \"c\"]", "metadata 'classes' must be a list of class names, got [\"a\",2,\"c\"]"},
        {"classes", "\"abc\"", "metadata 'classes' must be a list of class names, got \"abc\""},
        {"dataset", "7", "metadata 'dataset' must be a string, got 7"},
        {"model", "null", "metadata 'model' must be a string, got null"},
        {"loss", "\"hinge\"", "metadata 'loss' must be \"cross_entropy\" or \"mse\", got \"hinge\""},
        {"reference", "{\"input_shape\": [1, 16], \"inputs\": [1, 2], \"layers\": []}",
         "metadata 'reference': 'input_shape' must be a list of sizes >= 1 holding the 2 inputs, got [1,16]"},
        {"reference", "[]", "metadata 'reference': 'reference' must be an object"},
        {"normalization", "{\"mean\": NaN, \"std\": 1}", "metadata 'normalization' is not valid JSON"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.field);
        CAPTURE(c.value);
        const std::string path = checkpoint_with(c.field, c.value);
        const std::string message = error_of([&] { load(path); });
        CHECK(message.rfind(path + ": ", 0) == 0);
        CHECK_MESSAGE(message.find(c.message) != std::string::npos, message);
    }
}

TEST_CASE("checkpoints: fields may be absent; class names must match the outputs") {
    for (const char* field : {"classes", "normalization", "input_shape", "dataset", "model", "loss", "dtype"}) {
        CAPTURE(field);
        Checkpoint ck = load(checkpoint_with(field, std::nullopt));
        CHECK(ck.model.size() == 4);
    }
    Checkpoint unnamed = load(checkpoint_with("classes", std::nullopt));
    CHECK(unnamed.class_names(3) == std::vector<std::string>{"0", "1", "2"});
    Checkpoint named = load(checkpoint_with("classes", "[\"a\", \"b\"]"));
    CHECK(error_of([&] { named.class_names(3); }).find("metadata 'classes' names 2 classes, the model has 3 outputs") !=
          std::string::npos);
}

TEST_CASE("checkpoints: a small file cannot make the loader allocate a large model") {
    // Linear(30000, 30000) would take 3.6 GB; the file holds no tensors, so it is refused unbuilt
    const std::string path = (temp_dir() / "huge.safetensors").string();
    save_tensors(path, {}, {{"format", py_dumps(FORMAT)},
                            {"architecture", "[{\"type\": \"Linear\", \"in_features\": 30000, \"out_features\": 30000}]"}});
    CHECK(error_of([&] { load(path); }).find("missing keys 0.weight, 0.bias") != std::string::npos);
    // a tensor header that claims more elements than the file holds is refused before allocation
    std::string header = "{\"w\": {\"dtype\": \"F32\", \"shape\": [4000000000, 4000000000], \"data_offsets\": [0, 16]}}";
    std::string raw(8, '\0');
    for (int i = 0; i < 8; ++i) raw[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    std::ofstream(path, std::ios::binary) << raw << header << std::string(16, '\0');
    CHECK(error_of([&] { load_tensors(path); }).find("tensor 'w' has shape [4000000000,4000000000]; expected a list of sizes >= 0 whose F32 data fits") != std::string::npos);
}

TEST_CASE("checkpoints: non-finite weights are refused, naming the tensor") {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
        const std::string path = checkpoint_with("dataset", "\"mnist\"");
        TensorFile file = load_tensors(path);
        file.tensors[2].second[5] = bad;  // "3.weight"
        save_tensors(path, file.tensors, file.metadata);
        const std::string message = error_of([&] { load(path); });
        CHECK_MESSAGE(message.find(path + ": tensor '3.weight' holds 1 non-finite value (NaN or infinity; the first at "
                                          "flat index 5)") == 0, message);
    }
}

TEST_CASE("image: the EXIF orientation is read from either byte order, and only inside the block") {
    // "Exif\0\0", a TIFF header (II or MM, 42, IFD0 at byte 8), one entry: tag 0x0112 SHORT count 1
    auto block = [](bool little, uint16_t tag, uint16_t type, uint32_t count, uint16_t value, uint32_t ifd = 8) {
        std::vector<uint8_t> b{'E', 'x', 'i', 'f', 0, 0};
        auto put = [&](uint32_t v, int bytes) {
            for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> 8 * (little ? i : bytes - 1 - i)));
        };
        b.push_back(little ? 'I' : 'M');
        b.push_back(little ? 'I' : 'M');
        put(42, 2), put(ifd, 4), put(1, 2), put(tag, 2), put(type, 2), put(count, 4), put(value, 2), put(0, 2);
        return b;
    };
    for (bool little : {true, false}) {
        CAPTURE(little);
        for (uint16_t v = 1; v <= 8; ++v) CHECK(image::exif_orientation(block(little, 0x0112, 3, 1, v).data(), 32) == v);
        CHECK(image::exif_orientation(block(little, 0x0111, 3, 1, 6).data(), 32) == 0);  // another tag
        CHECK(image::exif_orientation(block(little, 0x0112, 3, 2, 6).data(), 32) == 0);  // two values
        CHECK(image::exif_orientation(block(little, 0x0112, 3, 1, 9).data(), 32) == 0);  // no such orientation
        CHECK(image::exif_orientation(block(little, 0x0112, 3, 1, 6, 0xFFFFFFF0).data(), 32) == 0);  // IFD outside
        for (size_t cut = 0; cut < 26; ++cut) CHECK(image::exif_orientation(block(little, 0x0112, 3, 1, 6).data(), cut) == 0);
    }
}

TEST_CASE("image: Pillow's resampling keeps a flat image flat and copies an unchanged size") {
    for (auto [w, h, ow, oh] : std::vector<std::array<int64_t, 4>>{{40, 52, 28, 28}, {7, 5, 28, 28}, {300, 2, 28, 28}, {28, 28, 28, 28}}) {
        CAPTURE(w);
        CAPTURE(h);
        for (auto filter : {image::Filter::lanczos, image::Filter::box}) {
            CHECK(image::resample(std::vector<uint8_t>(w * h * 2, 77), w, h, 2, ow, oh, filter) ==
                  std::vector<uint8_t>(ow * oh * 2, 77));
            const auto f = image::resample(std::vector<float>(w * h, 0.25f), w, h, ow, oh, filter);
            for (float v : f) CHECK(v == doctest::Approx(0.25f).epsilon(1e-6));
        }
    }
    std::vector<uint8_t> ramp(12 * 9);
    std::iota(ramp.begin(), ramp.end(), 0);
    CHECK(image::resample(ramp, 12, 9, 1, 12, 9, image::Filter::lanczos) == ramp);
    // a 2x box reduction averages pairs, each pass rounding half up: (30 + 41) / 2 -> 36, (15 + 36) / 2 -> 26
    CHECK(image::resample(std::vector<uint8_t>{0, 1, 10, 20, 2, 4, 30, 41}, 4, 2, 1, 2, 1, image::Filter::box) ==
          std::vector<uint8_t>{2, 26});
    CHECK_THROWS_AS(image::resample(std::vector<uint8_t>(5), 2, 2, 1, 3, 3, image::Filter::box), HandgradError);
}
