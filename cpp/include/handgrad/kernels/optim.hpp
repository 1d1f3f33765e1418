// SGD and Adam updates fused into one pass over each parameter: the weight decay, the moment
// buffers and the step per element, with no temporary tensors (the references in optim.hpp copy
// the gradient and the buffer). The same float32 operations in the same order, so tested equal to
// the references bit for bit.
#pragma once

#include "handgrad/kernels/parallel.hpp"

#include <cmath>
#include <limits>

namespace handgrad::kernels {

// The Python's flush of optimizer state (optim/functional.py) as a threshold, taken once per step:
// FLT_MIN on a flushing step, else 0 (|v| < 0 never holds: nothing is flushed).
inline float flush_threshold(bool flush) { return flush ? std::numeric_limits<float>::min() : 0.0f; }

// 0 where |v| < tiny (a subnormal v, -0 included, on a flushing step), else v. A select on a value
// fixed for the whole loop, not a branch on an option: the loops vectorise.
inline float flushed(float v, float tiny) { return std::fabs(v) < tiny ? 0.0f : v; }

struct SGDStep {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first;  // the buffer's first step: buf = d_p
    bool maximize = false;
    bool flush = false;  // set the buffer's subnormal entries to zero (not on its first step)
};

// d = g (-g with maximize) + weight_decay * p; buf = first ? d : momentum * buf + (1 - dampening) * d;
// d = nesterov ? d + momentum * buf : buf (momentum != 0); p -= lr * d, over elements [begin, end).
// The pointers and options are parameters, not a lambda's captures: the compiler then knows no store
// to p changes them, hoists the tests out of the loop and vectorises it.
// maximize and flush as a sign and a threshold, so that the loop body has no option left to branch on.
inline void sgd_update_range(float* p, const float* g, float* buf, int64_t begin, int64_t end, SGDStep s) {
    const float one_minus_dampening = 1 - s.dampening;
    const float sign = s.maximize ? -1.0f : 1.0f;  // -g exactly
    const float tiny = flush_threshold(s.flush);
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
        float d = sign * g[i];
        if (s.weight_decay != 0) d += s.weight_decay * p[i];
        if (s.momentum != 0) {
            float b = s.first ? d : buf[i] * s.momentum;
            if (!s.first) {
                b += one_minus_dampening * d;
                b = flushed(b, tiny);
            }
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
    bool maximize = false;
    bool flush = false;  // set the moments' subnormal entries to zero
};

// (p *= shrink); g' = g (-g with maximize) + weight_decay * p; m = beta1 m + (1 - beta1) g';
// v = beta2 v + (1 - beta2) g'^2; with amsgrad (v_max not null) v = v_max = max(v_max, v), NaN
// winning as np.maximum; p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), over elements
// [begin, end) (parameters, not captures, as in sgd_update_range).
inline void adam_update_range(float* p, const float* g, float* m, float* v, float* v_max, int64_t begin, int64_t end,
                              AdamStep s) {
    const float sign = s.maximize ? -1.0f : 1.0f;                       // as in sgd_update_range
    const float tiny = flush_threshold(s.flush);
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
        if (s.shrink != 1) p[i] *= s.shrink;
        float gi = sign * g[i];
        if (s.weight_decay != 0) gi += s.weight_decay * p[i];
        float mi = m[i] * s.beta1 + s.one_minus_beta1 * gi;
        m[i] = mi = flushed(mi, tiny);
        float vi = v[i] * s.beta2 + s.one_minus_beta2 * gi * gi;
        v[i] = vi = flushed(vi, tiny);
        if (v_max) vi = v_max[i] = vi > v_max[i] || vi != vi ? vi : v_max[i];
        const float denom = std::sqrt(vi) / s.sqrt_bias_correction2 + s.eps;
        p[i] -= s.step_size * (mi / denom);
    }
}

// v_max: amsgrad's running maximum of v, or null without amsgrad.
inline void adam_update(float* p, const float* g, float* m, float* v, float* v_max, int64_t n, AdamStep s) {
    for_chunks(n, chunk_count(n, 4),
               [=](int, int64_t begin, int64_t end) { adam_update_range(p, g, m, v, v_max, begin, end, s); });
}

}  // namespace handgrad::kernels
