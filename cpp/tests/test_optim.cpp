// SGD and Adam against their formulas, one parameter worked by hand (torch.optim's semantics).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "handgrad/optim.hpp"

#include <doctest/doctest.h>

using namespace handgrad;

namespace {
Parameter param(std::vector<float> values) { return Parameter{.data = Tensor({int64_t(values.size())}, values)}; }
}  // namespace

TEST_CASE("SGD: momentum buffer, nesterov and weight decay") {
    // p = 1, g = 0.5 each step, lr 0.1, momentum 0.9, weight_decay 0.1
    Parameter p = param({1.0f});
    optim::SGD opt({&p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1});
    p.grad = Tensor({1}, std::vector<float>{0.5f});
    opt.step();  // d_p = 0.5 + 0.1 = 0.6; buf = 0.6; p = 1 - 0.06 = 0.94
    CHECK(p.data[0] == doctest::Approx(0.94));
    p.grad = Tensor({1}, std::vector<float>{0.5f});
    opt.step();  // d_p = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134
    CHECK(p.data[0] == doctest::Approx(0.8266));

    Parameter q = param({1.0f});
    optim::SGD nesterov({&q}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    q.grad = Tensor({1}, std::vector<float>{1.0f});
    nesterov.step();  // buf = 1; d_p = 1 + 0.9 = 1.9; q = 0.81
    CHECK(q.data[0] == doctest::Approx(0.81));
    CHECK_THROWS_AS(optim::SGD({&q}, {.lr = 0.1, .nesterov = true}), HandgradError);
}

TEST_CASE("Adam: bias-corrected moments, eps outside the square root") {
    Parameter p = param({1.0f, -2.0f});
    optim::Adam opt({&p}, {.lr = 0.01});
    for (int t = 1; t <= 3; ++t) {
        p.grad = Tensor({2}, std::vector<float>{0.3f, -0.1f});
        opt.step();
    }
    // a constant gradient g gives m_hat = g and v_hat = g^2: each step moves lr * g / (|g| + eps')
    CHECK(p.data[0] == doctest::Approx(1.0 - 3 * 0.01).epsilon(1e-5));
    CHECK(p.data[1] == doctest::Approx(-2.0 + 3 * 0.01).epsilon(1e-5));
    CHECK(opt.steps[0] == 3);

    Parameter w = param({1.0f});
    optim::Adam adamw({&w}, {.lr = 0.1, .weight_decay = 0.5, .decoupled_weight_decay = true});
    w.grad = Tensor({1}, std::vector<float>{0.0f});
    adamw.step();  // decoupled: w = 1 * (1 - 0.1 * 0.5), then a zero Adam step
    CHECK(w.data[0] == doctest::Approx(0.95));
}

TEST_CASE("schedulers set the lr once per epoch") {
    Parameter p = param({0.0f});
    optim::SGD opt({&p}, {.lr = 0.1});
    optim::CosineAnnealingLR cosine(opt, 4);
    cosine.step();
    CHECK(opt.lr == doctest::Approx(0.1 * (1 + std::cos(M_PI / 4)) / 2));
    optim::SGD opt2({&p}, {1.0});
    optim::StepLR step(opt2, 2, 0.1);
    step.step();
    CHECK(opt2.lr == doctest::Approx(1.0));
    step.step();
    CHECK(opt2.lr == doctest::Approx(0.1));
}
