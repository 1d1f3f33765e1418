// SGD, Adam, RMSprop and Adagrad against their formulas, one parameter worked by hand (torch.optim's semantics).
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

TEST_CASE("RMSprop: a running mean square, centered, with momentum") {
    // p = 1, g = 0.5, lr 0.1, alpha 0.9: v = 0.1 * 0.25 = 0.025; p = 1 - 0.1 * 0.5 / (sqrt(0.025) + eps)
    Parameter p = param({1.0f});
    optim::RMSprop opt({&p}, {.lr = 0.1, .alpha = 0.9});
    p.grad = Tensor({1}, std::vector<float>{0.5f});
    opt.step();
    CHECK(p.data[0] == doctest::Approx(1.0 - 0.05 / std::sqrt(0.025)).epsilon(1e-6));
    // centered: m = 0.1 * 0.5 = 0.05, avg = sqrt(0.025 - 0.0025); momentum 0.5: buf = g / avg, then 0.5 buf + g / avg'
    Parameter q = param({1.0f});
    optim::RMSprop centered({&q}, {.lr = 0.1, .alpha = 0.9, .momentum = 0.5, .centered = true});
    q.grad = Tensor({1}, std::vector<float>{0.5f});
    centered.step();
    const double avg1 = std::sqrt(0.025 - 0.0025), buf1 = 0.5 / avg1;
    CHECK(q.data[0] == doctest::Approx(1.0 - 0.1 * buf1).epsilon(1e-6));
    q.grad = Tensor({1}, std::vector<float>{0.5f});
    centered.step();  // v = 0.9 * 0.025 + 0.025 = 0.0475, m = 0.9 * 0.05 + 0.05 = 0.095
    const double avg2 = std::sqrt(0.0475 - 0.095 * 0.095), buf2 = 0.5 * buf1 + 0.5 / avg2;
    CHECK(q.data[0] == doctest::Approx(1.0 - 0.1 * buf1 - 0.1 * buf2).epsilon(1e-5));
    CHECK_THROWS_AS(optim::RMSprop({&q}, {.lr = 0.1, .alpha = -0.5}), HandgradError);
}

TEST_CASE("Adagrad: steps shrink with the sum of squared gradients, lr_decay per step") {
    Parameter p = param({1.0f});
    optim::Adagrad opt({&p}, {.lr = 0.1, .lr_decay = 0.5});
    for (int t = 1; t <= 2; ++t) {
        p.grad = Tensor({1}, std::vector<float>{0.5f});
        opt.step();
    }
    // t = 1: s = 0.25, p -= 0.1 * 0.5 / 0.5;  t = 2: clr = 0.1 / 1.5, s = 0.5, p -= clr * 0.5 / sqrt(0.5)
    CHECK(p.data[0] == doctest::Approx(1.0 - 0.1 - 0.1 / 1.5 * 0.5 / std::sqrt(0.5)).epsilon(1e-6));
    CHECK(opt.steps[0] == 2);
}

TEST_CASE("MultiStepLR and ReduceLROnPlateau") {
    Parameter p = param({0.0f});
    optim::SGD opt({&p}, {.lr = 1.0});
    optim::MultiStepLR multistep(opt, {1, 3, 3}, 0.1);
    CHECK(opt.lr == doctest::Approx(1.0));
    multistep.step();  // epoch 1: one milestone passed
    CHECK(opt.lr == doctest::Approx(0.1));
    multistep.step(), multistep.step();  // epoch 3, listed twice: two more
    CHECK(opt.lr == doctest::Approx(0.001));

    optim::SGD opt2({&p}, {.lr = 1.0});
    optim::ReduceLROnPlateau plateau(opt2, {.factor = 0.5, .patience = 1});
    for (double loss : {1.0, 0.9, 0.95, 0.95}) plateau.step(loss);  // two epochs without a lower loss
    CHECK(opt2.lr == doctest::Approx(0.5));
    plateau.step(0.95);  // the count starts again after a reduction
    CHECK(opt2.lr == doctest::Approx(0.5));
    CHECK_THROWS_AS(optim::ReduceLROnPlateau(opt2, {.factor = 1.0}), HandgradError);
}
