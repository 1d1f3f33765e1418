// The one matrix product every kernel calls: C = op(A) @ op(B) (+ C), row-major, with leading
// dimensions, so a chunk of columns inside a bigger matrix is multiplied in place.
//
// Built with HANDGRAD_OPENBLAS (the default where Debian's OpenBLAS is installed) it is OpenBLAS's
// sgemm on the calling thread; otherwise Eigen's. Measured on this project's shapes (the three
// models' products at batch 64, 128 and 1000, one thread): OpenBLAS is 5-20% faster on most and
// 5x faster on a long reduction (lenet5's conv2 grad_weight, K = 6400). The library's own threads
// stay off: the kernels split the batch between the pool's threads (kernels/parallel.hpp), which
// on a loaded machine never waits for a thread that has not been scheduled.
#pragma once

#include "handgrad/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <mutex>

#ifdef HANDGRAD_USE_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif

namespace handgrad::kernels {

// A row-major matrix in memory: data, rows, columns and the distance between rows; transposed
// means the product reads it as its transpose.
struct MatrixRef {
    const float* data;
    int64_t rows, cols, ld;
    bool transposed = false;
    int64_t product_rows() const { return transposed ? cols : rows; }
    int64_t product_cols() const { return transposed ? rows : cols; }
};

// Which library computes gemm: "openblas" or "eigen" (for the benchmark's report).
inline const char* gemm_library() {
#ifdef HANDGRAD_USE_OPENBLAS
    return "openblas";
#else
    return "eigen";
#endif
}

// C (m, n), rows ldc apart, = a @ b, or += a @ b when accumulate. Shapes are the caller's
// contract (checked in debug builds): a is (m, k) and b (k, n) as the product reads them.
inline void gemm(const MatrixRef& a, const MatrixRef& b, float* c, int64_t ldc, bool accumulate = false) {
    const int64_t m = a.product_rows(), k = a.product_cols(), n = b.product_cols();
    eigen_assert(b.product_rows() == k);
    (void)k;  // read by the BLAS call only
    if (m == 0 || n == 0) return;
#ifdef HANDGRAD_USE_OPENBLAS
    static std::once_flag single_threaded;  // the pool owns the threads
    std::call_once(single_threaded, [] { openblas_set_num_threads(1); });
    if (k == 0) {
        if (!accumulate)
            for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
        return;
    }
    cblas_sgemm(CblasRowMajor, a.transposed ? CblasTrans : CblasNoTrans, b.transposed ? CblasTrans : CblasNoTrans,
                static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a.data,
                static_cast<int>(a.ld), b.data, static_cast<int>(b.ld), accumulate ? 1.0f : 0.0f, c,
                static_cast<int>(ldc));
#else
    using Strided = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
    const Strided A(a.data, a.rows, a.cols, Eigen::OuterStride<>(a.ld)), B(b.data, b.rows, b.cols, Eigen::OuterStride<>(b.ld));
    Eigen::Map<Matrix, 0, Eigen::OuterStride<>> C(c, m, n, Eigen::OuterStride<>(ldc));
    auto run = [&](const auto& left, const auto& right) {
        if (accumulate) C.noalias() += left * right;
        else C.noalias() = left * right;
    };
    if (a.transposed && b.transposed) run(A.transpose(), B.transpose());
    else if (a.transposed) run(A.transpose(), B);
    else if (b.transposed) run(A, B.transpose());
    else run(A, B);
#endif
}

}  // namespace handgrad::kernels
