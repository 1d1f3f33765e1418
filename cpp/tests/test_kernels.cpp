// Every kernel against its readable reference (functional/ and optim.hpp), on 1 and on 3 threads
// (3 so that chunks differ in size): the pooling, ReLU and optimizer kernels bit for bit, the
// convolution to float32 rounding (its products sum in another order); the fused runs of
// nn::Sequential against the same layers one by one.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "handgrad/kernels/activation.hpp"
#include "handgrad/kernels/conv.hpp"
#include "handgrad/kernels/fused.hpp"
#include "handgrad/kernels/gemm.hpp"
#include "handgrad/kernels/linear.hpp"
#include "handgrad/kernels/pool.hpp"
#include "handgrad/nn.hpp"
#include "handgrad/optim.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <sstream>

using namespace handgrad;
using functional::Pair;

namespace {

Tensor random_tensor(Shape shape, uint64_t seed) {
    Tensor t(std::move(shape));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    for (float& v : t.data) v = normal(rng);
    return t;
}

// max |a - b| <= tol * max(1, max |b|), naming the tensor and the worst element on failure
void check_close(const std::string& what, const Tensor& got, const Tensor& expected, double tol) {
    REQUIRE_MESSAGE(got.shape == expected.shape, what << ": shape " << fmt_shape(got.shape) << ", expected "
                                                      << fmt_shape(expected.shape));
    double scale = 1.0, worst = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
        scale = std::max(scale, static_cast<double>(std::fabs(expected[i])));
        const double e = std::fabs(static_cast<double>(got[i]) - expected[i]);
        if (e > worst) worst = e, at = i;
    }
    CHECK_MESSAGE(worst <= tol * scale, what << ": element " << at << " is " << got[at] << ", expected "
                                             << expected[at] << " (error " << worst << ")");
}

void check_equal(const std::string& what, const Tensor& got, const Tensor& expected) {
    REQUIRE(got.shape == expected.shape);
    for (int64_t i = 0; i < got.numel(); ++i)
        if (got[i] != expected[i]) {
            FAIL_CHECK(what << ": element " << i << " is " << got[i] << ", expected " << expected[i]);
            return;
        }
}

void set_threads(int n) { kernels::set_num_threads(n); }

struct ConvCase {
    Shape x, weight;
    Pair stride, padding;
    bool bias;
};

}  // namespace

TEST_CASE("conv2d kernel equals the reference: output and every gradient") {
    const std::vector<ConvCase> cases = {
        {{2, 1, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, true},
        {{3, 2, 7, 6}, {4, 2, 3, 2}, {2, 1}, {0, 1}, false},
        {{4, 3, 8, 8}, {5, 3, 5, 5}, {1, 1}, {2, 2}, true},
        {{5, 2, 9, 7}, {3, 2, 2, 3}, {3, 2}, {1, 0}, true},    // stride > kernel: skipped pixels
        {{1, 1, 4, 4}, {2, 1, 4, 4}, {1, 1}, {0, 0}, true},    // one output pixel
        {{2, 1, 3, 3}, {2, 1, 3, 3}, {1, 1}, {3, 3}, true},    // padding as large as the kernel
        {{64, 8, 14, 14}, {16, 8, 3, 3}, {1, 1}, {1, 1}, true},  // large enough to be split between threads
        {{0, 2, 5, 5}, {3, 2, 3, 3}, {1, 1}, {0, 0}, true},    // an empty batch
    };
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (size_t c = 0; c < cases.size(); ++c) {
            const ConvCase& k = cases[c];
            CAPTURE(c);
            CAPTURE(threads);
            const Tensor x = random_tensor(k.x, 10 + c), weight = random_tensor(k.weight, 20 + c);
            const Tensor bias = random_tensor({k.weight[0]}, 30 + c);
            const Tensor* b = k.bias ? &bias : nullptr;
            auto [want, want_cache] = functional::conv2d_forward(x, weight, b, k.stride, k.padding);
            auto [got, got_cache] = kernels::conv2d_forward(x, weight, b, k.stride, k.padding);
            check_close("conv2d output", got, want, 1e-5);
            auto [relu_out, _] = kernels::conv2d_forward(x, weight, b, k.stride, k.padding, true);
            check_equal("conv2d fused ReLU", relu_out, functional::relu_forward(got).first);

            const Tensor g = random_tensor(want.shape, 40 + c);
            for (NeedsGrad needs : {NeedsGrad{}, NeedsGrad{.input = false}, NeedsGrad{.weight = false, .bias = false}}) {
                const auto expected = functional::conv2d_backward(g, want_cache, needs);
                const auto actual = kernels::conv2d_backward(g, got_cache, needs);
                check_close("grad_input", actual.grad_input, expected.grad_input, 1e-5);
                check_close("grad_weight", actual.grad_weight, expected.grad_weight, 1e-5);
                check_close("grad_bias", actual.grad_bias, expected.grad_bias, 1e-5);
            }
        }
    }
    set_threads(1);
}

