// moe_mpi: a thin N-API binding to MPI (built against Open MPI when scripts/build-native.mjs finds
// it). Every communicator owns one communication thread that runs its blocking MPI calls in
// submission order and resolves a Promise on the JS thread, so the event loop never blocks and
// un-awaited operations stay ordered (MPI requires the same collective order on every rank).
// Open MPI's non-blocking collectives make no background progress, hence blocking calls on a thread.
// allreduce(…, "start") queues the same work without a Promise and returns a ticket; wait(ticket)
// blocks the JS thread until the comm thread has finished it (no event-loop turn needed), so a
// synchronous training step can overlap gradient reduction with its backward.
// Not: argument validation (src/parallel/mpi.ts checks shapes and counts before calling in).
//
// Reductions are deterministic: allreduce = alltoallv of near-equal chunks (rank r gathers chunk r
// of every rank), a sum in rank order 0..p-1 in the element type, then allgatherv. The result is
// bit-identical to a sequential sum in rank order and the same on every rank.
#include <napi.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Comm;

// A started operation (allreduceStart): completed on the comm thread, observed by a blocking
// wait() on the JS thread without returning to the event loop.
struct Ticket {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, waited = false;
  std::string err;
  double busyMs = 0;                          // time the comm thread spent in the operation's MPI calls
  std::vector<Napi::ObjectReference> keep;    // buffers pinned until wait() (released on the JS thread)
  Comm* comm = nullptr;
};

struct Job {
  Comm* comm = nullptr;
  std::function<std::string()> work;                           // runs on the comm thread; "" = success
  std::function<Napi::Value(Napi::Env)> result;                 // builds the resolved value (JS thread)
  std::optional<Napi::Promise::Deferred> deferred;              // promise jobs
  std::shared_ptr<Ticket> ticket;                               // started jobs (no promise, no event loop)
  std::vector<Napi::ObjectReference> keep;                      // buffers pinned until completion
  std::string err;
};

struct Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::thread th;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job*> q;
  bool stop = false, running = false, closed = false;
  int pending = 0;  // JS-thread counter: promise jobs submitted and not completed
  int started = 0;  // JS-thread counter: started jobs (tickets) not yet waited for
  std::vector<uint8_t> scratch;  // reduction staging, kept between calls (used by whichever thread runs the op; never both at once)
  Napi::ThreadSafeFunction tsfn;
};

struct State {
  std::vector<Comm*> comms;
  bool finalized = false;
};

State* St(Napi::Env env) { return env.GetInstanceData<State>(); }

std::string MpiErr(int code, const char* what) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, s, &len);
  return std::string("MPI ") + what + ": " + std::string(s, len);
}

#define MPI_TRY(call, what)                       \
  do {                                            \
    int rc_ = (call);                             \
    if (rc_ != MPI_SUCCESS) return MpiErr(rc_, what); \
  } while (0)

MPI_Datatype Dt(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return MPI_FLOAT;
    case napi_float64_array: return MPI_DOUBLE;
    default: return MPI_INT;
  }
}
size_t Esz(napi_typedarray_type t) { return t == napi_float64_array ? 8 : 4; }

struct View {
  void* data;
  size_t n;
  napi_typedarray_type type;
};

// Through napi_get_typedarray_info: also right for arrays over a SharedArrayBuffer (whose
// ArrayBuffer().Data() is null).
View GetView(const Napi::Value& v) {
  View out{nullptr, 0, napi_float32_array};
  if (napi_get_typedarray_info(v.Env(), v, &out.type, &out.n, &out.data, nullptr, nullptr) != napi_ok)
    Napi::Error::Fatal("moe_mpi", "a buffer argument is not a TypedArray (the TypeScript wrapper checks this)");
  return out;
}

