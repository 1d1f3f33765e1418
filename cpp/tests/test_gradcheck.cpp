// Every layer's backward against central finite differences, over every element of small inputs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "gradcheck.hpp"

using namespace handgrad;
using gradcheck::check;
using gradcheck::dot;
using gradcheck::random_normal;
using gradcheck::spread;
using functional::Reduction;

namespace {

// For a layer without parameters (or with them): check dL/dx and every parameter gradient.
void check_layer(const std::string& op, nn::Module& layer, Tensor x, uint64_t seed = 1,
                 const std::function<void()>& before_forward = [] {}) {
    before_forward();
    const Tensor y = layer.forward(x);
    const Tensor R = random_normal(y.shape, seed + 100);
    for (auto& [_, p] : layer.named_parameters()) p->grad = Tensor();
    const Tensor grad_input = layer.backward(R);
    std::vector<std::pair<std::string, Tensor>> param_grads;
    for (auto& [name, p] : layer.named_parameters()) param_grads.emplace_back(name, p->grad);
    auto objective = [&] {
        before_forward();
        return dot(layer.forward(x), R);
    };
    check(op, "input", x, grad_input, objective);
    size_t k = 0;
    for (auto& [name, p] : layer.named_parameters()) check(op, name, p->data, param_grads[k++].second, objective);
}

// check_layer on a fresh Layer(options) per case, each input spread from its own seed.
template <class Layer, class Options>
void check_cases(const std::vector<std::pair<Options, Shape>>& cases, uint64_t seed) {
    for (auto& [options, shape] : cases) {
        Layer layer(options);
        check_layer(layer.repr(), layer, spread(shape, seed), seed + 1);
        seed += 2;
    }
}

}  // namespace

TEST_CASE("Linear: grad_input = G @ weight, grad_weight = G.T @ x, grad_bias = G.sum(0)") {
    manual_seed(0);
    for (bool bias : {true, false}) {
        nn::Linear layer({.in_features = 5, .out_features = 4, .bias = bias});
        check_layer(layer.repr(), layer, spread({3, 5}, 1));
    }
}

TEST_CASE("Conv2d over kernel, stride and padding") {
    struct Case {
        nn::Conv2dOptions options;
        Shape x;
    };
    const std::vector<Case> cases = {
        {{.in_channels = 2, .out_channels = 3, .kernel_size = {3, 3}, .padding = {1, 1}}, {2, 2, 5, 5}},
        {{.in_channels = 1, .out_channels = 2, .kernel_size = {3, 3}, .stride = {2, 2}}, {2, 1, 7, 6}},
        {{.in_channels = 2, .out_channels = 2, .kernel_size = {2, 3}, .stride = {2, 1}, .padding = {1, 0}}, {1, 2, 5, 6}},
        {{.in_channels = 3, .out_channels = 2, .kernel_size = {1, 1}, .bias = false}, {2, 3, 3, 3}},
    };
    manual_seed(1);
    uint64_t seed = 10;
    for (auto& c : cases) {
        nn::Conv2d layer(c.options);
        check_layer(layer.repr(), layer, spread(c.x, seed), seed + 1);
        seed += 2;
    }
}

TEST_CASE("MaxPool2d sends each window's gradient to its maximum") {
    const std::vector<std::pair<nn::Pool2dOptions, Shape>> cases = {
        {{.kernel_size = {2, 2}}, {2, 2, 4, 4}},
        {{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}}, {1, 2, 5, 5}},  // overlapping, padded
        {{.kernel_size = {2, 2}}, {1, 1, 5, 5}},  // a row and column no window covers
        {{.kernel_size = {2, 3}, .stride = nn::Pair{1, 2}}, {1, 2, 4, 7}},
    };
    uint64_t seed = 20;
    for (auto& [options, shape] : cases) {
        nn::MaxPool2d layer(options);
        check_layer(layer.repr(), layer, spread(shape, seed), seed + 1);
        seed += 2;
    }
}

TEST_CASE("AvgPool2d spreads each window's gradient evenly") {
    const std::vector<std::pair<nn::Pool2dOptions, Shape>> cases = {
        {{.kernel_size = {2, 2}}, {2, 2, 4, 4}},
        {{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}}, {1, 2, 5, 5}},
        {{.kernel_size = {2, 3}, .stride = nn::Pair{1, 2}}, {1, 2, 4, 7}},
    };
    uint64_t seed = 30;
    for (auto& [options, shape] : cases) {
        nn::AvgPool2d layer(options);
        check_layer(layer.repr(), layer, spread(shape, seed), seed + 1);
        seed += 2;
    }
}

TEST_CASE("Flatten reshapes the gradient back") {
    nn::Flatten layer;
    check_layer(layer.repr(), layer, spread({2, 3, 2, 2}, 40));
    nn::Flatten middle(1, 2);
    check_layer(middle.repr(), middle, spread({2, 3, 2, 2}, 41));
}

TEST_CASE("activations: ReLU, LeakyReLU, Sigmoid, Tanh") {
    nn::ReLU relu;
    check_layer("ReLU", relu, spread({3, 7}, 50));
    nn::LeakyReLU leaky(0.1f);
    check_layer("LeakyReLU", leaky, spread({3, 7}, 51));
    nn::Sigmoid sigmoid;
    check_layer("Sigmoid", sigmoid, spread({3, 7}, 52, 20.0));  // large |x| too: the stable form
    nn::Tanh tanh_layer;
    check_layer("Tanh", tanh_layer, spread({3, 7}, 53, 3.0));
}

