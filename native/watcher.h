// The NVML event watcher: one dedicated native thread per watch (never the libuv pool) that owns an
// event set, registers `wanted & supported` on every GPU, loops on nvmlEventSetWait_v2 and resolves
// each event to index/UUID/PCI id on that thread. Events reach JS in batches through one
// threadsafe-function call per batch, via a bounded queue that merges identical events (exact
// counts) and counts what it has to drop.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bridge.h"
#include "errors.h"
#include "library.h"

namespace navarch {

struct EventRecord {
  uint64_t mask = 0;  // NVML event bit, 0 for synthesised events
  uint64_t data = 0;
  const char* type = "unknown";
  int deviceIndex = -1;
  std::string uuid;
  std::string pciBusId;
  uint32_t gpuInstanceId = 0xFFFFFFFFu;
  uint32_t computeInstanceId = 0xFFFFFFFFu;
  int64_t monotonicNs = 0;
  double wallTimeMs = 0;
  uint64_t count = 1;
};

/** Bounded merge queue between the watcher thread and JS. */
class EventQueue {
 public:
  explicit EventQueue(size_t capacity) : capacity_(capacity) {}
  /** Watcher thread. Returns true when the caller must post a drain (none is pending yet). */
  bool Push(EventRecord ev);
  /** JS thread. Takes everything queued; *droppedSince = drops since the previous drain. */
  std::vector<EventRecord> Drain(uint64_t* droppedSince);
  uint64_t merged();
  uint64_t dropped();

 private:
  struct Key {
    int dev;
    uint64_t mask, data;
    uint32_t gi, ci;
    bool operator==(const Key& o) const {
      return dev == o.dev && mask == o.mask && data == o.data && gi == o.gi && ci == o.ci;
    }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      uint64_t h = k.mask * 0x9E3779B97F4A7C15ull ^ (k.data + 0x632BE59BD9B4E019ull + (h_(k.dev) << 6));
      h ^= (static_cast<uint64_t>(k.gi) << 32 | k.ci) * 0xC2B2AE3D27D4EB4Full;
      return static_cast<size_t>(h ^ (h >> 29));
    }
    static uint64_t h_(int v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); }
  };
  const size_t capacity_;
  std::mutex mu_;
  std::vector<EventRecord> pending_;
  std::unordered_map<Key, size_t, KeyHash> index_;
  bool posted_ = false;
  uint64_t merged_ = 0;
  uint64_t dropped_ = 0;
  uint64_t droppedUnreported_ = 0;
};

struct WatchOptions {
  unsigned waitTimeoutMs = 500;
  size_t queueCapacity = 4096;
  bool ref = false;
  uint64_t wantedMask = 0;
};

struct Registration {
  int deviceIndex;
  uint64_t mask = 0;
  std::optional<Failure> error;
};

class WatchCore : public std::enable_shared_from_this<WatchCore> {
 public:
  WatchCore(std::shared_ptr<Library> lib, unsigned deviceCount, WatchOptions opts, std::shared_ptr<Bridge> bridge);
  ~WatchCore();
  void Start();
  /** Ask the thread to stop (it notices within one wait timeout). */
  void RequestStop();
  /** Wait up to the bound for the thread to finish, then join it, or detach it if it is stuck in NVML. */
  void JoinBounded();
  std::chrono::milliseconds JoinBound() const;

  EventQueue& queue() { return queue_; }
  std::vector<Registration> registrations();
  const std::shared_ptr<Bridge>& bridge() const { return bridge_; }
  /** JS-thread-only pointer to the JS side (callbacks); cleared when that side goes away. */
  void* jsSide = nullptr;
  uint64_t delivered = 0;  // JS thread only

 private:
  struct Dev {
    int index = -1;
    abi::nvmlDevice_t handle = nullptr;
    std::string uuid, pciBusId;
    uint64_t mask = 0;  // event types registered in the last set built
    bool lost = false;
  };
  void Run();
  bool BuildSet();  // (re)creates the event set and registers every GPU that is not lost
  /** BuildSet, retried with back-off until it succeeds or stop; false at once when symbols are missing. */
  bool RebuildSet(std::mt19937& rng);
  static std::chrono::milliseconds Backoff(unsigned streak, std::mt19937& rng);
  void FreeSet();
  void Emit(EventRecord ev);
  void EmitLost(Dev& d, int64_t monoNs, double wallMs);
  bool ProbeLost(int64_t monoNs, double wallMs);  // true when a GPU newly turned out lost
  bool ProbeRecovered();
  /** True when a wait on a new event set holding only this GPU answers GPU_IS_LOST: attributes a
   *  loss that the shared set's wait and the device's own queries do not. */
  bool LostInIsolation(abi::nvmlDevice_t h, uint64_t mask);
  void SleepInterruptible(std::chrono::milliseconds d);

  std::shared_ptr<Library> lib_;
  const unsigned deviceCount_;
  const WatchOptions opts_;
  std::shared_ptr<Bridge> bridge_;
  EventQueue queue_;
  abi::nvmlEventSet_t set_ = nullptr;
  std::vector<Dev> devs_;  // watcher thread only
  std::mutex regMu_;
  std::vector<Registration> regs_;
  std::atomic<bool> stop_{false};
  std::mutex doneMu_;
  std::condition_variable doneCv_;  // also wakes back-off sleeps on stop
  bool done_ = false;
  std::mutex threadMu_;
  std::thread thread_;
};

/** Names of the event bits in a mask (for stats). */
std::vector<std::string> EventTypeNames(uint64_t mask);
/** Bit of an event-type name ("xid" -> 0x8); 0 when unknown. */
uint64_t EventTypeBit(const std::string& name);
/** XID, SBE, DBE and the 560+/565+ reliability events. */
uint64_t DefaultWantedMask();

Napi::Object EventToJs(Napi::Env env, const EventRecord& ev);
/** JS thread: drain the queue of `core` into its JS callbacks (implemented with the Watch object). */
void DeliverWatchBatch(Napi::Env env, WatchCore& core);

}  // namespace navarch