TEST_CASE("linear kernel equals the reference: output and every gradient") {
    struct Case {
        Shape x;
        int64_t out_features;
        bool bias;
    };
    const std::vector<Case> cases = {{{5, 7}, 3, true}, {{2, 3, 4}, 6, false}, {{64, 784}, 250, true},
                                     {{3, 250}, 250, true}, {{0, 4}, 2, true}};
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (size_t c = 0; c < cases.size(); ++c) {
            CAPTURE(c);
            CAPTURE(threads);
            const Case& k = cases[c];
            const Tensor x = random_tensor(k.x, 110 + c), weight = random_tensor({k.out_features, k.x.back()}, 120 + c);
            const Tensor bias = random_tensor({k.out_features}, 130 + c);
            const Tensor* b = k.bias ? &bias : nullptr;
            auto [want, want_cache] = functional::linear_forward(x, weight, b);
            auto [got, got_cache] = kernels::linear_forward(x, weight, b);
            check_close("linear output", got, want, 1e-5);
            const Tensor g = random_tensor(want.shape, 140 + c);
            for (NeedsGrad needs : {NeedsGrad{}, NeedsGrad{.input = false}, NeedsGrad{.weight = false, .bias = false}}) {
                const auto expected = functional::linear_backward(g, want_cache, needs);
                const auto actual = kernels::linear_backward(g, got_cache, needs);
                check_close("grad_input", actual.grad_input, expected.grad_input, 1e-5);
                check_close("grad_weight", actual.grad_weight, expected.grad_weight, 1e-5);
                check_close("grad_bias", actual.grad_bias, expected.grad_bias, 1e-5);
            }
        }
    }
    set_threads(1);
}

TEST_CASE("the thread pool runs every chunk once, also when called again and again") {
    for (int threads : {1, 2, 4}) {
        set_threads(threads);
        for (int round = 0; round < 200; ++round) {
            const int chunks = 1 + round % 7;
            std::vector<std::atomic<int>> runs(chunks);
            kernels::for_chunks(100, chunks, [&](int t, int64_t, int64_t) { runs[t].fetch_add(1); });
            for (int t = 0; t < chunks; ++t) REQUIRE(runs[t].load() == 1);
        }
    }
    set_threads(1);
}

TEST_CASE("unfold and fold kernels equal the reference loops element for element") {
    const Tensor x = random_tensor({3, 6, 5}, 1);
    for (Pair s : {Pair{1, 1}, Pair{2, 3}})
        for (Pair p : {Pair{0, 0}, Pair{1, 2}}) {
            const Pair k{3, 2};
            const int64_t Ho = functional::conv_output_size(6, 3, s[0], p[0]), Wo = functional::conv_output_size(5, 2, s[1], p[1]);
            Tensor want({3 * 6, Ho * Wo}), got({3 * 6, Ho * Wo});
            functional::unfold(x.ptr(), 3, 6, 5, k, s, p, want.ptr());
            kernels::unfold(x.ptr(), 3, 6, 5, k, s, p, got.ptr(), Ho * Wo);
            check_equal("unfold", got, want);
            Tensor back_want({3, 6, 5}), back_got({3, 6, 5});
            functional::fold(want.ptr(), 3, 6, 5, k, s, p, back_want.ptr());
            kernels::fold(want.ptr(), Ho * Wo, 3, 6, 5, k, s, p, back_got.ptr());
            check_equal("fold", back_got, back_want);
        }
}

