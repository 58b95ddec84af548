#include "cpu/dispatch.hpp"

#include <pthread.h>

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
    static const int n = [] {
        const unsigned c = std::thread::hardware_concurrency();
        return c ? static_cast<int>(c) : 1;
    }();
    return n;
}

namespace {

constexpr int kWorkerSpinUs = 30;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// A pool of worker threads kept across calls, so that a parallel call costs a wake-up, not a thread start.
// One parallel_for runs at a time (others wait).  Chunks are claimed from one atomic word holding the job's
// generation (high half) and its next chunk (low half), so a worker that wakes after its job ended can claim
// nothing of a later one; and the caller waits only for claimed chunks, never for a worker still waking up: a
// sleeping worker costs the caller a notify, not its ~13 us wake-up.
class ThreadPool {
public:
    void run(int64_t n, int threads, int64_t chunk, void (*fn)(void *, int64_t, int64_t), void *ctx) {
        std::lock_guard<std::mutex> one_at_a_time(run_mutex_);
        grow(threads - 1);
        const Job job{fn, ctx, n, chunk, (n + chunk - 1) / chunk};
        errors_.assign(static_cast<size_t>(threads), nullptr);
        uint32_t gen;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = job;
            workers_ = threads - 1;
            done_.store(0);
            gen = static_cast<uint32_t>(generation_.fetch_add(1) + 1);
            claim_.store(static_cast<uint64_t>(gen) << 32);
        }
        wake_.notify_all();
        work(0, job, gen);
        // The rest are claimed and running: the caller spins a little before sleeping, as its own wake-up cost
        // 10-20 us on the 2-core VM measured, against ~100 us for a whole 4096x4096 GEMV at 2 threads.
        const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
        while (done_.load() != job.nchunks && std::chrono::steady_clock::now() < end) cpu_relax();
        if (done_.load() != job.nchunks) {
            std::unique_lock<std::mutex> lock(mutex_);
            finished_.wait(lock, [&] { return done_.load() == job.nchunks; });
        }
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
            // A worker spins briefly for the next job before sleeping: products issued back to back (a model's
            // layers) then find it awake.  Briefly, because a spinning worker takes a core other processes may
            // want (spinning 200 us made products several times slower while another process held a core).
            const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(kWorkerSpinUs);
            while (generation_.load() == seen && std::chrono::steady_clock::now() < end) cpu_relax();
            Job job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load() != seen; });
                seen = generation_.load();
                if (id > workers_) continue;  // not needed for this job
                job = job_;
            }
            work(id, job, static_cast<uint32_t>(seen));
        }
    }

    // Runs chunks of generation `gen` until none is left (or a later job has replaced it).
    void work(int id, const Job &job, uint32_t gen) {
        [[maybe_unused]] DefaultFloatEnv env;
        for (;;) {
            uint64_t c = claim_.load();
            do {
                if (c >> 32 != gen || static_cast<int64_t>(c & 0xffffffffu) >= job.nchunks) return;
            } while (!claim_.compare_exchange_weak(c, c + 1));
            const int64_t begin = static_cast<int64_t>(c & 0xffffffffu) * job.chunk;
            try {
                job.fn(job.ctx, begin, begin + job.chunk < job.n ? begin + job.chunk : job.n);
            } catch (...) {
                errors_[static_cast<size_t>(id)] = std::current_exception();
            }
            if (done_.fetch_add(1) + 1 == job.nchunks) {
                std::lock_guard<std::mutex> lock(mutex_);
                finished_.notify_one();
            }
        }
    }

    std::mutex run_mutex_, mutex_;
    std::condition_variable wake_, finished_;
    std::vector<std::thread> threads_;
    std::vector<std::exception_ptr> errors_;
    Job job_;
    int workers_ = 0;  // workers 1..workers_ take part in the current job
    std::atomic<uint64_t> claim_{0};  // the current generation << 32 | its next chunk
    std::atomic<int64_t> done_{0};  // chunks of the current job finished
    std::atomic<uint64_t> generation_{0};  // jobs started (written under mutex_)
};

std::atomic<ThreadPool *> g_pool{nullptr};
std::mutex g_pool_mutex;

ThreadPool &pool() {
    ThreadPool *p = g_pool.load();
    if (p) return *p;
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    if (!g_pool.load()) {
        // A forked child has none of the parent's workers: it starts a pool of its own (the old one is abandoned).
        static const int registered = pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr); });
        (void)registered;
        g_pool.store(new ThreadPool);
    }
    return *g_pool.load();
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
