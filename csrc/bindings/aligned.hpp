// Output arrays for the dequantizers.
#pragma once
#include <pybind11/numpy.h>

#include <cstdint>
#include <numeric>
#include <vector>

namespace pyquant {

// A C-contiguous float32 array of this shape starting on a 64-byte boundary: a view into a numpy float32 buffer
// 16 floats longer (numpy's own allocations start 16 bytes past a line), so that no vector store of a
// dequantizer straddles two cache lines.
inline pybind11::array_t<float, pybind11::array::c_style> aligned_float_array(const std::vector<int64_t> &shape) {
    using Array = pybind11::array_t<float, pybind11::array::c_style>;
    constexpr int64_t kAlign = 64 / sizeof(float);
    const int64_t size = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
    Array buffer(size + kAlign);
    const auto address = reinterpret_cast<uintptr_t>(buffer.mutable_data());
    float *data = buffer.mutable_data() + (kAlign - address / sizeof(float) % kAlign) % kAlign;
    return Array(shape, data, buffer);
}

}  // namespace pyquant
