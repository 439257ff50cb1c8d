// NVML event watcher thread and its bounded merge queue (see watcher.h).
#include "watcher.h"

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace navarch {

namespace {

struct TypeBit {
  const char* name;
  uint64_t bit;
};

constexpr TypeBit kTypes[] = {
    {"ecc_sbe", abi::kEventSingleBitEcc},
    {"ecc_dbe", abi::kEventDoubleBitEcc},
    {"pstate", abi::kEventPState},
    {"xid", abi::kEventXid},
    {"clock", abi::kEventClock},
    {"power_source", abi::kEventPowerSource},
    {"mig_config", abi::kEventMigConfig},
    {"ecc_storm", abi::kEventSbeStorm},
    {"dram_retirement_event", abi::kEventDramRetirement},
    {"dram_retirement_failure", abi::kEventDramRetirementFailure},
    {"non_fatal_poison", abi::kEventNonFatalPoison},
    {"fatal_poison", abi::kEventFatalPoison},
    {"gpu_unavailable", abi::kEventGpuUnavailable},
    {"gpu_recovery_action", abi::kEventGpuRecoveryAction},
};

const char* TypeName(uint64_t bit) {
  for (const TypeBit& t : kTypes) {
    if (t.bit == bit) return t.name;
  }
  return "unknown";
}

void Now(int64_t* monoNs, double* wallMs) {
  struct timespec m, w;
  clock_gettime(CLOCK_MONOTONIC, &m);
  clock_gettime(CLOCK_REALTIME, &w);
  *monoNs = static_cast<int64_t>(m.tv_sec) * 1000000000LL + m.tv_nsec;
  *wallMs = static_cast<double>(w.tv_sec) * 1000.0 + static_cast<double>(w.tv_nsec / 1000000);
}

constexpr std::chrono::milliseconds kBackoffBase{1000};
constexpr std::chrono::milliseconds kBackoffCap{30000};
constexpr std::chrono::milliseconds kRecoveryProbe{2000};
// GPU_IS_LOST that no GPU could be blamed for, even alone in a set: retried after at most this
// (not the 30 s cap), so the other GPUs' events wait no longer than that.
constexpr std::chrono::milliseconds kUnattributedLostCap{1000};

}  // namespace

std::vector<std::string> EventTypeNames(uint64_t mask) {
  std::vector<std::string> out;
  for (const TypeBit& t : kTypes) {
    if ((mask & t.bit) != 0) out.emplace_back(t.name);
  }
  return out;
}

uint64_t EventTypeBit(const std::string& name) {
  for (const TypeBit& t : kTypes) {
    if (name == t.name) return t.bit;
  }
  return 0;
}

uint64_t DefaultWantedMask() {
  return abi::kEventXid | abi::kEventSingleBitEcc | abi::kEventDoubleBitEcc | abi::kEventSbeStorm |
         abi::kEventDramRetirement | abi::kEventDramRetirementFailure | abi::kEventNonFatalPoison |
         abi::kEventFatalPoison | abi::kEventGpuUnavailable | abi::kEventGpuRecoveryAction;
}

// ------------------------------------------------------------------------------------ EventQueue

bool EventQueue::Push(EventRecord ev) {
  std::lock_guard<std::mutex> lock(mu_);
  Key key{ev.deviceIndex, ev.mask, ev.data, ev.gpuInstanceId, ev.computeInstanceId};
  auto it = index_.find(key);
  if (it != index_.end()) {
    pending_[it->second].count += ev.count;
    merged_ += ev.count;
  } else if (pending_.size() < capacity_) {
    index_.emplace(key, pending_.size());
    pending_.push_back(std::move(ev));
  } else {
    dropped_ += ev.count;
    droppedUnreported_ += ev.count;
  }
  if (posted_) return false;
  posted_ = true;
  return true;
}

std::vector<EventRecord> EventQueue::Drain(uint64_t* droppedSince) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<EventRecord> out;
  out.swap(pending_);
  index_.clear();
  posted_ = false;
  *droppedSince = droppedUnreported_;
  droppedUnreported_ = 0;
  return out;
}

uint64_t EventQueue::merged() {
  std::lock_guard<std::mutex> lock(mu_);
  return merged_;
}

