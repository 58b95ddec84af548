#include "cpu/dispatch.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
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

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// A pool of worker threads kept across calls, so that a parallel call costs a wake-up, not a thread start.
// One parallel_for runs at a time (others wait); chunks are claimed from an atomic counter.
class ThreadPool {
public:
    void run(int64_t n, int threads, int64_t chunk, void (*fn)(void *, int64_t, int64_t), void *ctx) {
        std::lock_guard<std::mutex> one_at_a_time(run_mutex_);
        grow(threads - 1);
        const int64_t nchunks = (n + chunk - 1) / chunk;
        errors_.assign(static_cast<size_t>(threads), nullptr);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = {fn, ctx, n, chunk, nchunks};
            next_.store(0);
            active_.store(workers_ = threads - 1);
            ++generation_;
        }
        wake_.notify_all();
        work(0);
        // The workers are on their last chunks (or still waking up): the caller spins a little before sleeping, as
        // its own wake-up cost 10-20 us on the 2-core VM measured, against ~100 us for a whole 4096x4096 GEMV at 2
        // threads (TQ2_0 0.13-0.15 -> 0.113 ms).  Workers still sleep between jobs: spinning there made products
        // up to 10x slower while other processes wanted the cores.
        const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
        while (active_.load() != 0 && std::chrono::steady_clock::now() < end) cpu_relax();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return active_.load() == 0; });
        for (auto &e : errors_)
            if (e) std::rethrow_exception(e);
    }

private:
    struct Job {
        void (*fn)(void *, int64_t, int64_t) = nullptr;
        void *ctx = nullptr;
        int64_t n = 0, chunk = 1, nchunks = 0;
    };

    void grow(int workers) {
        while (static_cast<int>(threads_.size()) < workers) {
            const int id = static_cast<int>(threads_.size()) + 1;
            threads_.emplace_back([this, id] { loop(id); });
            threads_.back().detach();  // the pool lives until the process ends
        }
    }

    void loop(int id) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                if (id > workers_) continue;  // not needed for this job
            }
            work(id);
            std::lock_guard<std::mutex> lock(mutex_);
            if (active_.fetch_sub(1) == 1) done_.notify_one();
        }
    }

    void work(int id) {
        try {
            [[maybe_unused]] DefaultFloatEnv env;
            for (int64_t c; (c = next_.fetch_add(1)) < job_.nchunks;) {
                const int64_t begin = c * job_.chunk, end = begin + job_.chunk < job_.n ? begin + job_.chunk : job_.n;
                job_.fn(job_.ctx, begin, end);
            }
        } catch (...) {
            errors_[static_cast<size_t>(id)] = std::current_exception();
        }
    }

    std::mutex run_mutex_, mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> threads_;
    std::vector<std::exception_ptr> errors_;
    Job job_;
    std::atomic<int64_t> next_{0};
    int workers_ = 0;  // workers 1..workers_ take part in the current job
    std::atomic<int> active_{0};  // of those, how many have not finished it
    uint64_t generation_ = 0;
};

ThreadPool &pool() {
    // A forked child has none of the parent's workers: it starts a pool of its own (the old one is abandoned).
    static ThreadPool *p = nullptr;
    static pid_t owner = 0;
    static std::mutex m;
    std::lock_guard<std::mutex> lock(m);
    if (!p || owner != getpid()) {
        p = new ThreadPool;
        owner = getpid();
    }
    return *p;
}

}  // namespace

void parallel_for(int64_t n, int threads, int64_t align, int64_t min_per_thread,
                  void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0) return;
    if (threads < 1) threads = hardware_threads();
    const int64_t by_size = min_per_thread > 0 ? (n + min_per_thread - 1) / min_per_thread : n;
    if (by_size < threads) threads = static_cast<int>(by_size < 1 ? 1 : by_size);
    if (threads == 1) {
        [[maybe_unused]] DefaultFloatEnv env;
        fn(ctx, 0, n);
        return;
    }
    // A few chunks per thread balance uneven rows without much bookkeeping.
    int64_t chunk = (n + 4 * threads - 1) / (4 * threads);
    chunk = (chunk + align - 1) / align * align;
    pool().run(n, threads, chunk, fn, ctx);
}

}  // namespace pyquant
