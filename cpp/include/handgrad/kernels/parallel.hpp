// How the kernels split work between threads: the batch (or the planes, or the elements) into
// contiguous chunks, which the calling thread and a small pool of helper threads claim one at a time.
//
// Why not OpenMP: on a shared machine (more runnable threads than cores) every OpenMP loop ends in a
// barrier that waits until each thread of the team has been scheduled, which cost 10x in a training
// step here. In this pool the caller never waits for a helper that has not started: it claims and
// runs chunks itself, and waits only for chunks a helper has already claimed.
#pragma once

#include "handgrad/kernels.hpp"

#include <Eigen/Core>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace handgrad::kernels {

class ThreadPool {
public:
    // threads - 1 helpers (the caller is the other thread).
    explicit ThreadPool(int threads) {
        for (int i = 1; i < threads; ++i) helpers.emplace_back([this] { help(); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stopping = true;
        }
        wake.notify_all();
        for (auto& h : helpers) h.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int threads() const { return static_cast<int>(helpers.size()) + 1; }

    // body(t) for t in [0, chunks), each exactly once, on whichever thread claims it first; returns
    // when all have run. A call from inside a chunk runs its chunks on the calling thread.
    void run(int chunks, const std::function<void(int)>& body) {
        if (helpers.empty() || chunks <= 1 || inside) {
            for (int t = 0; t < chunks; ++t) body(t);
            return;
        }
        uint64_t generation;
        {
            std::lock_guard<std::mutex> lock(mutex);
            generation = ++job_generation;
            job = &body;
            job_chunks = chunks;
            finished.store(0, std::memory_order_relaxed);
            next.store(generation << 32, std::memory_order_release);
        }
        wake.notify_all();
        work(generation, chunks, body);
        while (finished.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
        std::lock_guard<std::mutex> lock(mutex);
        job = nullptr;
    }

    // The pool every kernel uses: HANDGRAD_NUM_THREADS, else OMP_NUM_THREADS (what the benchmarks and
    // PyTorch read), else every core.
    static ThreadPool& instance() {
        auto& pool = slot();
        if (!pool) pool = std::make_unique<ThreadPool>(configured_threads());
        return *pool;
    }
    // Replace the pool by one of n threads (tests and benchmarks; never while a kernel runs).
    static void set_threads(int n) { slot() = std::make_unique<ThreadPool>(std::max(1, n)); }
    static int configured_threads() {
        for (const char* name : {"HANDGRAD_NUM_THREADS", "OMP_NUM_THREADS"})
            if (const char* v = std::getenv(name)) {
                const int n = std::atoi(v);
                if (n >= 1) return std::min(n, 256);
            }
        return std::max(1u, std::thread::hardware_concurrency());
    }

private:
    static std::unique_ptr<ThreadPool>& slot() {
        static std::unique_ptr<ThreadPool> pool;
        return pool;
    }
    // Claim chunks of this generation until none is left. next holds (generation << 32) + the next
    // chunk, so a helper still holding an older job can never claim a chunk of a newer one.
    void work(uint64_t generation, int chunks, const std::function<void(int)>& body) {
        inside = true;
        uint64_t v = next.load(std::memory_order_acquire);
        while ((v >> 32) == generation && static_cast<int>(v & 0xffffffffu) < chunks) {
            if (!next.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
            body(static_cast<int>(v & 0xffffffffu));
            finished.fetch_add(1, std::memory_order_release);
            v = next.load(std::memory_order_acquire);
        }
        inside = false;
    }
    void help() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex);
        while (true) {
            wake.wait(lock, [&] { return stopping || (job && job_generation != seen); });
            if (stopping) return;
            seen = job_generation;
            const std::function<void(int)>* body = job;
            const int chunks = job_chunks;
            lock.unlock();
            work(seen, chunks, *body);  // body outlives this: run() waits for every claimed chunk
            lock.lock();
        }
    }

    std::vector<std::thread> helpers;
    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;
    const std::function<void(int)>* job = nullptr;  // guarded by mutex
    uint64_t job_generation = 0;
    int job_chunks = 0;
    std::atomic<uint64_t> next{0};
    std::atomic<int> finished{0};
    static inline thread_local bool inside = false;
};

// A buffer of at least n floats owned by the calling thread and kept between calls (slot: which of
// a kernel's buffers), so a step's temporaries are neither allocated nor zero-filled again. Its
// contents are whatever the last user left: the caller writes every element it reads.
inline float* scratch(int slot, int64_t n) {
    thread_local std::array<std::vector<float, Eigen::aligned_allocator<float>>, 4> buffers;
    auto& buffer = buffers.at(slot);
    if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
    return buffer.data();
}

inline int num_threads() { return ThreadPool::instance().threads(); }
inline void set_num_threads(int n) { ThreadPool::set_threads(n); }

// The number of chunks for `items` items of `work_per_item` each: one per thread, or one in all
// when the whole is too small to be worth a second thread. It depends on the thread count alone,
// so a run repeats bit for bit on the same count, whichever thread runs which chunk.
inline int chunk_count(int64_t items, int64_t work_per_item) {
    if (items * work_per_item <= kMinParallelWork) return 1;
    return static_cast<int>(std::min<int64_t>(items, num_threads()));
}

// [begin, end) of chunk t of `chunks` over `items`: contiguous, sizes differing by at most one.
inline std::pair<int64_t, int64_t> chunk_range(int64_t items, int chunks, int t) {
    const int64_t base = items / chunks, extra = items % chunks;
    const int64_t begin = t * base + std::min<int64_t>(t, extra);
    return {begin, begin + base + (t < extra ? 1 : 0)};
}

// body(t, begin, end) for each chunk t of [0, items), on the pool.
template <class Body>
void for_chunks(int64_t items, int chunks, Body body) {
    if (chunks <= 1) {
        body(0, int64_t{0}, items);
        return;
    }
    ThreadPool::instance().run(chunks, [&](int t) {
        const auto [begin, end] = chunk_range(items, chunks, t);
        body(t, begin, end);
    });
}

// body(i) for i in [0, n): elementwise work, on the threads when n is large enough. Each chunk runs
// its own copy of body, so a body that captures its pointers by value has them in registers: through
// a reference the compiler must assume every store may change them, and the loop stays scalar.
template <class Body>
void for_each_index(int64_t n, Body body) {
    for_chunks(n, chunk_count(n, 1), [&](int, int64_t begin, int64_t end) {
        Body local = body;
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) local(i);
    });
}

}  // namespace handgrad::kernels