// acc[i] = acc[i] op x[i], in T (op: 0 sum, 1 max, 2 min; NaN propagates through max/min).
template <class T>
void ReduceT(T* acc, const T* x, size_t n, int op) {
  if (op == 0) {
    for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + x[i];
  } else if (op == 1) {
    for (size_t i = 0; i < n; ++i)
      if (x[i] > acc[i] || x[i] != x[i]) acc[i] = x[i];
  } else {
    for (size_t i = 0; i < n; ++i)
      if (x[i] < acc[i] || x[i] != x[i]) acc[i] = x[i];
  }
}
void ReduceI32(int32_t* acc, const int32_t* x, size_t n, int op) {
  if (op == 0) {
    for (size_t i = 0; i < n; ++i) acc[i] = static_cast<int32_t>(static_cast<uint32_t>(acc[i]) + static_cast<uint32_t>(x[i]));
  } else {
    ReduceT<int32_t>(acc, x, n, op);
  }
}
void Reduce(napi_typedarray_type t, void* acc, const void* x, size_t n, int op) {
  if (t == napi_float32_array) ReduceT(static_cast<float*>(acc), static_cast<const float*>(x), n, op);
  else if (t == napi_float64_array) ReduceT(static_cast<double*>(acc), static_cast<const double*>(x), n, op);
  else ReduceI32(static_cast<int32_t*>(acc), static_cast<const int32_t*>(x), n, op);
}

void Complete(Napi::Env env, Napi::Function, Job* job);

// Completes a non-blocking request by testing it with short sleeps in between (10 µs doubling to
// 500 µs). A thread blocked in Open MPI's MPI_Wait busy-polls a core; a started operation mostly
// waits for the other ranks' backward, and on a machine without an idle core that spinning would
// take the core from this rank's compute.
std::string WaitPolling(MPI_Request* req, const char* what) {
  int done = 0;
  for (int us = 10;; us = us < 500 ? 2 * us : 500) {
    MPI_TRY(MPI_Test(req, &done, MPI_STATUS_IGNORE), what);
    if (done) return "";
    std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
}

void Worker(Comm* c) {
  for (;;) {
    Job* j;
    {
      std::unique_lock<std::mutex> lk(c->mu);
      c->cv.wait(lk, [c] { return c->stop || !c->q.empty(); });
      if (c->q.empty()) return;
      j = c->q.front();
      c->q.pop_front();
    }
    const auto t0 = std::chrono::steady_clock::now();
    j->err = j->work();
    if (j->ticket) {
      const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - t0;
      std::shared_ptr<Ticket> t = std::move(j->ticket);
      std::string err = std::move(j->err);
      delete j;  // holds no JS references (they are on the ticket)
      std::lock_guard<std::mutex> lk(t->mu);
      t->err = std::move(err);
      t->busyMs = ms.count();
      t->done = true;
      t->cv.notify_all();
      continue;
    }
    c->tsfn.BlockingCall(j, Complete);
  }
}

void Complete(Napi::Env env, Napi::Function, Job* job) {
  Comm* c = job->comm;
  if (--c->pending == 0) c->tsfn.Unref(env);
  if (!job->err.empty()) {
    job->deferred->Reject(Napi::Error::New(env, job->err).Value());
  } else {
    job->deferred->Resolve(job->result ? job->result(env) : env.Undefined());
  }
  delete job;
}

Comm* NewComm(Napi::Env env, MPI_Comm mc) {
  Comm* c = new Comm();
  c->comm = mc;
  MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
  MPI_Comm_rank(mc, &c->rank);
  MPI_Comm_size(mc, &c->size);
  c->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "moe-mpi-comm", 0, 1);
  c->tsfn.Unref(env);
  St(env)->comms.push_back(c);
  return c;
}

Napi::Value WrapComm(Napi::Env env, Comm* c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", Napi::External<Comm>::New(env, c));
  o.Set("rank", c->rank);
  o.Set("size", c->size);
  return o;
}

Comm* GetComm(const Napi::Value& v) { return v.As<Napi::External<Comm>>().Data(); }

// The optional trailing `sync` argument of a collective: run it now on the JS thread (blocking).
bool IsSync(const Napi::CallbackInfo& info, size_t idx) { return info.Length() > idx && info[idx].ToBoolean().Value(); }