TEST_CASE("Dropout: dL/dx = G * mask, the mask fixed by the seed") {
    nn::Dropout layer(0.3f);
    check_layer("Dropout", layer, spread({4, 6}, 60), 60, [] { manual_seed(123); });
    layer.eval();
    const Tensor x = spread({2, 3}, 61);
    CHECK(layer.forward(x).data == x.data);  // eval: the identity
}

TEST_CASE("Conv2d with groups, dilation, 'same' and 'valid' padding and every padding_mode") {
    using functional::PaddingMode;
    const std::vector<std::pair<nn::Conv2dOptions, Shape>> cases = {
        {{.in_channels = 2, .out_channels = 2, .kernel_size = {2, 3}, .stride = {1, 2}, .padding = {1, 1}, .dilation = {2, 1}},
         {1, 2, 7, 6}},
        {{.in_channels = 4, .out_channels = 6, .kernel_size = {3, 2}, .padding = {1, 0}, .groups = 2}, {2, 4, 5, 5}},
        {{.in_channels = 2, .out_channels = 2, .kernel_size = {3, 3}, .bias = false, .dilation = {2, 2}, .groups = 2,
          .padding_name = "same"},
         {1, 2, 6, 6}},
        {{.in_channels = 2, .out_channels = 3, .kernel_size = {2, 3}, .padding_mode = PaddingMode::reflect,
          .padding_name = "same"},
         {1, 2, 5, 4}},  // an even kernel: the odd padding row at the bottom
        {{.in_channels = 2, .out_channels = 2, .kernel_size = {3, 3}, .stride = {2, 2}, .padding = {2, 1},
          .padding_mode = PaddingMode::replicate},
         {1, 2, 4, 5}},
        {{.in_channels = 2, .out_channels = 2, .kernel_size = {3, 3}, .padding = {1, 3}, .groups = 2,
          .padding_mode = PaddingMode::circular},
         {2, 2, 4, 4}},
        {{.in_channels = 3, .out_channels = 2, .kernel_size = {3, 2}, .padding_name = "valid"}, {1, 3, 6, 5}},
    };
    manual_seed(2);
    check_cases<nn::Conv2d>(cases, 200);
}

TEST_CASE("MaxPool2d with dilation and ceil_mode, AvgPool2d with ceil_mode, count_include_pad, divisor_override") {
    const std::vector<std::pair<nn::Pool2dOptions, Shape>> max_cases = {
        {{.kernel_size = {2, 2}, .stride = nn::Pair{1, 1}, .dilation = {2, 2}}, {1, 2, 5, 5}},
        {{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .ceil_mode = true}, {1, 2, 6, 6}},
        {{.kernel_size = {2, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .dilation = {2, 1}, .ceil_mode = true},
         {1, 1, 6, 7}},
    };
    check_cases<nn::MaxPool2d>(max_cases, 220);
    const std::vector<std::pair<nn::Pool2dOptions, Shape>> avg_cases = {
        {{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .ceil_mode = true}, {1, 2, 6, 6}},
        {{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .count_include_pad = false}, {1, 2, 5, 5}},
        {{.kernel_size = {2, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .ceil_mode = true,
          .count_include_pad = false, .divisor_override = 5},
         {1, 2, 5, 6}},
    };
    check_cases<nn::AvgPool2d>(avg_cases, 230);
    // ceil_mode: one more window where the last one still starts inside the input or its padding
    CHECK(nn::MaxPool2d({.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .ceil_mode = true}).forward(Tensor({1, 1, 6, 6})).shape ==
          Shape{1, 1, 3, 3});
    CHECK(nn::MaxPool2d({.kernel_size = {2, 2}, .stride = nn::Pair{2, 2}, .padding = {1, 1}, .ceil_mode = true})
              .forward(Tensor({1, 1, 4, 4}))
              .shape == Shape{1, 1, 3, 3});
}

TEST_CASE("AdaptiveAvgPool2d spreads each output's gradient over its overlapping window") {
    using Size = nn::AdaptiveAvgPool2d::Size;
    const std::vector<std::pair<Size, Shape>> cases = {
        {{3, 2}, {2, 2, 5, 7}},  // windows that overlap and differ in size
        {{1, 1}, {1, 3, 4, 4}},  // global average pooling
        {{std::nullopt, 4}, {1, 2, 3, 6}},  // None keeps the height
    };
    check_cases<nn::AdaptiveAvgPool2d>(cases, 240);
    CHECK(nn::AdaptiveAvgPool2d({std::nullopt, 4}).forward(Tensor({1, 2, 3, 6})).shape == Shape{1, 2, 3, 4});
}

TEST_CASE("unbatched (C, H, W) maps: the batch of one's values and gradients, without the batch axis") {
    manual_seed(7);
    std::vector<std::unique_ptr<nn::Module>> layers;
    layers.push_back(std::make_unique<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 2, .out_channels = 3, .padding = {1, 1}}));
    layers.push_back(std::make_unique<nn::Conv2d>(
        nn::Conv2dOptions{.in_channels = 2, .out_channels = 2, .kernel_size = {2, 2}, .dilation = {2, 1}, .groups = 2}));
    layers.push_back(std::make_unique<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}}));
    layers.push_back(std::make_unique<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2},
                                                                       .padding = {1, 1}, .ceil_mode = true}));
    layers.push_back(std::make_unique<nn::AvgPool2d>(nn::Pool2dOptions{.kernel_size = {3, 2}, .padding = {1, 1}}));
    layers.push_back(std::make_unique<nn::AdaptiveAvgPool2d>(nn::AdaptiveAvgPool2d::Size{3, 2}));
    uint64_t seed = 700;
    for (auto& layer : layers) {
        const Tensor x = spread({2, 5, 6}, seed);
        const Tensor y = layer->forward(x);
        const Tensor R = random_normal(y.shape, seed + 1);
        for (auto& [_, p] : layer->named_parameters()) p->grad = Tensor();
        const Tensor grad_input = layer->backward(R);
        CHECK(grad_input.shape == x.shape);
        std::vector<Tensor> grads;
        for (auto& [_, p] : layer->named_parameters()) grads.push_back(p->grad), p->grad = Tensor();
        // the batch of one gives the same numbers
        const Tensor y4 = layer->forward(x.reshape({1, 2, 5, 6}));
        CHECK(y4.shape == Shape{1, y.shape[0], y.shape[1], y.shape[2]});
        CHECK(y4.data == y.data);
        CHECK(layer->backward(R.reshape(y4.shape)).data == grad_input.data);
        size_t k = 0;
        for (auto& [_, p] : layer->named_parameters()) CHECK(p->grad.data == grads[k++].data);
        check_layer(layer->repr() + " on (C, H, W)", *layer, x, seed + 2);
        // after an unbatched forward, dL/dy must be unbatched too
        layer->forward(x);
        CHECK_THROWS_AS(layer->backward(R.reshape(y4.shape)), ShapeError);
        seed += 3;
    }
    CHECK_THROWS_WITH_AS(nn::MaxPool2d().forward(Tensor({4, 4})),
                         "MaxPool2d(kernel_size=2, stride=2, padding=0): expected input of shape (N, C, H, W) or (C, H, W), got (4, 4)",
                         ShapeError);
    CHECK_THROWS_WITH_AS(nn::Conv2d({.in_channels = 2, .out_channels = 1}).forward(Tensor({3, 5, 5})),
                         "Conv2d(2, 1, kernel_size=(3, 3), stride=(1, 1)): expected input of shape (N, 2, H, W) or (2, H, W), "
                         "got (3, 5, 5)",
                         ShapeError);
}

