// Running NVML calls off the JS thread, with deadlines, on the addon's own threads (never the libuv
// pool: a handful of wedged ioctls would starve fs/dns for the whole process).
//
//  * Lane: one long-lived native thread per GPU (plus one for system-wide calls) with a small
//    bounded job queue. A call that hangs wedges only its own lane. While a lane's current job is
//    past its deadline the device is "suspect": new jobs for it fail fast with NVML_CALL_TIMEOUT
//    instead of queueing behind the stuck call, until the call returns.
//  * Batch: N result slots filled by lanes; settles once, when every slot is filled or the deadline
//    passes (unfilled slots get a timeout payload), and then posts one task to the JS thread.
//  * DeadlineTimer: one thread per session that expires batches. It never calls NVML, so it can
//    always be joined.
// Lane threads are detached: one stuck in NVML forever cannot be joined. They own shared_ptr state
// only (lane, library, batches) and reach JS only through Bridge::Post, which is a no-op once the
// env is gone, so a late return never touches napi or freed memory.
#pragma once
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bridge.h"
#include "errors.h"
#include "library.h"

namespace navarch {

using SteadyClock = std::chrono::steady_clock;

/** Wall clock in ms since the epoch (Date.now()). */
double WallMs();

/** A result produced on a native thread and turned into a JS value on the JS thread. */
struct Payload {
  virtual ~Payload() = default;
  virtual Napi::Value ToJs(Napi::Env env) const = 0;
  /** Non-null when this payload is a failure (the build has no RTTI). */
  virtual const Failure* AsFailure() const { return nullptr; }
};

class Batch : public std::enable_shared_from_this<Batch> {
 public:
  using Finish = std::function<void(Napi::Env, std::vector<std::unique_ptr<Payload>>&)>;
  using TimeoutFill = std::function<std::unique_ptr<Payload>(size_t slot)>;

  Batch(size_t slots, SteadyClock::time_point deadline, std::shared_ptr<Bridge> bridge, Finish finish,
        TimeoutFill onTimeout);
  /** Any thread. Ignored after the batch settled. */
  void Fill(size_t slot, std::unique_ptr<Payload> payload);
  /** Deadline thread: fill what is missing with timeout payloads and settle. */
  void Expire();
  bool Settled();
  SteadyClock::time_point deadline() const { return deadline_; }

 private:
  void SettleLocked(std::unique_lock<std::mutex>& lock);
  std::mutex mu_;
  std::vector<std::unique_ptr<Payload>> slots_;
  size_t remaining_;
  bool settled_ = false;
  const SteadyClock::time_point deadline_;
  std::shared_ptr<Bridge> bridge_;
  Finish finish_;
  TimeoutFill onTimeout_;
};

class DeadlineTimer {
 public:
  DeadlineTimer();
  ~DeadlineTimer();  // Stop()
  void Add(const std::shared_ptr<Batch>& batch);
  /** Joins (never blocked by NVML). With expirePending, batches still in flight settle as timed out. */
  void Stop(bool expirePending);

 private:
  void Run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<SteadyClock::time_point, std::weak_ptr<Batch>> pending_;
  bool stop_ = false;
  std::thread thread_;
};

/** Identity of a GPU, cached by its lane once learnt (read from other threads under the lane lock). */
struct DeviceIdentity {
  bool known = false;
  std::string uuid;
  std::string pciBusId;
  std::string pciBusIdShort;
};

class Lane : public std::enable_shared_from_this<Lane> {
 public:
  using Job = std::function<void(Lane&)>;

  /** index -1 is the system lane. Starts its (detached) thread. */
  static std::shared_ptr<Lane> Start(std::shared_ptr<Library> lib, int index);

  /**
   * Queue `job` with an absolute deadline. Returns false and fills *why when the device is suspect
   * (its current call is past its deadline) or its queue is full.
   */
  bool Submit(Job job, SteadyClock::time_point deadline, std::string* why);
  /** Current call running past its deadline. */
  bool Suspect(SteadyClock::time_point now);
  /** Name of the NVML function the lane is executing ("" when idle). */
  std::string CurrentFn();
  /** Ask the thread to exit after its current job; queued jobs are dropped. No join. */
  void Stop();
  DeviceIdentity Identity();

  // ---- lane-thread side (called from inside jobs) ----
  int index() const { return index_; }
  const NvmlApi& api() const { return lib_->api(); }
  const Library& lib() const { return *lib_; }
  void SetCurrentFn(const char* fn) { currentFn_.store(fn, std::memory_order_relaxed); }
  /** Handle for this lane's GPU (cached after the first success). */
  int Handle(abi::nvmlDevice_t* out);
  void SetIdentity(const DeviceIdentity& id);

  Lane(std::shared_ptr<Library> lib, int index);

 private:
  void Run();
  static constexpr size_t kQueueLimit = 8;
  std::shared_ptr<Library> lib_;
  const int index_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Job, SteadyClock::time_point>> queue_;
  bool stop_ = false;
  bool busy_ = false;
  SteadyClock::time_point busyDeadline_{};
  std::atomic<const char*> currentFn_{""};
  abi::nvmlDevice_t handle_ = nullptr;  // lane thread only
  DeviceIdentity identity_;             // under mu_
};

}  // namespace navarch