// Runs work now on this (JS) thread; only when nothing is queued on the comm, so order holds.
Napi::Value RunNow(Napi::Env env, Comm* c, const char* what, const std::function<std::string()>& work) {
  if (c->closed) {
    Napi::Error::New(env, "MPI: communicator used after close()").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (c->pending > 0 || c->started > 0) {
    Napi::Error::New(env, std::string(what) + ": " + std::to_string(c->pending + c->started) +
                              " asynchronous or started operation(s) on this group are still in flight; await (or wait for) them before a blocking collective")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string err = work();
  if (!err.empty()) Napi::Error::New(env, err).ThrowAsJavaScriptException();
  return env.Undefined();
}

void Enqueue(Comm* c, Job* j) {
  {
    std::lock_guard<std::mutex> lk(c->mu);
    if (!c->running) {
      c->running = true;
      c->th = std::thread(Worker, c);
    }
    c->q.push_back(j);
  }
  c->cv.notify_one();
}

// Queues work on the comm's thread; returns the Promise. `pin` lists JS buffers to keep alive.
Napi::Value Submit(Napi::Env env, Comm* c, std::vector<Napi::Value> pin, std::function<std::string()> work,
                   std::function<Napi::Value(Napi::Env)> result = nullptr) {
  Job* j = new Job();
  j->deferred.emplace(Napi::Promise::Deferred::New(env));
  j->comm = c;
  j->work = std::move(work);
  j->result = std::move(result);
  for (auto& v : pin) j->keep.push_back(Napi::Persistent(v.As<Napi::Object>()));
  Napi::Promise p = j->deferred->Promise();
  if (c->closed) {
    j->deferred->Reject(Napi::Error::New(env, "MPI: communicator used after close()").Value());
    delete j;
    return p;
  }
  if (c->pending++ == 0) c->tsfn.Ref(env);
  Enqueue(c, j);
  return p;
}

// Queues work on the comm's thread like Submit, without a Promise: returns a ticket that wait()
// blocks on. The operation runs while the JS thread goes on computing.
Napi::Value Start(Napi::Env env, Comm* c, std::vector<Napi::Value> pin, std::function<std::string()> work) {
  if (c->closed) {
    Napi::Error::New(env, "MPI: communicator used after close()").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto t = std::make_shared<Ticket>();
  t->comm = c;
  for (auto& v : pin) t->keep.push_back(Napi::Persistent(v.As<Napi::Object>()));
  Job* j = new Job();
  j->comm = c;
  j->work = std::move(work);
  j->ticket = t;
  c->started++;
  Enqueue(c, j);
  // A ticket collected without wait(): its buffers stay pinned (leaked) rather than released while
  // the comm thread may still write them, and the ticket may then be destroyed on that thread
  // holding no JS references.
  return Napi::External<std::shared_ptr<Ticket>>::New(env, new std::shared_ptr<Ticket>(t), [](Napi::Env, std::shared_ptr<Ticket>* p) {
    if (!(*p)->waited) (new std::vector<Napi::ObjectReference>())->swap((*p)->keep);
    delete p;
  });
}

void StopComm(Comm* c) {
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->stop = true;
  }
  c->cv.notify_one();
  if (c->th.joinable()) c->th.join();
}

// ---- exported functions ----------------------------------------------------------------------

// init() -> { world: {handle, rank, size}, threadLevel, version }
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) {
    Napi::Error::New(env, "MPI: init() called twice in this process").ThrowAsJavaScriptException();
    return env.Null();
  }
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) {
    Napi::Error::New(env, MpiErr(rc, "init")).ThrowAsJavaScriptException();
    return env.Null();
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    Napi::Error::New(env, "MPI: the library does not provide MPI_THREAD_MULTIPLE (one thread per communicator needs it)").ThrowAsJavaScriptException();
    return env.Null();
  }
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  Comm* c = NewComm(env, dup);
  char ver[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(ver, &len);
  Napi::Object o = Napi::Object::New(env);
  o.Set("world", WrapComm(env, c));
  o.Set("version", std::string(ver, len));
  return o;
}