TEST_CASE("MaxUnpool2d puts each maximum back; dL/dx gathers G at the indices") {
    struct Case {
        nn::Pool2dOptions options;
        Shape x;
        std::vector<int64_t> output_size;
    };
    const std::vector<Case> cases = {
        {{.kernel_size = {2, 2}}, {2, 2, 4, 4}, {}},
        {{.kernel_size = {2, 2}}, {1, 2, 5, 5}, {5, 5}},           // the odd row and column the pool dropped
        {{.kernel_size = {3, 2}, .stride = nn::Pair{3, 2}, .padding = {1, 1}}, {2, 3, 5}, {2, 3, 5}},  // unbatched
    };
    uint64_t seed = 800;
    for (auto& c : cases) {
        nn::MaxPool2d pool(c.options);
        nn::MaxUnpool2d unpool(c.options);
        const Tensor x = spread(c.x, seed);
        auto [y, indices] = pool.forward_with_indices(x);
        CHECK(indices.shape == y.shape);
        Tensor z = unpool.forward(y, indices, c.output_size);
        Shape expected = x.shape;
        if (!c.output_size.empty()) expected.back() = c.output_size.back(), expected[expected.size() - 2] = c.output_size[c.output_size.size() - 2];
        else for (int a = 0; a < 2; ++a) expected[expected.size() - 2 + a] = (y.shape[y.ndim() - 2 + a] - 1) * unpool.stride[a] - 2 * unpool.padding[a] + unpool.kernel_size[a];
        REQUIRE(z.shape == expected);
        // each maximum back in its place, zeros elsewhere; the pool of the result is the pool's output
        const int64_t planes = Tensor::count(Shape(y.shape.begin(), y.shape.end() - 2));
        const int64_t per = y.numel() / planes, plane_in = x.numel() / planes, plane_out = z.numel() / planes;
        int64_t nonzero = 0;
        for (float v : z.data) nonzero += v != 0.0f;
        CHECK(nonzero == y.numel());
        for (int64_t i = 0; i < y.numel(); ++i) {
            CHECK(z[i / per * plane_out + indices.values[i]] == y[i]);
            CHECK(x[i / per * plane_in + indices.values[i]] == y[i]);
        }
        const Tensor R = random_normal(z.shape, seed + 1);
        const Tensor grad = unpool.backward(R);
        for (int64_t i = 0; i < y.numel(); ++i) CHECK(grad[i] == R[i / per * plane_out + indices.values[i]]);
        Tensor input = y;
        check("MaxUnpool2d", "input", input, grad, [&] { return dot(unpool.forward(input, indices, c.output_size), R); });
        seed += 2;
    }
    nn::MaxUnpool2d unpool({.kernel_size = {2, 2}});
    const Tensor y({1, 1, 2, 2});
    functional::PoolIndices bad{.shape = {1, 1, 2, 2}, .values = {0, 1, 2, 16}};
    CHECK_THROWS_WITH_AS(unpool.forward(y, bad),
                         "MaxUnpool2d(kernel_size=2, stride=2, padding=0): index 16 is outside the output planes (4, 4) (0 to 15)",
                         HandgradError);
    CHECK_THROWS_AS(unpool.forward(y, {.shape = {1, 1, 4}, .values = {0, 1, 2, 3}}), ShapeError);
    CHECK_THROWS_WITH_AS(unpool.forward(y, {.shape = {1, 1, 2, 2}, .values = {0, 1, 2, 3}}, {6, 4}),
                         "MaxUnpool2d(kernel_size=2, stride=2, padding=0): output_size (6, 4): the height must lie strictly "
                         "between 2 and 6",
                         HandgradError);
    CHECK_THROWS_AS(unpool.backward(Tensor({1, 1, 4, 4})), HandgradError);  // before any forward
    CHECK_THROWS_AS(nn::MaxUnpool2d({.kernel_size = {2, 2}, .padding = {2, 2}}), HandgradError);
}

