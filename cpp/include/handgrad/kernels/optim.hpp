// SGD and Adam updates fused into one pass over each parameter: the weight decay, the moment
// buffers and the step per element, with no temporary tensors (the references in optim.hpp copy
// the gradient and the buffer). The same float32 operations in the same order, so tested equal to
// the references bit for bit.
#pragma once

#include "handgrad/kernels/parallel.hpp"

#include <cmath>

namespace handgrad::kernels {

struct SGDStep {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first;  // the buffer's first step: buf = d_p
};

// d = g + weight_decay * p; buf = first ? d : momentum * buf + (1 - dampening) * d;
// d = nesterov ? d + momentum * buf : buf (momentum != 0); p -= lr * d, over elements [begin, end).
// The pointers and options are parameters, not a lambda's captures: the compiler then knows no store
// to p changes them, hoists the tests out of the loop and vectorises it.
inline void sgd_update_range(float* p, const float* g, float* buf, int64_t begin, int64_t end, SGDStep s) {
    const float one_minus_dampening = 1 - s.dampening;
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
        float d = g[i];
        if (s.weight_decay != 0) d += s.weight_decay * p[i];
        if (s.momentum != 0) {
            float b = s.first ? d : buf[i] * s.momentum;
            if (!s.first) b += one_minus_dampening * d;
            buf[i] = b;
            if (s.nesterov) d += s.momentum * b;
            else d = b;
        }
        p[i] -= s.lr * d;
    }
}

// sgd_update_range over all n elements, in chunks on the threads. buf may be null when momentum == 0.
inline void sgd_update(float* p, const float* g, float* buf, int64_t n, SGDStep s) {
    for_chunks(n, chunk_count(n, 1), [=](int, int64_t begin, int64_t end) { sgd_update_range(p, g, buf, begin, end, s); });
}

struct AdamStep {
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float step_size, sqrt_bias_correction2, eps;
    float weight_decay;  // L2, added to the gradient
    float shrink;        // decoupled decay (AdamW): p *= shrink first; 1 otherwise
};

// (p *= shrink); g' = g + weight_decay * p; m = beta1 m + (1 - beta1) g'; v = beta2 v + (1 - beta2) g'^2;
// p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), over elements [begin, end) (parameters,
// not captures, as in sgd_update_range).
inline void adam_update_range(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end, AdamStep s) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
        if (s.shrink != 1) p[i] *= s.shrink;
        float gi = g[i];
        if (s.weight_decay != 0) gi += s.weight_decay * p[i];
        m[i] = m[i] * s.beta1 + s.one_minus_beta1 * gi;
        v[i] = v[i] * s.beta2 + s.one_minus_beta2 * gi * gi;
        const float denom = std::sqrt(v[i]) / s.sqrt_bias_correction2 + s.eps;
        p[i] -= s.step_size * (m[i] / denom);
    }
}

inline void adam_update(float* p, const float* g, float* m, float* v, int64_t n, AdamStep s) {
    for_chunks(n, chunk_count(n, 4), [=](int, int64_t begin, int64_t end) { adam_update_range(p, g, m, v, begin, end, s); });
}

}  // namespace handgrad::kernels