// allreduce(h, buf, op)
Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View b = GetView(info[1]);
  int op = info[2].As<Napi::Number>().Int32Value();
  const bool start = info.Length() > 3 && info[3].IsString() && info[3].As<Napi::String>().Utf8Value() == "start";
  auto work = [c, b, op, start]() -> std::string {
    const int p = c->size, r = c->rank;
    if (p == 1 || b.n == 0) return "";
    const size_t es = Esz(b.type);
    std::vector<int> cnt(p), off(p), rc(p), rd(p);
    int o = 0;
    for (int i = 0; i < p; ++i) {
      cnt[i] = static_cast<int>(b.n / p + (static_cast<size_t>(i) < b.n % p ? 1 : 0));
      off[i] = o;
      o += cnt[i];
    }
    const int mine = cnt[r];
    for (int i = 0; i < p; ++i) rc[i] = mine, rd[i] = i * mine;
    std::vector<uint8_t>& tmp = c->scratch;
    if (tmp.size() < static_cast<size_t>(p) * mine * es + 8) tmp.resize(static_cast<size_t>(p) * mine * es + 8);
    MPI_Datatype dt = Dt(b.type);
    if (!start) {
      MPI_TRY(MPI_Alltoallv(b.data, cnt.data(), off.data(), dt, tmp.data(), rc.data(), rd.data(), dt, c->comm), "allreduce (alltoallv)");
    } else {
      MPI_Request req;
      MPI_TRY(MPI_Ialltoallv(b.data, cnt.data(), off.data(), dt, tmp.data(), rc.data(), rd.data(), dt, c->comm, &req), "allreduce (alltoallv)");
      std::string e = WaitPolling(&req, "allreduce (alltoallv)");
      if (!e.empty()) return e;
    }
    uint8_t* acc = tmp.data();
    for (int i = 1; i < p; ++i) Reduce(b.type, acc, tmp.data() + static_cast<size_t>(i) * mine * es, mine, op);
    std::memcpy(static_cast<uint8_t*>(b.data) + static_cast<size_t>(off[r]) * es, acc, static_cast<size_t>(mine) * es);
    if (!start) {
      MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b.data, cnt.data(), off.data(), dt, c->comm), "allreduce (allgatherv)");
    } else {
      MPI_Request req;
      MPI_TRY(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b.data, cnt.data(), off.data(), dt, c->comm, &req), "allreduce (allgatherv)");
      return WaitPolling(&req, "allreduce (allgatherv)");
    }
    return "";
  };
  if (start) return Start(info.Env(), c, {info[1]}, work);
  if (IsSync(info, 3)) return RunNow(info.Env(), c, "allreduceSync", work);
  return Submit(info.Env(), c, {info[1]}, work);
}

// wait(ticket) -> ms the comm thread spent on the operation; blocks this thread until it is done
// (throws its error). A ticket is waited for once.
Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Ticket> t = *info[0].As<Napi::External<std::shared_ptr<Ticket>>>().Data();
  if (t->waited) {
    Napi::Error::New(env, "MPI: wait() called twice on one started operation").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  {
    std::unique_lock<std::mutex> lk(t->mu);
    t->cv.wait(lk, [&t] { return t->done; });
  }
  t->waited = true;
  t->comm->started--;
  t->keep.clear();
  if (!t->err.empty()) {
    Napi::Error::New(env, t->err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, t->busyMs);
}

// reduceScatter(h, send, recv, op): send = p blocks of recv.length
Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View s = GetView(info[1]), d = GetView(info[2]);
  int op = info[3].As<Napi::Number>().Int32Value();
  auto work = [c, s, d, op]() -> std::string {
    const int p = c->size;
    const size_t es = Esz(s.type), m = d.n;
    if (p == 1) {
      std::memcpy(d.data, s.data, m * es);
      return "";
    }
    std::vector<uint8_t>& tmp = c->scratch;
    if (tmp.size() < p * m * es + 8) tmp.resize(p * m * es + 8);
    MPI_Datatype dt = Dt(s.type);
    MPI_TRY(MPI_Alltoall(s.data, static_cast<int>(m), dt, tmp.data(), static_cast<int>(m), dt, c->comm), "reduceScatter (alltoall)");
    for (int i = 1; i < p; ++i) Reduce(s.type, tmp.data(), tmp.data() + i * m * es, m, op);
    std::memcpy(d.data, tmp.data(), m * es);
    return "";
  };
  if (IsSync(info, 4)) return RunNow(info.Env(), c, "reduceScatterSync", work);
  return Submit(info.Env(), c, {info[1], info[2]}, work);
}