TEST_CASE("MaxPool2d: a NaN in a window wins (its last one), padding never does") {
    const std::vector<float> values = {1.0f, NAN, 3.0f, NAN, -INFINITY, -INFINITY, -INFINITY, -INFINITY, 2.0f};
    for (const auto& options : {nn::Pool2dOptions{.kernel_size = {2, 2}, .stride = nn::Pair{1, 1}, .dilation = {1, 1}, .ceil_mode = true},
                                nn::Pool2dOptions{.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}}}) {
        nn::MaxPool2d pool(options);
        auto [y, indices] = pool.forward_with_indices(Tensor({1, 1, 3, 3}, values));
        CHECK(std::isnan(y[0]));
        CHECK(indices.values[0] == 3);  // the window's last NaN
    }
    auto [y2, indices2] = nn::MaxPool2d({.kernel_size = {2, 2}}).forward_with_indices(
        Tensor({1, 1, 2, 2}, std::vector<float>{1.0f, NAN, NAN, 0.0f}));
    CHECK(std::isnan(y2[0]));
    CHECK(indices2.values[0] == 2);
    // a window of -inf keeps its first pixel inside x, not the padding
    nn::MaxPool2d pool({.kernel_size = {3, 3}, .stride = nn::Pair{2, 2}, .padding = {1, 1}});
    auto [y, indices] = pool.forward_with_indices(Tensor({1, 1, 3, 3}, std::vector<float>(9, -INFINITY)));
    CHECK(indices.values == std::vector<int64_t>{0, 1, 3, 4});
}

TEST_CASE("GELU (both forms), SiLU, Softplus (beta, threshold), Identity") {
    for (const char* approximate : {"none", "tanh"}) {
        nn::GELU gelu(approximate);
        check_layer(gelu.repr(), gelu, spread({3, 7}, 250, 3.0));
    }
    nn::SiLU silu;
    check_layer(silu.repr(), silu, spread({3, 7}, 251, 5.0));
    nn::Softplus softplus(2.0, 0.5);  // beta * x above 0.5 on part of the grid: the linear branch too
    check_layer(softplus.repr(), softplus, spread({3, 7}, 252, 3.0));
    nn::Softplus plain;
    check_layer(plain.repr(), plain, spread({3, 7}, 253, 30.0));  // large |x|: log1p(exp(-|z|))
    nn::Identity identity;
    check_layer(identity.repr(), identity, spread({2, 3}, 254));
    CHECK_THROWS_AS(nn::GELU("erf"), HandgradError);
}

TEST_CASE("LayerNorm over the trailing axes, with and without affine parameters or bias") {
    struct Case {
        nn::LayerNormOptions options;
        Shape x;
    };
    const std::vector<Case> cases = {
        {{.normalized_shape = {5}}, {4, 5}},
        {{.normalized_shape = {3, 4}, .eps = 0.1}, {2, 3, 4}},
        {{.normalized_shape = {2, 2, 3}}, {2, 2, 2, 3}},
        {{.normalized_shape = {4}, .elementwise_affine = false}, {3, 4}},
        {{.normalized_shape = {4}, .bias = false}, {2, 3, 4}},
    };
    uint64_t seed = 260;
    for (auto& c : cases) {
        nn::LayerNorm layer(c.options);
        if (layer.weight) layer.weight->data = random_normal(c.options.normalized_shape, seed);
        if (layer.bias) layer.bias->data = random_normal(c.options.normalized_shape, seed + 1);
        check_layer(layer.repr(), layer, spread(c.x, seed + 2, 2.0), seed + 3);
        seed += 4;
    }
    CHECK_THROWS_AS(nn::LayerNorm({.normalized_shape = {4}}).forward(Tensor({2, 5})), HandgradError);
}

TEST_CASE("Dropout2d zeroes whole channels: dL/dx = G * mask, the mask fixed by the seed") {
    nn::Dropout2d layer(0.5);
    check_layer("Dropout2d", layer, spread({3, 4, 2, 2}, 270), 270, [] { manual_seed(7); });
    manual_seed(7);
    const Tensor y = layer.forward(Tensor({3, 4, 2, 2}, 1.0f));
    for (int64_t plane = 0; plane < 12; ++plane)  // each channel kept or dropped as a whole
        for (int64_t k = 1; k < 4; ++k) CHECK(y[plane * 4 + k] == y[plane * 4]);
    CHECK_THROWS_AS(layer.forward(Tensor({2, 3})), ShapeError);
}