TEST_CASE("max_pool2d kernel equals the reference: values, argmax and gradient") {
    struct Case {
        Shape x;
        Pair kernel, stride, padding;
    };
    const std::vector<Case> cases = {{{2, 3, 8, 8}, {2, 2}, {2, 2}, {0, 0}}, {{2, 2, 7, 9}, {3, 3}, {2, 2}, {1, 1}},
                                     {{1, 4, 5, 6}, {3, 2}, {1, 2}, {1, 0}}, {{64, 8, 28, 28}, {2, 2}, {2, 2}, {0, 0}},
                                     {{3, 2, 7, 9}, {2, 2}, {2, 2}, {0, 0}}};  // 2x2 with a last row and column left out
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (size_t c = 0; c < cases.size(); ++c) {
            CAPTURE(c);
            const Case& k = cases[c];
            Tensor x = random_tensor(k.x, 50 + c);
            for (int64_t i = 0; i < x.numel(); i += 7) x[i] = x[i + 1 < x.numel() ? i + 1 : i];  // ties: the first wins
            auto [want, want_cache] = functional::max_pool2d_forward(x, k.kernel, k.stride, k.padding);
            auto [got, got_cache] = kernels::max_pool2d_forward(x, k.kernel, k.stride, k.padding);
            check_equal("max_pool2d output", got, want);
            CHECK(got_cache.argmax == want_cache.argmax);
            const Tensor g = random_tensor(want.shape, 60 + c);
            check_equal("max_pool2d grad_input", kernels::max_pool2d_backward(g, got_cache),
                        functional::max_pool2d_backward(g, want_cache));
        }
    }
    set_threads(1);
}

TEST_CASE("relu kernels equal the reference, zero included") {
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (int64_t n : {int64_t{7}, int64_t{100003}}) {
            Tensor x = random_tensor({n}, 70);
            x[0] = 0.0f, x[1] = -0.0f;
            check_equal("relu_forward", kernels::relu_forward(x).first, functional::relu_forward(x).first);
            const Tensor y = functional::relu_forward(x).first, g = random_tensor({n}, 71);
            check_equal("relu_backward", kernels::relu_backward(g, y), functional::relu_backward(g, y));
        }
    }
    set_threads(1);
}

namespace {
// Nine steps of the optimizer make() builds, on the kernel and on the reference: the same weights
// (the eighth step flushes subnormal state; the gradients of the first 100 elements are tiny, so
// their state sinks into subnormals).
template <class Make>
void check_optimizer(const std::string& what, Make make) {
    for (int threads : {1, 3}) {
        set_threads(threads);
        Parameter kernel{.data = random_tensor({40000}, 80)}, reference = kernel;
        auto a = make(&kernel);
        auto b = make(&reference);
        for (int step = 0; step < 9; ++step) {
            kernel.grad = reference.grad = random_tensor({40000}, 90 + step);
            for (int64_t i = 0; i < 100; ++i) kernel.grad[i] = reference.grad[i] *= 1e-38f;
            a->step();
            kernels::Reference use_reference;
            b->step();
        }
        check_equal(what, kernel.data, reference.data);
    }
    set_threads(1);
}
}  // namespace

TEST_CASE("fused SGD and Adam updates equal the references bit for bit") {
    for (auto o : {optim::SGDOptions{.lr = 0.1}, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3},
                   optim::SGDOptions{.lr = 0.05, .momentum = 0.8, .dampening = 0.3},
                   optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true},
                   optim::SGDOptions{.lr = 0.05, .momentum = 0.5, .maximize = true}}) {
        std::ostringstream what;
        what << "SGD momentum " << o.momentum << " dampening " << o.dampening << " weight_decay " << o.weight_decay
             << " nesterov " << o.nesterov;
        check_optimizer(what.str(), [&](Parameter* p) { return std::make_unique<optim::SGD>(std::vector{p}, o); });
    }
    for (auto o : {optim::AdamOptions{.lr = 0.01}, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1},
                   optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true},
                   optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true, .maximize = true}}) {
        std::ostringstream what;
        what << "Adam weight_decay " << o.weight_decay << " decoupled " << o.decoupled_weight_decay;
        check_optimizer(what.str(), [&](Parameter* p) { return std::make_unique<optim::Adam>(std::vector{p}, o); });
    }
}

