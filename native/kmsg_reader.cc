// The kernel-log reader thread (see kmsg_reader.h).
#include "kmsg_reader.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace navarch {
namespace {

constexpr size_t kInitialBuffer = 16 * 1024;  // a /dev/kmsg record is at most 8 KiB of text
constexpr size_t kMaxBuffer = 1024 * 1024;
constexpr int kPollSafetyMs = 1000;  // re-check even if a wake-up were missed
constexpr int kErrorPauseMs = 1000;  // after an unexpected read or poll error

std::string ErrnoCode(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    default: return "E" + std::to_string(err);
  }
}

}  // namespace

KmsgReaderCore::KmsgReaderCore(int fd, KmsgReaderLimits limits, std::shared_ptr<Bridge> bridge)
    : fd_(fd), limits_(limits), bridge_(std::move(bridge)) {}

KmsgReaderCore::~KmsgReaderCore() {
  Shutdown();
}

void SetKmsgReaderSelf(const std::shared_ptr<KmsgReaderCore>& core) {
  core->self_ = core;
}

bool KmsgReaderCore::Start() {
  wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeFd_ < 0) return false;
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    errno = e.code().value();
    return false;
  }
  return true;
}

void KmsgReaderCore::Shutdown() {
  std::lock_guard<std::mutex> lock(shutdownMu_);
  if (shutDown_) return;
  shutDown_ = true;
  stop_.store(true);
  if (wakeFd_ >= 0) {
    uint64_t one = 1;
    ssize_t w;
    do {
      w = write(wakeFd_, &one, sizeof one);
    } while (w < 0 && errno == EINTR);
  }
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (wakeFd_ >= 0) close(wakeFd_);
  wakeFd_ = -1;
}

bool KmsgReaderCore::Push(const char* data, size_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.records++;
  counters_.bytes += len;
  if (queue_.size() >= limits_.maxRecords || queuedBytes_ + len > limits_.maxBytes) {
    // JS has not taken records for a long while: drop the newest. The sequence gap tells JS how
    // many were lost (it raises the lost-records event), and the count is in the stats.
    counters_.dropped++;
    return false;
  }
  queue_.emplace_back(data, len);
  queuedBytes_ += len;
  if (queue_.size() > counters_.maxQueued) counters_.maxQueued = queue_.size();
  if (notified_) return false;
  notified_ = true;
  return true;
}

void KmsgReaderCore::Run() {
  std::vector<char> buf(kInitialBuffer);
  std::weak_ptr<KmsgReaderCore> weak = self_;
  auto notify = [this, weak] {
    bridge_->Post([weak](Napi::Env env) {
      if (auto core = weak.lock()) {
        if (core->onReadable) core->onReadable(env);
      }
    });
  };
  while (!stop_.load()) {
    int pauseMs = -1;  // -1: wait in poll for the descriptor
    bool mustNotify = false;
    for (;;) {
      ssize_t n = read(fd_, buf.data(), buf.size());
      if (n > 0) {
        if (Push(buf.data(), static_cast<size_t>(n))) mustNotify = true;
        // Tell JS at once about the first record of a burst, not after the whole burst is read.
        if (mustNotify) {
          notify();
          mustNotify = false;
        }
        if (stop_.load()) break;
        continue;
      }
      int err = n == 0 ? 0 : errno;
      if (err == EINTR) continue;
      if (err == EPIPE) {
        std::lock_guard<std::mutex> lock(mu_);
        counters_.overruns++;
        continue;  // the next read returns the oldest record still in the ring buffer
      }
      if (err == EINVAL && buf.size() < kMaxBuffer) {
        buf.resize(buf.size() * 4);  // a record longer than the buffer
        continue;
      }
      if (err == EAGAIN || err == EWOULDBLOCK || n == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        caughtUp_ = true;
        if (n == 0) pauseMs = 100;  // end of file (not a character device): no busy loop
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        counters_.readErrors++;
        counters_.lastErrno = err;
        caughtUp_ = true;
      }
      pauseMs = kErrorPauseMs;
      break;
    }
    if (stop_.load()) break;
    pollfd fds[2] = {{wakeFd_, POLLIN, 0}, {fd_, POLLIN, 0}};
    int rc = poll(fds, pauseMs < 0 ? 2 : 1, pauseMs < 0 ? kPollSafetyMs : pauseMs);
    if (rc < 0 && errno != EINTR) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        counters_.readErrors++;
        counters_.lastErrno = errno;
      }
      pollfd wake = {wakeFd_, POLLIN, 0};
      poll(&wake, 1, kErrorPauseMs);
    }
  }
}

std::vector<std::string> KmsgReaderCore::Take(size_t max, bool* idle) {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = queue_.size() < max ? queue_.size() : max;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    queuedBytes_ -= queue_.front().size();
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (queue_.empty()) notified_ = false;  // the next record posts a new notice
  *idle = queue_.empty() && caughtUp_;
  return out;
}

KmsgReaderCounters KmsgReaderCore::Counters() {
  std::lock_guard<std::mutex> lock(mu_);
  KmsgReaderCounters c = counters_;
  c.queued = queue_.size();
  return c;
}