TEST_CASE("CrossEntropyLoss: dL/dlogits = (softmax - onehot) / N") {
    Tensor logits = spread({4, 5}, 70, 10.0);
    const std::vector<int64_t> target{0, 3, 4, 1};
    nn::CrossEntropyLoss loss;
    loss.forward(logits, target);
    const Tensor grad = loss.backward();
    check("CrossEntropyLoss", "input", logits, grad, [&] { return double(loss.forward(logits, target)[0]); });
    // logsumexp keeps huge logits finite
    Tensor big({1, 3}, std::vector<float>{1000.0f, 0.0f, -1000.0f});
    CHECK(loss.forward(big, {0})[0] == doctest::Approx(0.0).epsilon(1e-6));
    CHECK_THROWS_AS(loss.forward(big, {3}), HandgradError);
}

TEST_CASE("MSELoss: dL/dinput = 2 (input - target) / numel") {
    Tensor input = spread({3, 4}, 80), target = random_normal({3, 4}, 81);
    for (auto reduction : {functional::Reduction::mean, functional::Reduction::sum}) {
        nn::MSELoss loss(reduction);
        loss.forward(input, target);
        const Tensor grad = loss.backward();
        check("MSELoss", "input", input, grad, [&] { return double(loss.forward(input, target)[0]); });
    }
}

// Every reduction of every loss: L = sum(loss * R) with R one random dL/dloss per loss value.
TEST_CASE("losses over their reductions: CrossEntropyLoss, NLLLoss, MSELoss") {
    const std::vector<int64_t> target{0, 3, 4, 1};
    for (auto reduction : {Reduction::mean, Reduction::sum, Reduction::none}) {
        CAPTURE(functional::reduction_name(reduction));
        Tensor logits = spread({4, 5}, 71, 5.0);
        nn::CrossEntropyLoss ce(reduction);
        const Tensor R = random_normal(ce.forward(logits, target).shape, 72);
        const Tensor ce_grad = ce.backward(R);
        check(ce.repr(), "input", logits, ce_grad, [&] { return dot(ce.forward(logits, target), R); });

        Tensor log_probs = functional::log_softmax_forward(spread({4, 5}, 73), 1).first;
        nn::NLLLoss nll(reduction);
        nll.forward(log_probs, target);
        const Tensor nll_grad = nll.backward(R);
        check(nll.repr(), "input", log_probs, nll_grad, [&] { return dot(nll.forward(log_probs, target), R); });

        Tensor input = spread({3, 4}, 74), mse_target = random_normal({3, 4}, 75);
        nn::MSELoss mse(reduction);
        const Tensor R_mse = random_normal(mse.forward(input, mse_target).shape, 76);
        const Tensor mse_grad = mse.backward(R_mse);
        check(mse.repr(), "input", input, mse_grad, [&] { return dot(mse.forward(input, mse_target), R_mse); });
    }
    nn::NLLLoss nll(Reduction::none);
    nll.forward(Tensor({2, 3}), {0, 2});
    CHECK_THROWS_WITH_AS(nll.backward(), "NLLLoss(reduction='none'): expected grad_output of shape (2,) (one per sample, "
                                         "as reduction='none'), got ()", ShapeError);
    CHECK(nn::NLLLoss().forward(Tensor({2, 3}, std::vector<float>{-1, -2, -3, -4, -5, -6}), {1, 2})[0] == 4.0f);  // (2 + 6) / 2
    CHECK_THROWS_AS(nn::NLLLoss().forward(Tensor({2, 3}), {0, 3}), HandgradError);
}

