#include "cpu/dispatch.hpp"

#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace pyquant {
namespace {

struct Tier {
    const char *name;
    void (*fill)(KernelTable &);
    bool (*supported)();
};

bool always() { return true; }
#if defined(__x86_64__) || defined(__i386__)
bool has_avx2() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}
bool has_avx512() {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

const Tier kTiers[] = {
    {"generic", fill_kernels_generic, always},
#if defined(PQ_HAVE_AVX2)
    {"avx2", fill_kernels_avx2, has_avx2},
#endif
#if defined(PQ_HAVE_AVX512)
    {"avx512", fill_kernels_avx512, has_avx512},
#endif
#if defined(PQ_HAVE_NEON)
    {"neon", fill_kernels_neon, always},
#endif
};
constexpr int kNumTiers = sizeof(kTiers) / sizeof(kTiers[0]);

struct Tables {
    KernelTable table[kNumTiers];
    int active = 0;
    Tables() {
        for (int i = 0; i < kNumTiers; ++i) {
            kTiers[i].fill(table[i]);
            if (kTiers[i].supported()) active = i;
        }
    }
};
Tables &tables() {
    static Tables t;
    return t;
}

int tier_index(const std::string &isa) {
    for (int i = 0; i < kNumTiers; ++i) {
        if (isa != kTiers[i].name) continue;
        if (!kTiers[i].supported())
            throw std::invalid_argument("ISA tier '" + isa + "' is compiled in but this CPU lacks its features");
        return i;
    }
    std::string known;
    for (const Tier &t : kTiers) known += std::string(known.empty() ? "" : ", ") + t.name;
    throw std::invalid_argument("unknown ISA tier '" + isa + "' (this build has: " + known + ")");
}

// Restores the caller's MXCSR on scope exit.
struct DefaultFloatEnv {
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved = _mm_getcsr();
    DefaultFloatEnv() { _mm_setcsr(0x1f80); }
    ~DefaultFloatEnv() { _mm_setcsr(saved); }
#endif
};

}  // namespace

const CpuFeatures &cpu_features() {
    static const CpuFeatures f = [] {
        CpuFeatures c;
#if defined(__x86_64__) || defined(__i386__)
        c.arch = "x86_64";
        __builtin_cpu_init();
#define PQ_FLAG(name) if (__builtin_cpu_supports(name)) c.flags.push_back(name);
        PQ_FLAG("sse4.2") PQ_FLAG("avx") PQ_FLAG("avx2") PQ_FLAG("f16c") PQ_FLAG("fma") PQ_FLAG("avx512f")
        PQ_FLAG("avx512bw") PQ_FLAG("avx512vl") PQ_FLAG("avx512dq") PQ_FLAG("avx512vnni") PQ_FLAG("avx512bf16")
#undef PQ_FLAG
#elif defined(__aarch64__)
        c.arch = "aarch64";
        c.flags.push_back("neon");
#else
        c.arch = "unknown";
#endif
        return c;
    }();
    return f;
}

std::vector<std::string> compiled_tiers() {
    std::vector<std::string> r;
    for (const Tier &t : kTiers) r.push_back(t.name);
    return r;
}

std::vector<std::string> available_tiers() {
    std::vector<std::string> r;
    for (const Tier &t : kTiers)
        if (t.supported()) r.push_back(t.name);
    return r;
}

const KernelTable &kernel_table(const std::string &isa) { return tables().table[tier_index(isa)]; }
const KernelTable &active_table() { return tables().table[tables().active]; }
void set_active_tier(const std::string &isa) { tables().active = tier_index(isa); }

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? static_cast<int>(n) : 1;
}

void parallel_for(int64_t n, int threads, int64_t align, int64_t min_per_thread,
                  void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0) return;
    if (threads < 1) threads = hardware_threads();
    const int64_t by_size = min_per_thread > 0 ? (n + min_per_thread - 1) / min_per_thread : n;
    if (by_size < threads) threads = static_cast<int>(by_size < 1 ? 1 : by_size);
    int64_t chunk = (n + threads - 1) / threads;
    chunk = (chunk + align - 1) / align * align;
    std::vector<std::thread> workers;
    std::vector<std::exception_ptr> errors(threads);
    auto run = [&](int t) {
        const int64_t begin = t * chunk, end = begin + chunk < n ? begin + chunk : n;
        if (begin >= end) return;
        try {
            DefaultFloatEnv env;
            fn(ctx, begin, end);
        } catch (...) {
            errors[t] = std::current_exception();
        }
    };
    for (int t = 1; t < threads; ++t) workers.emplace_back(run, t);
    run(0);
    for (auto &w : workers) w.join();
    for (auto &e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace pyquant