uint64_t EventQueue::dropped() {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

// ------------------------------------------------------------------------------------- WatchCore

WatchCore::WatchCore(std::shared_ptr<Library> lib, unsigned deviceCount, WatchOptions opts,
                     std::shared_ptr<Bridge> bridge)
    : lib_(std::move(lib)),
      deviceCount_(deviceCount),
      opts_(opts),
      bridge_(std::move(bridge)),
      queue_(opts.queueCapacity) {}

WatchCore::~WatchCore() {
  // Normally joined by JoinBounded. If the last reference is dropped by the watcher thread itself
  // (after a detach), the thread object is no longer joinable; detach defensively otherwise.
  std::lock_guard<std::mutex> lock(threadMu_);
  if (thread_.joinable()) thread_.detach();
}

void WatchCore::Start() {
  std::shared_ptr<WatchCore> self = shared_from_this();
  std::lock_guard<std::mutex> lock(threadMu_);
  thread_ = std::thread([self] { self->Run(); });
}

void WatchCore::RequestStop() {
  stop_.store(true);
  std::lock_guard<std::mutex> lock(doneMu_);
  doneCv_.notify_all();
}

std::chrono::milliseconds WatchCore::JoinBound() const {
  return std::chrono::milliseconds(opts_.waitTimeoutMs) + std::chrono::milliseconds(2000);
}

void WatchCore::JoinBounded() {
  bool finished;
  {
    std::unique_lock<std::mutex> lock(doneMu_);
    finished = doneCv_.wait_for(lock, JoinBound(), [this] { return done_; });
  }
  std::lock_guard<std::mutex> lock(threadMu_);
  if (!thread_.joinable()) return;
  if (finished) {
    thread_.join();
  } else {
    // Stuck inside NVML (a wedged driver): it cannot be joined. It owns shared_ptr state only and
    // reaches JS only through the bridge, which refuses posts once closed.
    thread_.detach();
  }
}

std::vector<Registration> WatchCore::registrations() {
  std::lock_guard<std::mutex> lock(regMu_);
  return regs_;
}

void WatchCore::SleepInterruptible(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(doneMu_);
  doneCv_.wait_for(lock, d, [this] { return stop_.load(); });
}

void WatchCore::Emit(EventRecord ev) {
  if (queue_.Push(std::move(ev))) {
    std::weak_ptr<WatchCore> weak = weak_from_this();
    bridge_->Post([weak](Napi::Env env) {
      std::shared_ptr<WatchCore> self = weak.lock();
      if (!self) return;
      DeliverWatchBatch(env, *self);
    });
  }
}

void WatchCore::EmitLost(Dev& d, int64_t monoNs, double wallMs) {
  if (d.lost) return;
  d.lost = true;
  EventRecord ev;
  ev.type = "gpu_lost";
  ev.mask = 0;
  ev.data = 0;
  ev.deviceIndex = d.index;
  ev.uuid = d.uuid;
  ev.pciBusId = d.pciBusId;
  ev.monotonicNs = monoNs;
  ev.wallTimeMs = wallMs;
  Emit(std::move(ev));
}

void WatchCore::FreeSet() {
  if (set_ != nullptr && lib_->api().EventSetFree != nullptr) lib_->api().EventSetFree(set_);
  set_ = nullptr;
}

bool WatchCore::BuildSet() {
  const NvmlApi& a = lib_->api();
  FreeSet();
  std::vector<Registration> regs;
  int64_t mono;
  double wall;
  Now(&mono, &wall);
  if (a.EventSetCreate == nullptr || a.EventSetWait == nullptr || a.DeviceRegisterEvents == nullptr) {
    for (const Dev& d : devs_) {
      regs.push_back({d.index, 0, Failure::FromStatus(abi::kErrFunctionNotFound, "nvmlEventSetCreate")});
    }
    std::lock_guard<std::mutex> lock(regMu_);
    regs_ = std::move(regs);
    return false;
  }
  int st = a.EventSetCreate(&set_);
  if (st != abi::kSuccess) {
    set_ = nullptr;
    for (const Dev& d : devs_) regs.push_back({d.index, 0, lib_->Fail(st, "nvmlEventSetCreate")});
    std::lock_guard<std::mutex> lock(regMu_);
    regs_ = std::move(regs);
    return false;
  }
  for (Dev& d : devs_) {
    Registration r{d.index, 0, std::nullopt};
    if (d.lost) {
      r.error = Failure::FromStatus(abi::kErrGpuIsLost, "nvmlDeviceRegisterEvents");
      regs.push_back(r);
      continue;
    }
    if (d.handle == nullptr) {
      st = a.DeviceGetHandleByIndex(static_cast<unsigned>(d.index), &d.handle);
      if (st != abi::kSuccess) {
        d.handle = nullptr;
        r.error = lib_->Fail(st, "nvmlDeviceGetHandleByIndex_v2");
        if (st == abi::kErrGpuIsLost) EmitLost(d, mono, wall);
        regs.push_back(r);
        continue;
      }
    }
    if (d.uuid.empty()) {
      char uuid[abi::kUuidBufferSize] = {0};
      if (a.DeviceGetUUID != nullptr) {
        st = a.DeviceGetUUID(d.handle, uuid, abi::kUuidBufferSize);
        if (st == abi::kSuccess) d.uuid.assign(uuid, strnlen(uuid, sizeof uuid));
        if (st == abi::kErrGpuIsLost) {
          r.error = lib_->Fail(st, "nvmlDeviceGetUUID");
          EmitLost(d, mono, wall);
          regs.push_back(r);
          continue;
        }
      }
      abi::nvmlPciInfo_t pci;
      memset(&pci, 0, sizeof pci);
      if (a.DeviceGetPciInfo != nullptr && a.DeviceGetPciInfo(d.handle, &pci) == abi::kSuccess) {
        d.pciBusId.assign(pci.busId, strnlen(pci.busId, sizeof pci.busId));
      }
    }
    unsigned long long supported = 0;
    st = a.DeviceGetSupportedEventTypes == nullptr ? abi::kErrFunctionNotFound
                                                   : a.DeviceGetSupportedEventTypes(d.handle, &supported);
    if (st != abi::kSuccess) {
      r.error = lib_->Fail(st, "nvmlDeviceGetSupportedEventTypes");
      if (st == abi::kErrGpuIsLost) EmitLost(d, mono, wall);
      regs.push_back(r);
      continue;
    }
    uint64_t mask = opts_.wantedMask & supported;
    if (mask != 0) {
      st = a.DeviceRegisterEvents(d.handle, mask, set_);
      if (st == abi::kErrNotSupported) {
        // NVML registers nothing when any bit is refused although advertised (seen with MIG):
        // register bit by bit and keep what is accepted.
        uint64_t accepted = 0;
        for (uint64_t bit = 1; bit != 0 && bit <= mask; bit <<= 1) {
          if ((mask & bit) != 0 && a.DeviceRegisterEvents(d.handle, bit, set_) == abi::kSuccess) accepted |= bit;
        }
        if (accepted == 0) r.error = lib_->Fail(st, "nvmlDeviceRegisterEvents");
        mask = accepted;
      } else if (st != abi::kSuccess) {
        r.error = lib_->Fail(st, "nvmlDeviceRegisterEvents");
        if (st == abi::kErrGpuIsLost) EmitLost(d, mono, wall);
        mask = 0;
      }
    }
    r.mask = mask;
    d.mask = mask;
    regs.push_back(r);
  }
  std::lock_guard<std::mutex> lock(regMu_);
  regs_ = std::move(regs);
  return true;
}

bool WatchCore::ProbeLost(int64_t monoNs, double wallMs) {
  const NvmlApi& a = lib_->api();
  bool newly = false;
  for (Dev& d : devs_) {
    if (d.lost || d.handle == nullptr) continue;
    unsigned idx = 0;
    int st = a.DeviceGetIndex != nullptr ? a.DeviceGetIndex(d.handle, &idx) : abi::kErrFunctionNotFound;
    if (st != abi::kErrGpuIsLost && a.DeviceGetUUID != nullptr) {
      char uuid[abi::kUuidBufferSize];
      st = a.DeviceGetUUID(d.handle, uuid, abi::kUuidBufferSize);
    }
    if (st == abi::kErrGpuIsLost) {
      EmitLost(d, monoNs, wallMs);
      newly = true;
    }
  }
  if (newly) return true;
  // NVML did not say which GPU (its queries all answer): ask each GPU alone.
  for (Dev& d : devs_) {
    if (d.lost || d.handle == nullptr || d.mask == 0) continue;
    if (LostInIsolation(d.handle, d.mask)) {
      EmitLost(d, monoNs, wallMs);
      newly = true;
    }
  }
  return newly;
}

bool WatchCore::LostInIsolation(abi::nvmlDevice_t h, uint64_t mask) {
  const NvmlApi& a = lib_->api();
  if (h == nullptr || a.EventSetCreate == nullptr || a.EventSetWait == nullptr || a.DeviceRegisterEvents == nullptr)
    return false;
  if (mask == 0) {
    unsigned long long supported = 0;
    int st = a.DeviceGetSupportedEventTypes == nullptr ? abi::kErrFunctionNotFound
                                                       : a.DeviceGetSupportedEventTypes(h, &supported);
    if (st == abi::kErrGpuIsLost) return true;
    if (st != abi::kSuccess) return false;
    mask = opts_.wantedMask & supported;
    if (mask == 0) return false;
  }
  abi::nvmlEventSet_t probe = nullptr;
  if (a.EventSetCreate(&probe) != abi::kSuccess) return false;
  // One type is enough (and one the GPU accepted); an event the wait may hand over is a copy of
  // one the shared set also holds, so it is dropped here.
  int st = a.DeviceRegisterEvents(h, mask & (~mask + 1), probe);
  if (st == abi::kSuccess) {
    abi::nvmlEventData_t data;
    memset(&data, 0, sizeof data);
    st = a.EventSetWait(probe, &data, 0);
  }
  if (a.EventSetFree != nullptr) a.EventSetFree(probe);
  return st == abi::kErrGpuIsLost;
}

bool WatchCore::ProbeRecovered() {
  const NvmlApi& a = lib_->api();
  bool any = false;
  for (Dev& d : devs_) {
    if (!d.lost) continue;
    abi::nvmlDevice_t h = d.handle;
    int st = h == nullptr ? a.DeviceGetHandleByIndex(static_cast<unsigned>(d.index), &h) : abi::kSuccess;
    if (st == abi::kSuccess && a.DeviceGetUUID != nullptr) {
      char uuid[abi::kUuidBufferSize];
      st = a.DeviceGetUUID(h, uuid, abi::kUuidBufferSize);
    }
    if (st == abi::kSuccess && !LostInIsolation(h, d.mask)) {
      d.handle = h;
      d.lost = false;  // a later loss is reported again
      any = true;
    }
  }
  return any;
}

std::chrono::milliseconds WatchCore::Backoff(unsigned streak, std::mt19937& rng) {
  // >= 1 s, doubling, capped, plus 0-250 ms of jitter.
  auto base = std::min(kBackoffCap, kBackoffBase * (1u << std::min(streak, 5u)));
  std::uniform_int_distribution<int> jitter(0, 250);
  return base + std::chrono::milliseconds(jitter(rng));
}

bool WatchCore::RebuildSet(std::mt19937& rng) {
  const NvmlApi& a = lib_->api();
  if (a.EventSetCreate == nullptr || a.EventSetWait == nullptr || a.DeviceRegisterEvents == nullptr) {
    BuildSet();  // records the FUNCTION_NOT_FOUND registrations; nothing to retry
    return false;
  }
  // A failed nvmlEventSetCreate (e.g. while the driver recovers a lost GPU) is retried with back-off
  // instead of ending the watch silently; stop() interrupts the sleep.
  for (unsigned streak = 0; !stop_.load(); ++streak) {
    if (BuildSet()) return true;
    SleepInterruptible(Backoff(streak, rng));
  }
  return false;
}

void WatchCore::Run() {
  pthread_setname_np(pthread_self(), "nvml-events");
  devs_.clear();
  for (unsigned i = 0; i < deviceCount_; ++i) {
    Dev d;
    d.index = static_cast<int>(i);
    devs_.push_back(d);
  }
  const NvmlApi& a = lib_->api();
  std::mt19937 rng(static_cast<unsigned>(reinterpret_cast<uintptr_t>(this)));
  bool haveSet = RebuildSet(rng);
  unsigned errorStreak = 0;
  auto lastRecoveryProbe = std::chrono::steady_clock::now();

  while (haveSet && !stop_.load()) {
    abi::nvmlEventData_t data;
    memset(&data, 0, sizeof data);
    int st = a.EventSetWait(set_, &data, opts_.waitTimeoutMs);
    int64_t mono;
    double wall;
    Now(&mono, &wall);
    if (st == abi::kSuccess) {
      errorStreak = 0;
      EventRecord ev;
      ev.mask = data.eventType;
      ev.type = TypeName(data.eventType);
      ev.data = data.eventData;
      ev.gpuInstanceId = data.gpuInstanceId;
      ev.computeInstanceId = data.computeInstanceId;
      ev.monotonicNs = mono;
      ev.wallTimeMs = wall;
      const Dev* match = nullptr;
      for (const Dev& d : devs_) {
        if (d.handle != nullptr && d.handle == data.device) match = &d;
      }
      if (match == nullptr && a.DeviceGetIndex != nullptr) {
        unsigned idx = 0;
        if (a.DeviceGetIndex(data.device, &idx) == abi::kSuccess && idx < devs_.size()) match = &devs_[idx];
      }
      if (match != nullptr) {
        ev.deviceIndex = match->index;
        ev.uuid = match->uuid;
        ev.pciBusId = match->pciBusId;
      }
      Emit(std::move(ev));
      continue;
    }
    bool anyLost = std::any_of(devs_.begin(), devs_.end(), [](const Dev& d) { return d.lost; });
    if (st == abi::kErrTimeout) {
      errorStreak = 0;
    } else if (st == abi::kErrGpuIsLost && ProbeLost(mono, wall)) {
      // Leave the lost GPU(s) out of a new set so the healthy ones keep reporting.
      haveSet = RebuildSet(rng);
      continue;
    } else if (st == abi::kErrGpuIsLost) {
      // No GPU could be blamed, even alone: retry soon, on a fresh set, so the healthy GPUs'
      // events are not held back by the full back-off.
      SleepInterruptible(std::min(kUnattributedLostCap, Backoff(errorStreak++, rng)));
      haveSet = RebuildSet(rng);
    } else {
      // Persistent failure (UNKNOWN, UNINITIALIZED...): back off instead of spinning.
      SleepInterruptible(Backoff(errorStreak++, rng));
    }
    if (anyLost && std::chrono::steady_clock::now() - lastRecoveryProbe >= kRecoveryProbe) {
      lastRecoveryProbe = std::chrono::steady_clock::now();
      if (ProbeRecovered()) haveSet = RebuildSet(rng);
    }
  }
  FreeSet();
  devs_.clear();
  lib_.reset();  // let the session's close() see the library released (nvmlShutdown can then run)
  std::lock_guard<std::mutex> lock(doneMu_);
  done_ = true;
  doneCv_.notify_all();
}

// ----------------------------------------------------------------------------------------- JS

Napi::Object EventToJs(Napi::Env env, const EventRecord& ev) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", ev.type);
  o.Set("eventTypeMask", static_cast<double>(ev.mask));
  o.Set("data", static_cast<double>(ev.data));
  o.Set("deviceIndex", ev.deviceIndex);
  o.Set("uuid", ev.uuid);
  o.Set("pciBusId", ev.pciBusId);
  o.Set("gpuInstanceId",
        ev.gpuInstanceId == abi::kMigIdNone ? env.Null() : Napi::Value(Napi::Number::New(env, ev.gpuInstanceId)));
  o.Set("computeInstanceId", ev.computeInstanceId == abi::kMigIdNone
                                 ? env.Null()
                                 : Napi::Value(Napi::Number::New(env, ev.computeInstanceId)));
  o.Set("monotonicNs", Napi::BigInt::New(env, ev.monotonicNs));
  o.Set("wallTimeMs", ev.wallTimeMs);
  o.Set("count", static_cast<double>(ev.count));
  return o;
}

}  // namespace navarch