TEST_CASE("class losses with weights, ignore_index, label smoothing, probabilities, maps and unbatched input") {
    const functional::ClassLossOptions all{.weight = Tensor({4}, std::vector<float>{0.5f, 2.0f, 1.0f, 1.5f}),
                                           .ignore_index = 2, .label_smoothing = 0.2f};
    struct Case {
        Shape input;
        std::vector<int64_t> target;  // empty: probabilities
        functional::ClassLossOptions options;
    };
    const std::vector<Case> cases = {
        {{5, 4}, {0, 2, 3, 1, 2}, all},
        {{2, 4, 3}, {1, 2, 0, 3, 3, 2}, all},            // (N, C, d1): targets (N, d1)
        {{2, 4, 2, 2}, {0, 1, 2, 3, 3, 2, 1, 0}, {.ignore_index = 1}},
        {{4}, {3}, {.label_smoothing = 0.3f}},           // unbatched (C,): one target
        {{3, 4}, {}, {.weight = all.weight, .label_smoothing = 0.1f}},
        {{2, 4, 3}, {}, {}},
    };
    uint64_t seed = 900;
    for (auto reduction : {Reduction::mean, Reduction::sum, Reduction::none})
        for (auto& c : cases) {
            nn::CrossEntropyLoss ce(reduction, c.options);
            CAPTURE(ce.repr());
            Tensor logits = spread(c.input, seed, 3.0);
            Tensor probabilities = functional::softmax_forward(random_normal(c.input, seed + 1), c.input.size() == 1 ? 0 : 1).first;
            auto loss = [&] { return c.target.empty() ? ce.forward(logits, probabilities) : ce.forward(logits, c.target); };
            const Tensor R = random_normal(loss().shape, seed + 2);
            const Tensor grad = ce.backward(R);
            check(ce.repr(), "input", logits, grad, [&] { return dot(loss(), R); });
            if (!c.target.empty() && c.options.label_smoothing == 0) {
                nn::NLLLoss nll(reduction, c.options);
                Tensor log_probs = functional::log_softmax_forward(logits, c.input.size() == 1 ? 0 : 1).first;
                nll.forward(log_probs, c.target);
                const Tensor nll_grad = nll.backward(R);
                check(nll.repr(), "input", log_probs, nll_grad, [&] { return dot(nll.forward(log_probs, c.target), R); });
            }
            seed += 3;
        }
    // the plain loss and the general form agree where both apply
    const Tensor logits = spread({3, 4}, 950, 3.0);
    nn::CrossEntropyLoss plain, general(Reduction::mean, {.weight = Tensor({4}, 1.0f)});
    CHECK(plain.forward(logits, {0, 3, 1})[0] == doctest::Approx(general.forward(logits, {0, 3, 1})[0]).epsilon(1e-6));
    // 'mean' over weights: sum_n w[t_n] l_n / sum_n w[t_n], the ignored samples out of both
    functional::ClassLossOptions nll_options = all;
    nll_options.label_smoothing = 0;
    nn::NLLLoss weighted(Reduction::mean, nll_options);
    const Tensor log_probs({3, 4}, std::vector<float>{-1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12});
    CHECK(weighted.forward(log_probs, {1, 2, 3})[0] == doctest::Approx((2.0 * 2 + 1.5 * 12) / 3.5));
    CHECK(weighted.repr() == "NLLLoss(weight=[0.5, 2.0, 1.0, 1.5], ignore_index=2)");
    CHECK(nn::CrossEntropyLoss(Reduction::sum, all).repr() ==
          "CrossEntropyLoss(weight=[0.5, 2.0, 1.0, 1.5], ignore_index=2, reduction='sum', label_smoothing=0.2)");
    CHECK(std::isnan(nn::CrossEntropyLoss(Reduction::mean, {.ignore_index = 0}).forward(logits, {0, 0, 0})[0]));
    CHECK_THROWS_WITH_AS(nn::CrossEntropyLoss(Reduction::mean, all).forward(Tensor({2, 3}), {0, 1}),
                         "CrossEntropyLoss(weight=[0.5, 2.0, 1.0, 1.5], ignore_index=2, label_smoothing=0.2): expected weight "
                         "of shape (3,), one per class, got (4,)",
                         ShapeError);
    CHECK_THROWS_AS(nn::CrossEntropyLoss().forward(Tensor({2, 4, 3}), std::vector<int64_t>{0, 1}), ShapeError);
    CHECK_THROWS_AS(nn::CrossEntropyLoss(Reduction::mean, {.ignore_index = 0}).forward(Tensor({2, 3}), Tensor({2, 3})),
                    HandgradError);
    CHECK_THROWS_AS(nn::CrossEntropyLoss(Reduction::mean, {.label_smoothing = 1.5f}), HandgradError);
    CHECK_THROWS_AS(nn::NLLLoss(Reduction::mean, {.label_smoothing = 0.1f}), HandgradError);
}

TEST_CASE("ELU, Softmax and LogSoftmax along each axis") {
    nn::ELU elu(0.7);
    check_layer(elu.repr(), elu, spread({3, 7}, 54, 3.0));
    for (int dim : {-1, 0, 1}) {
        nn::Softmax softmax(dim);
        check_layer(softmax.repr(), softmax, spread({3, 4, 2}, 55, 3.0));
        nn::LogSoftmax log_softmax(dim);
        check_layer(log_softmax.repr(), log_softmax, spread({3, 4, 2}, 56, 3.0));
    }
    nn::Softmax softmax;  // each row sums to 1, even for huge logits
    const Tensor y = softmax.forward(Tensor({1, 3}, std::vector<float>{1000.0f, 0.0f, -1000.0f}));
    CHECK(y[0] == doctest::Approx(1.0));
    CHECK_THROWS_AS(nn::Softmax(2).forward(Tensor({2, 3})), HandgradError);
}

TEST_CASE("BatchNorm1d and BatchNorm2d, training and eval, with and without affine") {
    struct Case {
        bool two_d, training, affine;
        Shape x;
    };
    const std::vector<Case> cases = {{false, true, true, {5, 3}},  {false, true, false, {4, 3, 2}},
                                     {true, true, true, {2, 3, 3, 3}}, {false, false, true, {5, 3}},
                                     {true, false, true, {2, 3, 2, 2}}, {true, true, false, {3, 2, 2, 2}}};
    uint64_t seed = 110;
    for (auto& c : cases) {
        const nn::BatchNormOptions options{.num_features = c.x[1], .affine = c.affine};
        std::unique_ptr<nn::BatchNormBase> layer;
        if (c.two_d) layer = std::make_unique<nn::BatchNorm2d>(options);
        else layer = std::make_unique<nn::BatchNorm1d>(options);
        if (layer->weight) layer->weight->data = random_normal({c.x[1]}, seed), layer->bias->data = random_normal({c.x[1]}, seed + 1);
        layer->running_mean = random_normal({c.x[1]}, seed + 2);
        for (int64_t k = 0; k < c.x[1]; ++k) layer->running_var[k] = 0.5f + 0.25f * static_cast<float>(k);
        layer->train(c.training);
        CAPTURE(c.training);
        check_layer(layer->repr(), *layer, spread(c.x, seed + 3, 2.0), seed + 4);
        seed += 5;
    }
}