TEST_CASE("a model trains to the same weights on the kernels as on the references") {
    // tiny-cnn-like: every kernel (conv, ReLU, max-pool, SGD) on one path, the references on the other
    auto build = [] {
        manual_seed(5);
        nn::Sequential m;
        m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 1, .out_channels = 4, .kernel_size = {3, 3}, .padding = {1, 1}});
        m.add<nn::ReLU>();
        m.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {2, 2}});
        m.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 4, .out_channels = 6, .kernel_size = {3, 3}});
        m.add<nn::ReLU>();
        m.add<nn::Flatten>();
        m.add<nn::Linear>(nn::LinearOptions{.in_features = 6 * 3 * 3, .out_features = 5});
        return m;
    };
    set_threads(3);
    nn::Sequential fast = build(), slow = build();
    optim::SGD fast_opt(fast.parameters(), {.lr = 0.05, .momentum = 0.9}), slow_opt(slow.parameters(), {.lr = 0.05, .momentum = 0.9});
    nn::CrossEntropyLoss fast_loss, slow_loss;
    const std::vector<int64_t> y = {0, 1, 2, 3, 4, 0, 1, 2};
    for (int step = 0; step < 3; ++step) {
        const Tensor x = random_tensor({8, 1, 10, 10}, 100 + step);
        fast_loss.forward(fast.forward(x), y);
        fast_opt.zero_grad();
        fast.backward(fast_loss.backward(), false);
        fast_opt.step();
        kernels::Reference use_reference;
        slow_loss.forward(slow.forward(x), y);
        slow_opt.zero_grad();
        slow.backward(slow_loss.backward(), false);
        slow_opt.step();
    }
    auto a = fast.named_parameters(), b = slow.named_parameters();
    for (size_t i = 0; i < a.size(); ++i) check_close(a[i].first, a[i].second->data, b[i].second->data, 1e-5);
    set_threads(1);
}

TEST_CASE("gemm equals Eigen's product for every transpose, inside wider matrices, set or added") {
    const int64_t m = 5, n = 7, k = 4, pad = 3;  // every matrix `pad` columns wider than what it multiplies
    for (bool ta : {false, true})
        for (bool tb : {false, true})
            for (bool accumulate : {false, true}) {
                CAPTURE(ta);
                CAPTURE(tb);
                CAPTURE(accumulate);
                const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                const Tensor a = random_tensor({ar, ac + pad}, 1), b = random_tensor({br, bc + pad}, 2);
                Tensor c = random_tensor({m, n + pad}, 3);
                Matrix want = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>(c.ptr(), m, n, Eigen::OuterStride<>(n + pad));
                const Matrix A = as_matrix(a, ar, ac + pad).leftCols(ac), B = as_matrix(b, br, bc + pad).leftCols(bc);
                const Matrix product = (ta ? Matrix(A.transpose()) : A) * (tb ? Matrix(B.transpose()) : B);
                want = accumulate ? Matrix(want + product) : product;
                const Tensor untouched = c;
                kernels::gemm({a.ptr(), ar, ac, ac + pad, ta}, {b.ptr(), br, bc, bc + pad, tb}, c.ptr(), n + pad, accumulate);
                for (int64_t i = 0; i < m; ++i)
                    for (int64_t j = 0; j < n + pad; ++j) {
                        const float expected = j < n ? want(i, j) : untouched[i * (n + pad) + j];  // the padding kept
                        CHECK(std::fabs(c[i * (n + pad) + j] - expected) <= 1e-5f * std::max(1.0f, std::fabs(expected)));
                    }
            }
}

namespace {
// Forward and backward through every layer of `model` one by one (each layer's own kernel), then
// through the model (its fused runs): the same output, dL/dx and parameter gradients.
void check_fused_runs(nn::Sequential& model, const Tensor& x, size_t expected_runs) {
    std::vector<Tensor> alone;
    Tensor h = x;
    for (auto& layer : model.layers) h = layer->forward(h);
    const Tensor g = random_tensor(h.shape, 7);
    model.zero_grad();
    Tensor grad = g;
    for (size_t i = model.size(); i-- > 0;) grad = model[i].backward(grad);
    for (auto* p : model.parameters()) alone.push_back(p->grad);
    model.zero_grad();
    const Tensor out = model.forward(x);
    CHECK(model.runs().size() == expected_runs);
    check_close("output", out, h, 1e-5);
    check_close("grad_input", model.backward(g), grad, 1e-5);
    auto params = model.named_parameters();
    for (size_t i = 0; i < params.size(); ++i) check_close(params[i].first, params[i].second->grad, alone[i], 1e-5);
}
}  // namespace

