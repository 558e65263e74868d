#include "pool.h"

#include <chrono>

#ifdef __linux__
#include <sched.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

// Spin this long before sleeping on a condition variable: kernels called back to back (a layer's
// GEMMs, then its elementwise ops) find the workers awake, while an idle pool still sleeps soon
// and leaves the cores to OpenBLAS and the event loop. Measured: a 2-thread 512³ GEMM waited
// ~0.2 ms per call for a sleeping worker to wake. Timed by the clock, not by a count of PAUSE
// instructions, whose latency differs ~10× between CPUs (4096 of them took 104 µs on Zen 5).
constexpr int64_t kSpinMicros = 100;

constexpr uint64_t kClosed = uint64_t(1) << 31;  // run_dynamic: no more workers may join
constexpr uint64_t kJoinedMask = kClosed - 1;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until done() or kSpinMicros have passed; returns done().
template <class Done>
bool SpinUntil(const Done& done) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= end) return done();
  }
}

// The CPU the calling thread runs on, or -1 where the OS does not say.
int CurrentCpu() {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}

// Moves the calling thread off `cpu` when its affinity allows another CPU: narrows its affinity
// to exclude `cpu` (the kernel migrates it at once) and restores the former mask (it stays where
// it now is). False when it could not move.
bool LeaveCpu(int cpu) {
#ifdef __linux__
  cpu_set_t allowed;
  if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return false;
  cpu_set_t others = allowed;
  CPU_CLR(cpu, &others);
  if (CPU_COUNT(&others) == 0 || sched_setaffinity(0, sizeof others, &others) != 0) return false;
  sched_setaffinity(0, sizeof allowed, &allowed);
  return true;
#else
  (void)cpu;
  return false;
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  for (;;) {
    SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; });
    const std::function<void(int)>* job;
    bool dynamic;
    int callerCpu;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      job = job_;
      dynamic = dynamic_;
      callerCpu = caller_cpu_;
    }
    // A worker woken onto the CPU of the thread that published the job shares that CPU with it
    // while another may idle: measured with two 2-thread engines called alternately (the bench
    // times `auto` against the built-in path that way), the scheduler kept one engine's worker on
    // the caller's CPU call after call (the wake-up finds the other CPU still busy with the other
    // engine's worker, and no idle balancing moves it within a ~1 ms call), so that engine's
    // 512³ GEMM ran at its 1-thread speed. Such a worker moves itself to another allowed CPU.
    if (callerCpu >= 0 && CurrentCpu() == callerCpu) LeaveCpu(callerCpu);
    if (job == nullptr) continue;  // a run_dynamic job that finished before this worker woke
    if (dynamic) {
      // Join unless the caller has closed this job (or already started a newer one).
      uint64_t s = slot_.load(std::memory_order_acquire);
      bool joined = false;
      while ((s >> 32) == (seen & 0xffffffffu) && (s & kClosed) == 0) {
        if (slot_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
          joined = true;
          break;
        }
      }
      if (!joined) continue;
      (*job)(tid);
      finished_.fetch_add(1, std::memory_order_acq_rel);
      std::lock_guard<std::mutex> lk(mu_);  // pairs with the caller's predicate check under mu_
      done_cv_.notify_one();
      continue;
    }
    (*job)(tid);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(mu_);  // pairs with the caller's predicate check under mu_
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (threads_ == 1) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> run_lk(run_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    dynamic_ = false;
    caller_cpu_ = CurrentCpu();
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  fn(0);
  SpinUntil([&] { return pending_.load(std::memory_order_acquire) == 0; });
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  job_ = nullptr;
}

void ThreadPool::run_dynamic(const std::function<void(int)>& fn) {
  if (threads_ == 1) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> run_lk(run_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    dynamic_ = true;
    caller_cpu_ = CurrentCpu();
    finished_.store(0, std::memory_order_relaxed);
    const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
    slot_.store((gen & 0xffffffffu) << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_release);
  }
  cv_.notify_all();
  fn(0);
  const int joined = static_cast<int>(slot_.fetch_or(kClosed, std::memory_order_acq_rel) & kJoinedMask);
  SpinUntil([&] { return finished_.load(std::memory_order_acquire) == joined; });
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return finished_.load(std::memory_order_acquire) == joined; });
  job_ = nullptr;
  dynamic_ = false;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t parts = n < threads_ ? n : threads_;
  if (parts == 1) {
    fn(0, 0, n);
    return;
  }
  run_on_all([&](int tid) {
    if (tid >= parts) return;
    int64_t begin = n * tid / parts, end = n * (tid + 1) / parts;
    if (begin < end) fn(tid, begin, end);
  });
}

}  // namespace moe