TEST_CASE("BatchNorm's running statistics: momentum, the unbiased variance, a cumulative average") {
    const Tensor x({4, 2}, std::vector<float>{1, 10, 2, 20, 3, 30, 6, 40});  // channel 0: mean 3, var 3.5 (biased)
    nn::BatchNorm1d layer({.num_features = 2});
    layer.forward(x);
    CHECK(layer.running_mean[0] == doctest::Approx(0.3));                      // 0.9 * 0 + 0.1 * 3
    CHECK(layer.running_var[0] == doctest::Approx(0.9 + 0.1 * 3.5 * 4 / 3));  // unbiased: * m / (m - 1)
    CHECK(layer.num_batches_tracked == 1);
    nn::BatchNorm1d cumulative({.num_features = 2, .momentum = std::nullopt});
    cumulative.forward(x);
    cumulative.forward(x);
    CHECK(cumulative.running_mean[1] == doctest::Approx(25.0));  // the mean of the two batches' means
    layer.eval();
    const Tensor y = layer.forward(x);  // eval: the running statistics
    CHECK(y[0] == doctest::Approx((1 - 0.3) / std::sqrt(layer.running_var[0] + 1e-5)).epsilon(1e-5));
    CHECK(layer.num_batches_tracked == 1);
    layer.train();
    CHECK_THROWS_WITH_AS(layer.forward(Tensor({1, 2})),
                         "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True): expected more "
                         "than 1 value per channel when training, got input (1, 2)",
                         HandgradError);
    CHECK_THROWS_AS(layer.forward(Tensor({4, 3})), HandgradError);
    CHECK_THROWS_AS(nn::BatchNorm2d({.num_features = 2}).forward(Tensor({4, 2})), ShapeError);
}

TEST_CASE("Sequential backward chains the layers: a small CNN end to end") {
    manual_seed(3);
    nn::Sequential model;
    model.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 1, .out_channels = 2, .padding = {1, 1}});
    model.add<nn::ReLU>();
    model.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}});
    model.add<nn::Flatten>();
    model.add<nn::Linear>(nn::LinearOptions{.in_features = 2 * 2 * 2, .out_features = 3});
    Tensor x = spread({2, 1, 4, 4}, 90);
    const std::vector<int64_t> target{2, 0};
    nn::CrossEntropyLoss loss;
    loss.forward(model.forward(x), target);
    model.zero_grad();
    const Tensor grad_input = model.backward(loss.backward());
    auto objective = [&] { return double(loss.forward(model.forward(x), target)[0]); };
    std::vector<Tensor> grads;
    for (auto* p : model.parameters()) grads.push_back(p->grad);
    check("Sequential", "input", x, grad_input, objective);
    size_t k = 0;
    for (auto& [name, p] : model.named_parameters()) check("Sequential", name, p->data, grads[k++], objective);
}

TEST_CASE("errors name the layer, the expected shape and what came") {
    nn::Linear layer({.in_features = 4, .out_features = 2});
    try {
        layer.forward(Tensor({3, 5}));
        FAIL("no error");
    } catch (const ShapeError& e) {
        CHECK(std::string(e.what()) == "Linear(in_features=4, out_features=2, bias=True): expected input of shape (*, 4), got (3, 5)");
        CHECK(e.got == Shape{3, 5});
    }
    nn::ReLU relu;
    CHECK_THROWS_WITH_AS(relu.backward(Tensor({1})), "ReLU(): backward called before forward (nothing saved for backward)",
                         HandgradError);
}