TEST_CASE("fused Conv2d -> ReLU -> MaxPool2d equals the three layers one by one") {
    struct Case {
        Shape x;
        nn::Conv2dOptions conv;
    };
    const std::vector<Case> cases = {
        {{4, 1, 12, 12}, {.in_channels = 1, .out_channels = 8, .kernel_size = {3, 3}, .padding = {1, 1}}},  // direct
        {{3, 1, 11, 9}, {.in_channels = 1, .out_channels = 6, .kernel_size = {5, 5}, .padding = {2, 2}, .bias = false}},
        {{2, 1, 9, 10}, {.in_channels = 1, .out_channels = 3, .kernel_size = {2, 3}}},  // direct, no padding, odd sizes
        {{3, 1, 13, 13}, {.in_channels = 1, .out_channels = 4, .kernel_size = {3, 3}, .stride = {2, 2}}},  // columns
        {{5, 3, 9, 8}, {.in_channels = 3, .out_channels = 5, .kernel_size = {3, 3}, .padding = {1, 0}}},
        {{64, 6, 14, 14}, {.in_channels = 6, .out_channels = 16, .kernel_size = {5, 5}}},  // split between threads
        {{64, 1, 28, 28}, {.in_channels = 1, .out_channels = 6, .kernel_size = {5, 5}, .padding = {2, 2}}},
        // direct, as the first layers of tiny-cnn (batch 1) and LeNet-5; odd padded widths, both
        // phases of a column ending a row; tap counts of one pass (1, 4, 8), two uneven ones (9, 15)
        // and seven (49)
        {{1, 1, 28, 28}, {.in_channels = 1, .out_channels = 8, .kernel_size = {3, 3}, .padding = {1, 1}}},
        {{1, 1, 28, 28}, {.in_channels = 1, .out_channels = 6, .kernel_size = {5, 5}, .padding = {2, 2}}},
        {{2, 1, 7, 15}, {.in_channels = 1, .out_channels = 3, .kernel_size = {3, 3}, .padding = {1, 1}}},
        {{3, 1, 6, 5}, {.in_channels = 1, .out_channels = 2, .kernel_size = {1, 1}}},
        {{2, 1, 10, 11}, {.in_channels = 1, .out_channels = 4, .kernel_size = {2, 2}, .padding = {1, 0}}},
        {{2, 1, 9, 12}, {.in_channels = 1, .out_channels = 3, .kernel_size = {2, 4}, .padding = {0, 2}}},
        {{2, 1, 11, 13}, {.in_channels = 1, .out_channels = 2, .kernel_size = {3, 5}, .padding = {1, 2}}},
        {{1, 1, 16, 17}, {.in_channels = 1, .out_channels = 2, .kernel_size = {7, 7}, .padding = {3, 3}}},
    };
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (size_t c = 0; c < cases.size(); ++c) {
            CAPTURE(c);
            CAPTURE(threads);
            manual_seed(c);
            nn::Sequential model;
            model.add<nn::Conv2d>(cases[c].conv).add<nn::ReLU>().add<nn::MaxPool2d>().add<nn::Flatten>();
            Tensor x = random_tensor(cases[c].x, 200 + c);
            check_fused_runs(model, x, 2);
            check_fused_runs(model, random_tensor(cases[c].x, 300 + c), 2);  // a second step, on the reused columns
        }
    }
    set_threads(1);
}

TEST_CASE("fused Conv2d -> ReLU -> MaxPool2d takes the first of tied maxima, as the layers") {
    // small integers in x and the weights: the sums are exact in any order, so windows tie (at 0,
    // after the ReLU, and above), and the gradients show which place won
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (Pair k : {Pair{3, 3}, Pair{5, 5}}) {
            CAPTURE(k[0]);
            manual_seed(11);
            nn::Sequential model;
            model.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 1, .out_channels = 4, .kernel_size = k,
                                                    .padding = {k[0] / 2, k[1] / 2}})
                .add<nn::ReLU>()
                .add<nn::MaxPool2d>()
                .add<nn::Flatten>();
            for (auto* p : model.parameters())
                for (float& v : p->data.data) v = std::round(4.0f * v);
            Tensor x = random_tensor({5, 1, 13, 15}, 12);
            for (float& v : x.data) v = std::round(v);
            check_fused_runs(model, x, 2);
        }
    }
    set_threads(1);
}