// allgather(h, send, recv)
Napi::Value Allgather(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View s = GetView(info[1]), d = GetView(info[2]);
  auto work = [c, s, d]() -> std::string {
    MPI_Datatype dt = Dt(s.type);
    MPI_TRY(MPI_Allgather(s.data, static_cast<int>(s.n), dt, d.data, static_cast<int>(s.n), dt, c->comm), "allgather");
    return "";
  };
  if (IsSync(info, 3)) return RunNow(info.Env(), c, "allgatherSync", work);
  return Submit(info.Env(), c, {info[1], info[2]}, work);
}

// alltoallv(h, send, sendCounts: Int32Array, recv, recvCounts: Int32Array). Counts are exchanged
// first and checked on every rank (a mismatch fails all ranks with the same message).
Napi::Value Alltoallv(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View s = GetView(info[1]), d = GetView(info[3]);
  Napi::Int32Array scA = info[2].As<Napi::Int32Array>(), rcA = info[4].As<Napi::Int32Array>();
  std::vector<int> sc(scA.Data(), scA.Data() + scA.ElementLength()), rc(rcA.Data(), rcA.Data() + rcA.ElementLength());
  auto work = [c, s, d, sc, rc]() -> std::string {
    const int p = c->size;
    std::vector<int> sd(p), rd(p), got(p);
    for (int i = 0, a = 0, b = 0; i < p; ++i) sd[i] = a, rd[i] = b, a += sc[i], b += rc[i];
    MPI_TRY(MPI_Alltoall(sc.data(), 1, MPI_INT, got.data(), 1, MPI_INT, c->comm), "alltoallv (counts)");
    int bad = -1;
    for (int i = 0; i < p && bad < 0; ++i)
      if (got[i] != rc[i]) bad = i;
    // Everyone learns the first (receiver, sender) pair that disagrees.
    int mine[3] = {bad < 0 ? -1 : c->rank, bad, bad < 0 ? 0 : got[bad]}, all[3];
    int key = bad < 0 ? -1 : c->rank, first = -1;
    MPI_TRY(MPI_Allreduce(&key, &first, 1, MPI_INT, MPI_MAX, c->comm), "alltoallv (check)");
    if (first >= 0) {
      MPI_TRY(MPI_Bcast(mine, 3, MPI_INT, first, c->comm), "alltoallv (check)");
      std::memcpy(all, mine, sizeof all);
      return "alltoallv: rank " + std::to_string(all[1]) + " sends " + std::to_string(all[2]) + " elements to rank " + std::to_string(all[0]) +
             ", which expects a different count (recvCounts[" + std::to_string(all[1]) + "])";
    }
    MPI_Datatype dt = Dt(s.type);
    MPI_TRY(MPI_Alltoallv(s.data, sc.data(), sd.data(), dt, d.data, rc.data(), rd.data(), dt, c->comm), "alltoallv");
    return "";
  };
  if (IsSync(info, 5)) return RunNow(info.Env(), c, "alltoallvSync", work);
  return Submit(info.Env(), c, {info[1], info[3]}, work);
}

// bcast(h, buf, root, sync?, sleep?)
Napi::Value Bcast(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View b = GetView(info[1]);
  int root = info[2].As<Napi::Number>().Int32Value();
  // sleep (5th argument): MPI_Ibcast tested with sleeps in between, so a rank waiting long for the
  // root leaves its core free (every rank of one broadcast uses the same kind: MPI matches
  // blocking and non-blocking collectives separately)
  const bool sleep = info.Length() > 4 && info[4].ToBoolean().Value();
  auto work = [c, b, root, sleep]() -> std::string {
    if (!sleep) {
      MPI_TRY(MPI_Bcast(b.data, static_cast<int>(b.n), Dt(b.type), root, c->comm), "broadcast");
      return "";
    }
    MPI_Request req;
    MPI_TRY(MPI_Ibcast(b.data, static_cast<int>(b.n), Dt(b.type), root, c->comm, &req), "broadcast");
    return WaitPolling(&req, "broadcast");
  };
  if (IsSync(info, 3)) return RunNow(info.Env(), c, "broadcastSync", work);
  return Submit(info.Env(), c, {info[1]}, work);
}

// send(h, buf, peer, tag)
Napi::Value Send(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View b = GetView(info[1]);
  int peer = info[2].As<Napi::Number>().Int32Value(), tag = info[3].As<Napi::Number>().Int32Value();
  return Submit(info.Env(), c, {info[1]}, [c, b, peer, tag]() -> std::string {
    MPI_TRY(MPI_Send(b.data, static_cast<int>(b.n), Dt(b.type), peer, tag, c->comm), "send");
    return "";
  });
}

