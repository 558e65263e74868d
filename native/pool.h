// Thread pool owned by one Engine. Not a global: each engine (created from TS) has its own.
// parallel_for splits [0, n) into contiguous chunks, one per worker (the caller runs chunk 0),
// and returns when all are done. Workers sleep on a condition variable between jobs (after a
// 100 µs spin), so an idle pool does not steal cycles from OpenBLAS or the event loop. On Linux a
// worker that wakes on the CPU of the thread that published the job moves to another CPU.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <atomic>

namespace moe {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // fn(tid, begin, end) over [0, n) split into at most size() contiguous chunks
  // (fewer when n is small). tid is in [0, size()). Blocks until all chunks ran.
  void parallel_for(int64_t n, const std::function<void(int tid, int64_t begin, int64_t end)>& fn);

  // fn(tid) once on every thread (tid in [0, size())). Blocks until all ran.
  void run_on_all(const std::function<void(int tid)>& fn);

  // fn(tid) on the caller (tid 0) and on each worker that starts before the caller's own fn(0)
  // has returned; a worker that wakes later skips the job. For jobs that hand out their work
  // through a shared counter, where any one thread may end up doing all of it: the call then
  // never waits for a worker that the OS has not scheduled yet (a core shared with another
  // process). Blocks until every worker that started has returned.
  void run_dynamic(const std::function<void(int tid)>& fn);

 private:
  void worker(int tid);
  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // written under mu_, read without it while spinning
  std::atomic<int> pending_{0};          // workers still running the current job
  bool stop_ = false;
  // run_dynamic: job kind (read under mu_), join slot (generation << 32 | kClosed | joined
  // workers) and the number of joined workers that have returned.
  bool dynamic_ = false;
  int caller_cpu_ = -1;  // CPU of the thread that published the current job (-1: unknown)
  std::atomic<uint64_t> slot_{0};
  std::atomic<int> finished_{0};
  std::mutex run_mu_;  // serialises callers of run_on_all
};

}  // namespace moe
