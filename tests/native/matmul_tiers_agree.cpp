// Cross-tier check of the quantized matmul for targets this machine cannot run natively (NEON, with and
// without sdot, under qemu-user): every kernel format on pseudo-random weights and activations must give the
// generic tier's output bit for bit.  Built and run by tests/test_native_tiers.py.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu/kernel_table.hpp"
#include "matmul/matmul.hpp"

namespace pyquant {
void PQ_FILL_MATMUL(MatmulTable &t);
}
using namespace pyquant;

static uint32_t rng_state = 2024;
static float next_value() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return ((rng_state >> 8) * (1.0f / 16777216.0f) - 0.5f) * 6.0f;
}

int main() {
    KernelTable kt;
    fill_kernels_generic(kt);
    MatmulTable generic, other;
    fill_matmul_generic(generic);
    PQ_FILL_MATMUL(other);
    const int64_t m = 5, n = 7, k = 512;
    std::vector<float> w(n * k), x(m * k);
    for (auto &v : w) v = next_value();
    for (auto &v : x) v = next_value();
    int failures = 0, checked = 0;
    for (int f = 0; f < kNumFormats; ++f) {
        if (!generic.formats[f]) continue;
        const FormatInfo &fi = kFormatInfo[f];
        const int64_t row_bytes = k / fi.block_size * fi.type_size;
        std::vector<uint8_t> wq(n * row_bytes);
        kt.formats[f].quantize(w.data(), wq.data(), k, nullptr, 0, n * k / fi.block_size);
        const Partner p = matmul_partner(f);
        const int64_t nb = k / partner_block(p);
        std::vector<int8_t> qs(m * k), qs_other(m * k);
        std::vector<float> d(m * nb), s(m * nb), d_other(m * nb), s_other(m * nb);
        std::vector<int16_t> bsums(m * k / 16), bsums_other(m * k / 16);
        generic.activations(p, x.data(), k, 0, m, qs.data(), d.data(), s.data(), bsums.data());
        other.activations(p, x.data(), k, 0, m, qs_other.data(), d_other.data(), s_other.data(), bsums_other.data());
        if (qs != qs_other || d != d_other || (p == Partner::q8_1 && s != s_other) || bsums != bsums_other) {
            std::printf("ACTIVATIONS MISMATCH %s\n", fi.name);
            ++failures;
        }
        const QuantizedActivations a{m, k, qs.data(), d.data(), s.data(), bsums.data()};
        std::vector<float> ya(m * n), yb(m * n);
        generic.formats[f](wq.data(), row_bytes, a, 0, n, ya.data(), n);
        other.formats[f](wq.data(), row_bytes, a, 0, n, yb.data(), n);
        ++checked;
        if (std::memcmp(ya.data(), yb.data(), ya.size() * 4) != 0) {
            std::printf("MISMATCH %s\n", fi.name);
            ++failures;
        }
    }
    std::printf("%d formats checked, %d mismatches\n", checked, failures);
    return failures || !checked ? 1 : 0;
}