// recv(h, buf, peer, tag): the message must have exactly buf.length elements.
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  View b = GetView(info[1]);
  int peer = info[2].As<Napi::Number>().Int32Value(), tag = info[3].As<Napi::Number>().Int32Value();
  return Submit(info.Env(), c, {info[1]}, [c, b, peer, tag]() -> std::string {
    MPI_Status st;
    int rc = MPI_Recv(b.data, static_cast<int>(b.n), Dt(b.type), peer, tag, c->comm, &st);
    if (rc != MPI_SUCCESS) return MpiErr(rc, "recv") + " (the message from rank " + std::to_string(peer) + " is longer than the " + std::to_string(b.n) + "-element buffer?)";
    int got = 0;
    MPI_Get_count(&st, Dt(b.type), &got);
    if (static_cast<size_t>(got) != b.n)
      return "recv: rank " + std::to_string(peer) + " sent " + std::to_string(got) + " elements (tag " + std::to_string(tag) + "), this rank expects " + std::to_string(b.n);
    return "";
  });
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  auto work = [c]() -> std::string {
    MPI_TRY(MPI_Barrier(c->comm), "barrier");
    return "";
  };
  if (IsSync(info, 1)) return RunNow(info.Env(), c, "barrierSync", work);
  return Submit(info.Env(), c, {}, work);
}

// split(h, color, key) -> Promise<{handle, rank, size} | null>
Napi::Value Split(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  int color = info[1].As<Napi::Number>().Int32Value(), key = info[2].As<Napi::Number>().Int32Value();
  auto out = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
  return Submit(
      info.Env(), c, {},
      [c, color, key, out]() -> std::string {
        MPI_TRY(MPI_Comm_split(c->comm, color < 0 ? MPI_UNDEFINED : color, key, out.get()), "split");
        return "";
      },
      [out](Napi::Env env) -> Napi::Value {
        if (*out == MPI_COMM_NULL) return env.Null();
        return WrapComm(env, NewComm(env, *out));
      });
}

// close(h): stops the comm's thread once its queued work is done (not collective).
Napi::Value Close(const Napi::CallbackInfo& info) {
  Comm* c = GetComm(info[0]);
  c->closed = true;
  return info.Env().Undefined();
}

// pending() -> number of operations submitted and not yet completed, over all communicators
Napi::Value Pending(const Napi::CallbackInfo& info) {
  int n = 0;
  for (Comm* c : St(info.Env())->comms) n += c->pending + c->started;
  return Napi::Number::New(info.Env(), n);
}

// finalize(): joins every comm thread and calls MPI_Finalize. Only when nothing is pending.
Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  State* st = St(env);
  if (st->finalized) return env.Undefined();
  for (Comm* c : st->comms) {
    StopComm(c);
    c->tsfn.Release();
  }
  st->finalized = true;
  int rc = MPI_Finalize();
  if (rc != MPI_SUCCESS) Napi::Error::New(env, MpiErr(rc, "finalize")).ThrowAsJavaScriptException();
  return env.Undefined();
}

// abort(code): ends every rank of the job now (MPI_Abort on the world).
Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = info[0].As<Napi::Number>().Int32Value();
  MPI_Abort(MPI_COMM_WORLD, code);
  return info.Env().Undefined();
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<State>(new State());
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("allreduce", Napi::Function::New(env, Allreduce));
  exports.Set("wait", Napi::Function::New(env, Wait));
  exports.Set("reduceScatter", Napi::Function::New(env, ReduceScatter));
  exports.Set("allgather", Napi::Function::New(env, Allgather));
  exports.Set("alltoallv", Napi::Function::New(env, Alltoallv));
  exports.Set("bcast", Napi::Function::New(env, Bcast));
  exports.Set("send", Napi::Function::New(env, Send));
  exports.Set("recv", Napi::Function::New(env, Recv));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("split", Napi::Function::New(env, Split));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("pending", Napi::Function::New(env, Pending));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("abort", Napi::Function::New(env, Abort));
  return exports;
}

}  // namespace

NODE_API_MODULE(moe_mpi, InitModule)
