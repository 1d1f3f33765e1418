// Every layer's backward against central finite differences, over every element of small inputs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "gradcheck.hpp"

using namespace handgrad;
using gradcheck::check;
using gradcheck::dot;
using gradcheck::random_normal;
using gradcheck::spread;

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

}  // namespace

TEST_CASE("Linear: grad_input = G @ weight, grad_weight = G.T @ x, grad_bias = G.sum(0)") {
    manual_seed(0);
    for (bool bias : {true, false}) {
        nn::Linear layer({5, 4, bias});
        check_layer(layer.repr(), layer, spread({3, 5}, 1));
    }
}

TEST_CASE("Conv2d over kernel, stride and padding") {
    struct Case {
        nn::Conv2dOptions options;
        Shape x;
    };
    const std::vector<Case> cases = {
        {{2, 3, {3, 3}, {1, 1}, {1, 1}}, {2, 2, 5, 5}},
        {{1, 2, {3, 3}, {2, 2}, {0, 0}}, {2, 1, 7, 6}},
        {{2, 2, {2, 3}, {2, 1}, {1, 0}}, {1, 2, 5, 6}},
        {{3, 2, {1, 1}, {1, 1}, {0, 0}, false}, {2, 3, 3, 3}},
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
        {{{2, 2}}, {2, 2, 4, 4}},
        {{{3, 3}, nn::Pair{2, 2}, {1, 1}}, {1, 2, 5, 5}},  // overlapping windows, padding
        {{{2, 2}}, {1, 1, 5, 5}},                          // a row and column no window covers
        {{{2, 3}, nn::Pair{1, 2}}, {1, 2, 4, 7}},
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
        {{{2, 2}}, {2, 2, 4, 4}},
        {{{3, 3}, nn::Pair{2, 2}, {1, 1}}, {1, 2, 5, 5}},
        {{{2, 3}, nn::Pair{1, 2}}, {1, 2, 4, 7}},
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

TEST_CASE("CrossEntropyLoss: dL/dlogits = (softmax - onehot) / N") {
    Tensor logits = spread({4, 5}, 70, 10.0);
    const std::vector<int64_t> target{0, 3, 4, 1};
    nn::CrossEntropyLoss loss;
    loss.forward(logits, target);
    const Tensor grad = loss.backward();
    check("CrossEntropyLoss", "input", logits, grad, [&] { return double(loss.forward(logits, target)); });
    // logsumexp keeps huge logits finite
    Tensor big({1, 3}, std::vector<float>{1000.0f, 0.0f, -1000.0f});
    CHECK(loss.forward(big, {0}) == doctest::Approx(0.0).epsilon(1e-6));
    CHECK_THROWS_AS(loss.forward(big, {3}), HandgradError);
}

TEST_CASE("MSELoss: dL/dinput = 2 (input - target) / numel") {
    Tensor input = spread({3, 4}, 80), target = random_normal({3, 4}, 81);
    for (auto reduction : {functional::Reduction::mean, functional::Reduction::sum}) {
        nn::MSELoss loss(reduction);
        loss.forward(input, target);
        const Tensor grad = loss.backward();
        check("MSELoss", "input", input, grad, [&] { return double(loss.forward(input, target)); });
    }
}

TEST_CASE("Sequential backward chains the layers: a small CNN end to end") {
    manual_seed(3);
    nn::Sequential model;
    model.add<nn::Conv2d>(nn::Conv2dOptions{1, 2, {3, 3}, {1, 1}, {1, 1}});
    model.add<nn::ReLU>();
    model.add<nn::MaxPool2d>(nn::Pool2dOptions{{2, 2}});
    model.add<nn::Flatten>();
    model.add<nn::Linear>(nn::LinearOptions{2 * 2 * 2, 3});
    Tensor x = spread({2, 1, 4, 4}, 90);
    const std::vector<int64_t> target{2, 0};
    nn::CrossEntropyLoss loss;
    loss.forward(model.forward(x), target);
    model.zero_grad();
    const Tensor grad_input = model.backward(loss.backward());
    auto objective = [&] { return double(loss.forward(model.forward(x), target)); };
    std::vector<Tensor> grads;
    for (auto* p : model.parameters()) grads.push_back(p->grad);
    check("Sequential", "input", x, grad_input, objective);
    size_t k = 0;
    for (auto& [name, p] : model.named_parameters()) check("Sequential", name, p->data, grads[k++], objective);
}

TEST_CASE("errors name the layer, the expected shape and what came") {
    nn::Linear layer({4, 2});
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
