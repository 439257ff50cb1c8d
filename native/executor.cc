// Lanes, batches and the deadline timer (see executor.h).
#include "executor.h"

#include <pthread.h>
#include <time.h>

#include <cstdio>

namespace navarch {

double WallMs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec / 1000000);
}

// ---------------------------------------------------------------------------------------- Batch

Batch::Batch(size_t slots, SteadyClock::time_point deadline, std::shared_ptr<Bridge> bridge, Finish finish,
             TimeoutFill onTimeout)
    : slots_(slots),
      remaining_(slots),
      deadline_(deadline),
      bridge_(std::move(bridge)),
      finish_(std::move(finish)),
      onTimeout_(std::move(onTimeout)) {}

void Batch::Fill(size_t slot, std::unique_ptr<Payload> payload) {
  std::unique_lock<std::mutex> lock(mu_);
  if (settled_ || slot >= slots_.size() || slots_[slot]) return;
  slots_[slot] = std::move(payload);
  if (--remaining_ == 0) SettleLocked(lock);
}

void Batch::Expire() {
  std::unique_lock<std::mutex> lock(mu_);
  if (settled_) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i]) slots_[i] = onTimeout_(i);
  }
  remaining_ = 0;
  SettleLocked(lock);
}

bool Batch::Settled() {
  std::lock_guard<std::mutex> lock(mu_);
  return settled_;
}

void Batch::SettleLocked(std::unique_lock<std::mutex>& lock) {
  settled_ = true;
  auto results = std::make_shared<std::vector<std::unique_ptr<Payload>>>(std::move(slots_));
  Finish finish = std::move(finish_);
  std::shared_ptr<Bridge> bridge = std::move(bridge_);
  onTimeout_ = nullptr;
  lock.unlock();
  if (bridge) bridge->Post([results, finish](Napi::Env env) { finish(env, *results); });
}

// -------------------------------------------------------------------------------- DeadlineTimer

DeadlineTimer::DeadlineTimer() : thread_([this] { Run(); }) {}

DeadlineTimer::~DeadlineTimer() {
  Stop(false);
}

void DeadlineTimer::Add(const std::shared_ptr<Batch>& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.emplace(batch->deadline(), batch);
  cv_.notify_one();
}

void DeadlineTimer::Stop(bool expirePending) {
  std::vector<std::shared_ptr<Batch>> expire;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& entry : pending_) {
      if (auto b = entry.second.lock()) expire.push_back(std::move(b));
    }
    pending_.clear();
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  if (expirePending) {
    for (auto& b : expire) b->Expire();
  }
}

void DeadlineTimer::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = pending_.begin();
    // Copy the deadline: the map node may be erased (Stop) while the lock is released in the wait.
    const SteadyClock::time_point due = first->first;
    if (SteadyClock::now() < due) {
      cv_.wait_until(lock, due);
      continue;
    }
    std::shared_ptr<Batch> batch = first->second.lock();
    pending_.erase(first);
    if (!batch) continue;
    lock.unlock();
    batch->Expire();  // no-op when the lanes already filled it
    lock.lock();
  }
}

// ----------------------------------------------------------------------------------------- Lane

Lane::Lane(std::shared_ptr<Library> lib, int index) : lib_(std::move(lib)), index_(index) {}

std::shared_ptr<Lane> Lane::Start(std::shared_ptr<Library> lib, int index) {
  auto lane = std::make_shared<Lane>(std::move(lib), index);
  // Detached on purpose: see the header. The thread keeps the lane (and the library) alive.
  std::thread([lane] { lane->Run(); }).detach();
  return lane;
}

bool Lane::Submit(Job job, SteadyClock::time_point deadline, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) {
    *why = "session closed";
    return false;
  }
  if (busy_ && SteadyClock::now() > busyDeadline_) {
    const char* fn = currentFn_.load(std::memory_order_relaxed);
    *why = std::string("device is suspect: ") + (fn[0] != '\0' ? fn : "an NVML call") +
           " has not returned since its deadline";
    return false;
  }
  if (queue_.size() >= kQueueLimit) {
    *why = "device queue full (" + std::to_string(kQueueLimit) + " calls waiting)";
    return false;
  }
  queue_.emplace_back(std::move(job), deadline);
  cv_.notify_one();
  return true;
}

bool Lane::Suspect(SteadyClock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_ && now > busyDeadline_;
}

std::string Lane::CurrentFn() {
  return currentFn_.load(std::memory_order_relaxed);
}

void Lane::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  queue_.clear();
  cv_.notify_one();
}

DeviceIdentity Lane::Identity() {
  std::lock_guard<std::mutex> lock(mu_);
  return identity_;
}

void Lane::SetIdentity(const DeviceIdentity& id) {
  std::lock_guard<std::mutex> lock(mu_);
  identity_ = id;
}

int Lane::Handle(abi::nvmlDevice_t* out) {
  if (handle_ == nullptr) {
    SetCurrentFn("nvmlDeviceGetHandleByIndex_v2");
    abi::nvmlDevice_t h = nullptr;
    int st = lib_->api().DeviceGetHandleByIndex(static_cast<unsigned>(index_), &h);
    SetCurrentFn("");
    if (st != abi::kSuccess) return st;
    handle_ = h;
  }
  *out = handle_;
  return abi::kSuccess;
}

void Lane::Run() {
  char name[16];
  if (index_ < 0) {
    snprintf(name, sizeof name, "nvml-system");
  } else {
    snprintf(name, sizeof name, "nvml-gpu%d", index_ % 1000);
  }
  pthread_setname_np(pthread_self(), name);
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) {
        lock.unlock();
        lib_.reset();  // only this thread uses lib_; releasing it lets nvmlShutdown run
        return;
      }
      job = std::move(queue_.front().first);
      busyDeadline_ = queue_.front().second;
      queue_.pop_front();
      busy_ = true;
    }
    try {
      job(*this);
    } catch (...) {
      // Jobs report failures through their batch; an escaped exception (bad_alloc) must not kill
      // the process from a detached thread.
    }
    job = nullptr;  // release captured batches before reporting idle
    SetCurrentFn("");
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
  }
}

}  // namespace navarch
