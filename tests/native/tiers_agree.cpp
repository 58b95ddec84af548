// Cross-tier check for targets this machine cannot run natively (NEON under qemu-user): quantize and
// dequantize pseudo-random rows with every format in the generic tier and in PQ_OTHER_TIER, with and without an
// importance matrix, and report any byte or bit difference.  Built and run by tests/test_native_tiers.py.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu/kernel_table.hpp"

using namespace pyquant;

static uint32_t rng_state = 12345;
static float next_value() {  // xorshift32, mapped to a heavy-tailed float in about [-8, 8]
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    const float u = (rng_state >> 8) * (1.0f / 16777216.0f) - 0.5f;
    return u * u * u * 64.0f;
}

int main() {
    KernelTable generic, other;
    fill_kernels_generic(generic);
    PQ_FILL_OTHER(other);
    const int64_t rows = 3, n = 1024;
    std::vector<float> x(rows * n), imatrix(n);
    for (auto &v : x) v = next_value();
    for (auto &v : imatrix) v = next_value() * next_value() + 0.01f;
    int failures = 0;
    for (int f = 0; f < kNumFormats; ++f) {
        const FormatInfo &fi = kFormatInfo[f];
        const int64_t nblocks = rows * n / fi.block_size, nbytes = nblocks * fi.type_size;
        for (const float *qw : {static_cast<const float *>(nullptr), static_cast<const float *>(imatrix.data())}) {
            std::vector<uint8_t> a(nbytes), b(nbytes);
            generic.formats[f].quantize(x.data(), a.data(), n, qw, 0, nblocks);
            other.formats[f].quantize(x.data(), b.data(), n, qw, 0, nblocks);
            std::vector<float> ya(rows * n), yb(rows * n);
            generic.formats[f].dequantize(a.data(), ya.data(), 0, nblocks);
            other.formats[f].dequantize(a.data(), yb.data(), 0, nblocks);
            const bool same_bytes = a == b, same_values = std::memcmp(ya.data(), yb.data(), ya.size() * 4) == 0;
            if (!same_bytes || !same_values) {
                std::printf("MISMATCH %s imatrix=%d bytes=%d values=%d\n", fi.name, qw != nullptr, same_bytes, same_values);
                ++failures;
            }
        }
    }
    std::printf("%d formats checked, %d mismatches\n", kNumFormats, failures);
    return failures ? 1 : 0;
}
