// One contiguous float32 tensor type with a shape (row-major, NCHW for images), the errors every
// public function throws, and Eigen views that let the matrix products read the data in place.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace handgrad {

using Shape = std::vector<int64_t>;

inline std::string fmt_shape(const Shape& shape) {
    // (2, 3) as Python prints it; (5,) for one dimension
    std::ostringstream s;
    s << "(";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << (shape.size() == 1 ? ",)" : ")");
    return s.str();
}

// As Python's HandgradError(where, message): the message starts with what (layer, file) failed.
class HandgradError : public std::runtime_error {
public:
    HandgradError(const std::string& where, const std::string& message)
        : std::runtime_error(where + ": " + message), where(where) {}
    std::string where;
};

// A shape that does not fit: carries what was expected and what came.
class ShapeError : public HandgradError {
public:
    ShapeError(const std::string& where, const std::string& argument, const std::string& expected, const Shape& got)
        : HandgradError(where, "expected " + argument + " of shape " + expected + ", got " + fmt_shape(got)),
          expected(expected), got(got) {}
    std::string expected;
    Shape got;
};

// Eigen's aligned allocator, except that a vector's new elements are default-initialised when no
// value is given: Storage(n) leaves its floats unwritten (Tensor::empty, for a kernel that writes
// every element anyway, skips a pass over memory), while Storage(n, v) still fills them with v.
template <class T>
struct UninitializedAllocator : Eigen::aligned_allocator<T> {
    template <class U>
    struct rebind {
        using other = UninitializedAllocator<U>;
    };
    UninitializedAllocator() = default;
    template <class U>
    UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

struct Tensor {
    // Aligned to Eigen's widest vector: with unaligned data its kernels pick their loop peeling from
    // the address, so the same computation rounded differently from run to run.
    using Storage = std::vector<float, UninitializedAllocator<float>>;

    Shape shape;
    Storage data;

    Tensor() = default;
    explicit Tensor(Shape shape_, float fill = 0.0f) : shape(std::move(shape_)), data(count(shape), fill) {}
    Tensor(Shape shape_, Storage values) : shape(std::move(shape_)), data(std::move(values)) {
        if (static_cast<int64_t>(data.size()) != count(shape))
            throw HandgradError("Tensor", "shape " + fmt_shape(shape) + " needs " + std::to_string(count(shape)) +
                                              " values, got " + std::to_string(data.size()));
    }
    // A tensor whose values are not set: for an output its kernel writes in full before any read.
    static Tensor empty(Shape shape_) {
        Tensor t;
        t.data = Storage(static_cast<size_t>(count(shape_)));
        t.shape = std::move(shape_);
        return t;
    }
    Tensor(Shape shape_, const std::vector<float>& values)
        : Tensor(std::move(shape_), Storage(values.begin(), values.end())) {}

    static int64_t count(const Shape& shape) {
        return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
    }
    int64_t numel() const { return static_cast<int64_t>(data.size()); }
    int ndim() const { return static_cast<int>(shape.size()); }
    int64_t size(int dim) const { return shape.at(dim < 0 ? dim + ndim() : dim); }
    float* ptr() { return data.data(); }
    const float* ptr() const { return data.data(); }
    float& operator[](int64_t i) { return data[i]; }
    float operator[](int64_t i) const { return data[i]; }

    // The same values under another shape of the same number of elements (a copy, as .reshape()).
    Tensor reshape(Shape new_shape) const {
        if (count(new_shape) != numel())
            throw ShapeError("Tensor.reshape", "new shape", "with " + std::to_string(numel()) + " elements",
                             new_shape);
        return Tensor(std::move(new_shape), data);
    }
};

// grad_output must have the forward output's shape: every backward indexes it by that shape, so a
// mismatch would read or write out of bounds.
inline void check_grad_output(const std::string& where, const Tensor& grad_output, const Shape& expected) {
    if (grad_output.shape != expected || grad_output.numel() != Tensor::count(expected))
        throw ShapeError(where, "grad_output", fmt_shape(expected) + " (the forward output's)", grad_output.shape);
}

// Row-major Eigen matrices over a tensor's memory: no copies, the layout NumPy uses.
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

inline MatrixMap as_matrix(float* data, int64_t rows, int64_t cols) { return MatrixMap(data, rows, cols); }
inline ConstMatrixMap as_matrix(const float* data, int64_t rows, int64_t cols) {
    return ConstMatrixMap(data, rows, cols);
}
inline MatrixMap as_matrix(Tensor& t, int64_t rows, int64_t cols) { return MatrixMap(t.ptr(), rows, cols); }
inline ConstMatrixMap as_matrix(const Tensor& t, int64_t rows, int64_t cols) {
    return ConstMatrixMap(t.ptr(), rows, cols);
}

// Which gradients a backward should compute: (input, weight, bias), as needs_input_grad in Python.
struct NeedsGrad {
    bool input = true, weight = true, bias = true;
};

}  // namespace handgrad