namespace {

class KmsgReader : public Napi::ObjectWrap<KmsgReader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KmsgReader",
                       {InstanceMethod<&KmsgReader::TakeJs>("take"), InstanceMethod<&KmsgReader::StatsJs>("stats"),
                        InstanceMethod<&KmsgReader::StopJs>("stop")});
  }

  explicit KmsgReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KmsgReader>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
      throw Napi::TypeError::New(env,
                                 "new KmsgReader(fd: number, onReadable: () => void, limits?: {maxRecords, maxBytes})");
    }
    double raw = info[0].As<Napi::Number>().DoubleValue();
    if (!(raw >= 0 && raw <= 1 << 30) || raw != static_cast<double>(static_cast<int>(raw))) {
      throw Napi::TypeError::New(env, "KmsgReader: fd must be a non-negative integer");
    }
    KmsgReaderLimits limits;
    if (info.Length() >= 3 && info[2].IsObject()) {
      Napi::Object o = info[2].As<Napi::Object>();
      limits.maxRecords = LimitOf(env, o, "maxRecords", limits.maxRecords, 1, 1u << 24);
      limits.maxBytes = LimitOf(env, o, "maxBytes", limits.maxBytes, 1024, size_t{1} << 30);
    }
    int fd = fcntl(static_cast<int>(raw), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) ThrowErrno(env, "KmsgReader: cannot duplicate the descriptor", errno);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "KmsgReader: cannot make the descriptor non-blocking", err);
    }
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    bridge_ = Bridge::Create(env, "navarch-kmsg-reader", false);
    core_ = std::make_shared<KmsgReaderCore>(fd, limits, bridge_);
    SetKmsgReaderSelf(core_);
    core_->onReadable = [this](Napi::Env e) {
      Napi::HandleScope scope(e);
      if (!callback_.IsEmpty()) callback_.Call({});
    };
    if (!core_->Start()) {
      int err = errno;
      StopNative();
      ThrowErrno(env, "KmsgReader: cannot start the reader thread", err);
    }
    env_ = env;
    if (napi_add_env_cleanup_hook(env, &KmsgReader::Cleanup, this) == napi_ok) hookActive_ = true;
  }

  ~KmsgReader() override {
    if (hookActive_) napi_remove_env_cleanup_hook(env_, &KmsgReader::Cleanup, this);
    hookActive_ = false;
    StopNative();
  }

 private:
  static size_t LimitOf(Napi::Env env, Napi::Object o, const char* name, size_t dflt, size_t lo, size_t hi) {
    Napi::Value v = o.Get(name);
    if (v.IsUndefined()) return dflt;
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) {
      throw Napi::RangeError::New(env, std::string("KmsgReader: ") + name + " must be between " + std::to_string(lo) +
                                           " and " + std::to_string(hi));
    }
    return static_cast<size_t>(d);
  }

  [[noreturn]] static void ThrowErrno(Napi::Env env, const std::string& what, int err) {
    Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err));
    e.Set("code", Napi::String::New(env, ErrnoCode(err)));
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }

  // Env teardown (worker termination, process exit): stop and join the thread. No JS references are
  // touched here (napi calls that can throw are not allowed in a cleanup hook); the finalizer
  // releases the callback.
  static void Cleanup(void* arg) {
    auto* self = static_cast<KmsgReader*>(arg);
    self->hookActive_ = false;
    self->StopThread();
  }

  void StopThread() {
    if (core_) {
      core_->onReadable = nullptr;
      core_->Shutdown();
    }
    if (bridge_) bridge_->Close();
  }

  void StopNative() {
    StopThread();
    if (!callback_.IsEmpty()) callback_.Reset();
  }

  Napi::Value TakeJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t max = 256;
    if (info.Length() >= 1 && !info[0].IsUndefined()) {
      double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 1 && d <= 1 << 20))
        throw Napi::RangeError::New(env, "KmsgReader.take(max): max must be between 1 and 1048576");
      max = static_cast<size_t>(d);
    }
    bool idle = false;
    std::vector<std::string> recs = core_ ? core_->Take(max, &idle) : std::vector<std::string>{};
    Napi::Array arr = Napi::Array::New(env, recs.size());
    for (size_t i = 0; i < recs.size(); ++i) {
      arr.Set(static_cast<uint32_t>(i), Napi::String::New(env, recs[i].data(), recs[i].size()));
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("records", arr);
    out.Set("idle", Napi::Boolean::New(env, idle));
    return out;
  }

  Napi::Value StatsJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    KmsgReaderCounters c = core_ ? core_->Counters() : KmsgReaderCounters{};
    Napi::Object o = Napi::Object::New(env);
    o.Set("records", Napi::Number::New(env, static_cast<double>(c.records)));
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(c.bytes)));
    o.Set("overruns", Napi::Number::New(env, static_cast<double>(c.overruns)));
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(c.dropped)));
    o.Set("readErrors", Napi::Number::New(env, static_cast<double>(c.readErrors)));
    o.Set("lastErrno", Napi::Number::New(env, c.lastErrno));
    o.Set("queued", Napi::Number::New(env, static_cast<double>(c.queued)));
    o.Set("maxQueued", Napi::Number::New(env, static_cast<double>(c.maxQueued)));
    return o;
  }

  Napi::Value StopJs(const Napi::CallbackInfo& info) {
    if (hookActive_) napi_remove_env_cleanup_hook(env_, &KmsgReader::Cleanup, this);
    hookActive_ = false;
    StopNative();
    return info.Env().Undefined();
  }

  Napi::FunctionReference callback_;
  std::shared_ptr<Bridge> bridge_;
  std::shared_ptr<KmsgReaderCore> core_;
  napi_env env_ = nullptr;
  bool hookActive_ = false;
};

}  // namespace

void InitKmsgReader(Napi::Env env, Napi::Object exports) {
  exports.Set("KmsgReader", KmsgReader::Define(env));
}

}  // namespace navarch