TEST_CASE("fused Linear -> ReLU equals the two layers one by one") {
    for (int threads : {1, 3}) {
        set_threads(threads);
        for (bool bias : {true, false}) {
            manual_seed(3);
            nn::Sequential model;
            model.add<nn::Linear>(nn::LinearOptions{.in_features = 40, .out_features = 30, .bias = bias}).add<nn::ReLU>();
            model.add<nn::Linear>(nn::LinearOptions{.in_features = 30, .out_features = 20}).add<nn::ReLU>();
            model.add<nn::Linear>(nn::LinearOptions{.in_features = 20, .out_features = 5});
            check_fused_runs(model, random_tensor({130, 40}, 9), 3);
        }
    }
    set_threads(1);
}

TEST_CASE("a run is fused only where its kernel computes it; its layers still work alone") {
    manual_seed(1);
    nn::Sequential model;
    model.add<nn::Conv2d>(nn::Conv2dOptions{.in_channels = 1, .out_channels = 2, .kernel_size = {3, 3}}).add<nn::ReLU>();
    model.add<nn::MaxPool2d>(nn::Pool2dOptions{.kernel_size = {3, 3}});  // not 2x2: the layers one by one
    model.add<nn::Flatten>().add<nn::Linear>(nn::LinearOptions{.in_features = 2, .out_features = 3}).add<nn::Sigmoid>();
    check_fused_runs(model, random_tensor({2, 1, 5, 5}, 4), 6);
    nn::Sequential fused;
    fused.add<nn::Linear>(nn::LinearOptions{.in_features = 4, .out_features = 3}).add<nn::ReLU>();
    fused.forward(random_tensor({2, 4}, 5));
    CHECK(fused.runs().size() == 1);
    // the fused op ran in the layers' place: a backward of one of them alone has nothing to read
    CHECK_THROWS_WITH_AS(fused[1].backward(random_tensor({2, 3}, 6)), doctest::Contains("backward called before forward"),
                         HandgradError);
    const Tensor y = fused[0].forward(random_tensor({2, 4}, 5));  // alone again, it works
    CHECK(fused[0].backward(random_tensor(y.shape, 6)).shape == Shape{2, 4});
    kernels::Reference references;  // no fused op on the references
    fused.forward(random_tensor({2, 4}, 5));
    CHECK(fused.runs().size() == 2);
}

TEST_CASE("under NoGradGuard a forward gives the same outputs and keeps nothing for backward") {
    for (int threads : {1, 3}) {
        set_threads(threads);
        manual_seed(2);
        nn::Sequential model;  // a fused Linear -> ReLU, then a Linear alone
        model.add<nn::Linear>(nn::LinearOptions{.in_features = 40, .out_features = 30}).add<nn::ReLU>();
        model.add<nn::Linear>(nn::LinearOptions{.in_features = 30, .out_features = 5});
        const Tensor x = random_tensor({130, 40}, 7);
        const Tensor with_grad = model.forward(x);
        Tensor without;
        {
            const NoGradGuard no_grad;
            CHECK_FALSE(is_grad_enabled());
            {
                const NoGradGuard nested;
            }
            CHECK_FALSE(is_grad_enabled());  // a nested guard restores what it found
            without = model.forward(x);
        }
        CHECK(is_grad_enabled());
        CHECK(without.shape == with_grad.shape);
        CHECK(without.data == with_grad.data);  // the same kernels, bit for bit
        CHECK_THROWS_WITH_AS(model.backward(random_tensor(with_grad.shape, 8)),
                             doctest::Contains("backward called before forward"), HandgradError);
        CHECK_THROWS_WITH_AS(model.backward_run({0, 2}, random_tensor({130, 30}, 8), true),  // the fused run
                             doctest::Contains("the last forward ran under NoGradGuard"), HandgradError);
        model.forward(x);  // with grad again: backward works
        CHECK(model.backward(random_tensor(with_grad.shape, 8)).shape == x.shape);
    }
    set_threads(1);
}

TEST_CASE("Tensor::empty has the shape asked for; a filled tensor is still filled") {
    const Tensor e = Tensor::empty({3, 4});
    CHECK(e.shape == Shape{3, 4});
    CHECK(e.numel() == 12);
    const Tensor z({1000});
    CHECK(std::all_of(z.data.begin(), z.data.end(), [](float v) { return v == 0.0f; }));
    const Tensor t({5}, 2.5f);
    CHECK(t.data == Tensor::Storage(5, 2.5f));
}
