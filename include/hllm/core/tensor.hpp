// Tensor: a non-owning view of n-dimensional data — dtype, shape, strides (in elements), device.
//
// Views are cheap to copy; whoever allocated the memory (an mmap'd checkpoint, a backend buffer,
// a std::vector in a test) keeps it alive. Shapes are row-major: shape {rows, cols} has strides
// {cols, 1} when contiguous.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"

namespace hllm {

enum class Device : uint8_t { cpu, cuda };

inline constexpr int MAX_DIMS = 4;  // Llama needs at most [tokens, heads, head_dim] (+ one spare)

struct Shape {
  std::array<int64_t, MAX_DIMS> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> list) {
    if (list.size() > MAX_DIMS) fail("tensor rank ", list.size(), " exceeds ", MAX_DIMS);
    for (int64_t d : list) dims[rank++] = d;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& other) const {
    if (rank != other.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (dims[i] != other.dims[i]) return false;
    return true;
  }
  std::string str() const {
    std::ostringstream out;
    out << '[';
    for (int i = 0; i < rank; ++i) out << (i ? ", " : "") << dims[i];
    out << ']';
    return out.str();
  }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape;
  std::array<int64_t, MAX_DIMS> strides{};  // in elements
  Device device = Device::cpu;

  Tensor() = default;
  Tensor(void* data_, DType dtype_, Shape shape_, Device device_ = Device::cpu)
      : data(data_), dtype(dtype_), shape(shape_), device(device_) {
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
      strides[i] = stride;
      stride *= shape.dims[i];
    }
  }

  int rank() const { return shape.rank; }
  int64_t dim(int i) const { return shape.dims[i]; }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }

  bool is_contiguous() const {
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
      if (shape.dims[i] != 1 && strides[i] != stride) return false;
      stride *= shape.dims[i];
    }
    return true;
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }

  // Rows [begin, end) of the outermost dimension, as a view.
  Tensor rows(int64_t begin, int64_t end) const {
    Tensor view = *this;
    view.shape.dims[0] = end - begin;
    view.data =
        static_cast<char*>(data) + begin * strides[0] * static_cast<int64_t>(dtype_size(dtype));
    return view;
  }

  // Element i (flat index of a contiguous host tensor) of a bf16 / f16 / f32 tensor, as fp32.
  float f32_at(int64_t i) const {
    switch (dtype) {
      case DType::bf16:
        return bf16_to_f32(as<bf16>()[i]);
      case DType::f16:
        return f16_to_f32(as<f16>()[i]);
      case DType::f32:
        return as<float>()[i];
      default:
        fail("f32_at: ", dtype_name(dtype), " is not a floating-point dtype");
    }
  }

  // Same data, new shape with the same number of elements (contiguous tensors only).
  Tensor reshape(Shape new_shape) const {
    if (new_shape.numel() != numel() || !is_contiguous())
      fail("cannot reshape ", shape.str(), " to ", new_shape.str());
    return Tensor(data, dtype, new_shape, device);
  }
};

}  // namespace hllm
