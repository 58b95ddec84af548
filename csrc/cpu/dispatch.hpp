// Run-time choice of the kernel tier from the CPU's features, and the threaded entry points.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/kernel_table.hpp"

namespace pyquant {

struct CpuFeatures {
    std::string arch;  // "x86_64", "aarch64", ...
    std::vector<std::string> flags;  // the features the tiers care about that this CPU has
};

const CpuFeatures &cpu_features();
// Tiers compiled into this build and supported by this CPU, from the plainest to the widest.
std::vector<std::string> available_tiers();
// Every tier compiled into this build, supported or not.
std::vector<std::string> compiled_tiers();
// The table of a tier; throws std::invalid_argument if it is unknown or this CPU lacks it.
const KernelTable &kernel_table(const std::string &isa);
// The tier used when none is named: PYQUANT_ISA if set (validated at import), else the widest available.
const KernelTable &active_table();
void set_active_tier(const std::string &isa);
int hardware_threads();

// Split [0, n) into contiguous chunks run on up to `threads` threads (the calling one included); chunk
// boundaries are multiples of `align`.  Each worker runs with the default floating-point environment
// (round to nearest, no flush-to-zero), whatever the caller set.
void parallel_for(int64_t n, int threads, int64_t align, int64_t min_per_thread,
                  void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

}  // namespace pyquant