TEST_CASE("every backward refuses a grad_output that is not the forward output's shape") {
    manual_seed(4);
    struct Case {
        std::string name;
        std::unique_ptr<nn::Module> layer;
        Shape x;
    };
    std::vector<Case> cases;
    cases.push_back({"Linear", std::make_unique<nn::Linear>(nn::LinearOptions{.in_features = 5, .out_features = 3}), {2, 5}});
    cases.push_back({"Conv2d", std::make_unique<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 2, .out_channels = 3}), {2, 2, 5, 5}});
    cases.push_back({"MaxPool2d", std::make_unique<nn::MaxPool2d>(), {2, 2, 4, 4}});
    cases.push_back({"AvgPool2d", std::make_unique<nn::AvgPool2d>(), {2, 2, 4, 4}});
    cases.push_back({"Flatten", std::make_unique<nn::Flatten>(), {2, 3, 2, 2}});
    cases.push_back({"ReLU", std::make_unique<nn::ReLU>(), {3, 4}});
    cases.push_back({"LeakyReLU", std::make_unique<nn::LeakyReLU>(), {3, 4}});
    cases.push_back({"Sigmoid", std::make_unique<nn::Sigmoid>(), {3, 4}});
    cases.push_back({"Tanh", std::make_unique<nn::Tanh>(), {3, 4}});
    cases.push_back({"Dropout", std::make_unique<nn::Dropout>(0.5f), {3, 4}});
    cases.push_back({"ELU", std::make_unique<nn::ELU>(), {3, 4}});
    cases.push_back({"Softmax", std::make_unique<nn::Softmax>(), {3, 4}});
    cases.push_back({"LogSoftmax", std::make_unique<nn::LogSoftmax>(1), {3, 4}});
    cases.push_back({"BatchNorm1d", std::make_unique<nn::BatchNorm1d>(nn::BatchNormOptions{.num_features = 4}), {3, 4}});
    cases.push_back({"BatchNorm2d", std::make_unique<nn::BatchNorm2d>(nn::BatchNormOptions{.num_features = 2}), {2, 2, 3, 3}});
    for (auto& c : cases) {
        for (bool training : {true, false}) {
            CAPTURE(c.name);
            CAPTURE(training);
            c.layer->train(training);
            const Tensor y = c.layer->forward(spread(c.x, 7));
            Shape bigger = y.shape, transposed = y.shape;
            bigger[0] += 1;  // more rows: the loops would read past grad_output's end
            std::reverse(transposed.begin(), transposed.end());  // same size, another shape
            for (const Shape& wrong : {bigger, transposed, Shape{}}) {
                if (wrong == y.shape) continue;
                for (bool input_grad : {true, false}) {
                    try {
                        c.layer->backward(random_normal(wrong, 8), input_grad);
                        FAIL_CHECK("no error for grad_output " << fmt_shape(wrong));
                    } catch (const ShapeError& e) {
                        CHECK(std::string(e.what()) == c.layer->repr() + ": expected grad_output of shape " +
                                                           fmt_shape(y.shape) + " (the forward output's), got " +
                                                           fmt_shape(wrong));
                    }
                }
            }
            CHECK(c.layer->backward(random_normal(y.shape, 9)).shape == Shape(c.x));  // the right shape still works
        }
    }
}

TEST_CASE("the functional backwards check grad_output themselves") {
    const Tensor x = spread({4, 3}, 11), w = spread({2, 3}, 12);
    const auto [y, cache] = functional::linear_forward(x, w, nullptr);
    CHECK_THROWS_WITH_AS(functional::linear_backward(Tensor({4, 3}), cache),
                         "linear_backward: expected grad_output of shape (4, 2) (the forward output's), got (4, 3)",
                         ShapeError);
    const auto [pooled, pool_cache] = functional::max_pool2d_forward(spread({1, 1, 4, 4}, 13), {2, 2}, {2, 2});
    CHECK_THROWS_AS(functional::max_pool2d_backward(Tensor({1, 1, 3, 3}), pool_cache), ShapeError);
    const auto [r, relu_cache] = functional::relu_forward(x);
    CHECK_THROWS_AS(functional::relu_backward(Tensor({5, 3}), relu_cache), ShapeError);
}

TEST_CASE("accumulating a gradient of another shape than the parameter's is refused") {
    Parameter p{.data = Tensor({2, 3})};
    p.accumulate_grad(Tensor({2, 3}, 1.0f));
    p.accumulate_grad(Tensor({2, 3}, 2.0f));
    CHECK(p.grad.data == Tensor::Storage(6, 3.0f));
    CHECK_THROWS_WITH_AS(p.accumulate_grad(Tensor({3, 2}), "Linear(...)", "grad_weight"),
                         "Linear(...): expected grad_weight of shape (2, 3) (the parameter's), got (3, 2)", ShapeError);
    CHECK_THROWS_AS(p.accumulate_grad(Tensor({7})), ShapeError);
    Parameter fresh{.data = Tensor({4})};
    CHECK_THROWS_AS(fresh.accumulate_grad(Tensor({5})), ShapeError);  // also the first gradient
    CHECK(fresh.grad.data.empty());
}

TEST_CASE("a cache owns what it reads: backward after the weight is gone or replaced") {
    const Tensor x = spread({3, 4}, 14), G = random_normal({3, 2}, 15);
    functional::LinearCache cache;
    Tensor expected({3, 4});
    {
        auto w = std::make_unique<Tensor>(spread({2, 4}, 16));
        cache = functional::linear_forward(x, *w, nullptr).second;
        as_matrix(expected, 3, 4) = as_matrix(G, 3, 2) * as_matrix(*w, 2, 4);
        *w = Tensor({2, 4}, 100.0f);  // replaced ...
    }  // ... then freed
    const Tensor got = functional::linear_backward(G, cache).grad_input;
    for (int64_t i = 0; i < expected.numel(); ++i) CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-5));

    nn::Conv2d conv({.in_channels = 1, .out_channels = 2, .kernel_size = {2, 2}});
    const Tensor image = spread({1, 1, 3, 3}, 17);
    const Tensor out = conv.forward(image);
    const Tensor before = conv.backward(random_normal(out.shape, 18));
    conv.forward(image);
    conv.weight.data = Tensor({2, 1, 2, 2}, 100.0f);  // an update between forward and backward ...
    CHECK(conv.backward(random_normal(out.shape, 18)).data == before.data);  // ... does not reach the cache
    conv.forward(image);
    conv.weight.data = Tensor({5});  // a weight of another shape: its gradient cannot be added to it
    CHECK_THROWS_AS(conv.backward(random_normal(out.shape, 18)), ShapeError);
}
