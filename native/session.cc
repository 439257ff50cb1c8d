// Session and Watch objects (see session.h). Promise settlement always happens on the JS thread via
// the session's Bridge; native threads only fill Batch slots.
#include "session.h"

#include <chrono>
#include <exception>
#include <thread>

#include "devices.h"

namespace navarch {

namespace {

constexpr unsigned kMaxTimeoutMs = 600000;

unsigned TimeoutArg(const Napi::CallbackInfo& info, size_t i, unsigned fallback, const char* what) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return fallback;
  if (!info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number of milliseconds");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 1 && v <= kMaxTimeoutMs)) {
    throw Napi::RangeError::New(
        info.Env(), std::string(what) + " must be between 1 and 600000 ms, got " + info[i].ToString().Utf8Value());
  }
  return static_cast<unsigned>(v);
}

SteadyClock::time_point DeadlineIn(unsigned ms) {
  return SteadyClock::now() + std::chrono::milliseconds(ms);
}

Failure Closed(const char* fn) {
  return Failure::Own("NVML_CLOSED", fn, "the NVML session is closed");
}

Failure TimeoutFailure(const std::shared_ptr<Lane>& lane, int index, unsigned ms) {
  std::string fn = lane ? lane->CurrentFn() : "";
  std::string who = index < 0 ? std::string("NVML") : "GPU " + std::to_string(index);
  return Failure::Own("NVML_CALL_TIMEOUT", fn,
                      who + ": " + (fn.empty() ? std::string("the call") : fn) + " did not return within " +
                          std::to_string(ms) + " ms; the device is suspect until it returns");
}

Napi::Value Rejected(Napi::Env env, const Failure& f) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(f.ToError(env).Value());
  return d.Promise();
}

Napi::Value Resolved(Napi::Env env, Napi::Value v) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Resolve(v);
  return d.Promise();
}

}  // namespace

// ============================================================================================ Watch

class Watch : public Napi::ObjectWrap<Watch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeWatch",
                       {InstanceMethod<&Watch::Stop>("stop"), InstanceMethod<&Watch::Stats>("stats"),
                        InstanceMethod<&Watch::RefJs>("ref"), InstanceMethod<&Watch::UnrefJs>("unref")});
  }

  explicit Watch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watch>(info) {}

  ~Watch() override {
    if (core_) {
      core_->jsSide = nullptr;
      if (!finished_) {
        core_->RequestStop();
        core_->JoinBounded();
      }
    }
  }

  void Attach(std::shared_ptr<WatchCore> core, Napi::Function onEvents, Napi::Function onDropped) {
    core_ = std::move(core);
    core_->jsSide = this;
    onEvents_ = Napi::Persistent(onEvents);
    if (!onDropped.IsEmpty()) onDropped_ = Napi::Persistent(onDropped);
    Ref();  // keep this object (and its callbacks) alive while the watch runs
  }

  /** Any thread: once the watcher thread is joined (or detached), finish on the JS thread. */
  static void PostFinish(const std::shared_ptr<WatchCore>& core) {
    std::shared_ptr<WatchCore> c = core;
    core->bridge()->Post([c](Napi::Env env) { Finish(env, c); });
  }

  static void Deliver(Napi::Env env, WatchCore& core) {
    uint64_t droppedSince = 0;
    std::vector<EventRecord> events = core.queue().Drain(&droppedSince);
    auto* self = static_cast<Watch*>(core.jsSide);
    uint64_t n = 0;
    for (const EventRecord& ev : events) n += ev.count;
    core.delivered += n;
    if (self == nullptr || self->onEvents_.IsEmpty()) return;
    Napi::HandleScope scope(env);
    if (!events.empty()) {
      Napi::Array arr = Napi::Array::New(env, events.size());
      for (size_t i = 0; i < events.size(); ++i) arr.Set(static_cast<uint32_t>(i), EventToJs(env, events[i]));
      self->onEvents_.Call({arr});
    }
    if (droppedSince > 0 && !self->onDropped_.IsEmpty()) {
      self->onDropped_.Call({Napi::Number::New(env, static_cast<double>(droppedSince)),
                             Napi::Number::New(env, static_cast<double>(core.queue().dropped()))});
    }
  }

  bool finished() const { return finished_; }

 private:
  static void Finish(Napi::Env env, const std::shared_ptr<WatchCore>& core) {
    auto* self = static_cast<Watch*>(core->jsSide);
    if (self != nullptr && self->finished_) return;
    // Flush what the thread queued before it stopped. A throwing callback (raw binding; the facade
    // guards its callbacks) must not skip the cleanup below: stop() would never settle and the
    // watch would stay pinned with the loop held. The exception is rethrown afterwards.
    std::exception_ptr thrown;
    try {
      Deliver(env, *core);
    } catch (...) {
      thrown = std::current_exception();
    }
    core->bridge()->Close();
    if (self == nullptr) {
      if (thrown) std::rethrow_exception(thrown);
      return;
    }
    self->finished_ = true;
    if (self->holding_) core->bridge()->Unhold();
    self->holding_ = false;
    for (auto& d : self->stopWaiters_) d.Resolve(env.Undefined());
    self->stopWaiters_.clear();
    // Drop the callbacks: a persistent reference to a closure that (through its context) reaches
    // this object would otherwise keep both alive forever.
    self->onEvents_.Reset();
    self->onDropped_.Reset();
    self->Unref();
    if (thrown) std::rethrow_exception(thrown);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto d = Napi::Promise::Deferred::New(env);
    if (finished_ || !core_) {
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    stopWaiters_.push_back(d);
    if (!stopping_) {
      stopping_ = true;
      core_->RequestStop();
      core_->bridge()->Hold();  // keep the loop alive until stop() settles
      holding_ = true;
      std::shared_ptr<WatchCore> c = core_;
      std::thread([c] {
        c->JoinBounded();
        PostFinish(c);
      }).detach();
    }
    return d.Promise();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!core_) return o;
    o.Set("delivered", static_cast<double>(core_->delivered));
    o.Set("merged", static_cast<double>(core_->queue().merged()));
    o.Set("dropped", static_cast<double>(core_->queue().dropped()));
    std::vector<Registration> regs = core_->registrations();
    Napi::Array arr = Napi::Array::New(env, regs.size());
    for (size_t i = 0; i < regs.size(); ++i) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("deviceIndex", regs[i].deviceIndex);
      std::vector<std::string> names = EventTypeNames(regs[i].mask);
      Napi::Array types = Napi::Array::New(env, names.size());
      for (size_t j = 0; j < names.size(); ++j) types.Set(static_cast<uint32_t>(j), names[j]);
      r.Set("types", types);
      r.Set("error", regs[i].error ? Napi::Value(regs[i].error->ToInfo(env)) : env.Null());
      arr.Set(static_cast<uint32_t>(i), r);
    }
    o.Set("registered", arr);
    o.Set("running", !finished_ && !stopping_);
    return o;
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    if (core_ && !finished_) core_->bridge()->SetRef(true);
    return info.Env().Undefined();
  }
  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    if (core_ && !finished_) core_->bridge()->SetRef(false);
    return info.Env().Undefined();
  }

  std::shared_ptr<WatchCore> core_;
  Napi::FunctionReference onEvents_;
  Napi::FunctionReference onDropped_;
  std::vector<Napi::Promise::Deferred> stopWaiters_;
  bool stopping_ = false;
  bool holding_ = false;
  bool finished_ = false;
};

void DeliverWatchBatch(Napi::Env env, WatchCore& core) {
  Watch::Deliver(env, core);
}

// ========================================================================================== Session

void SessionCore::Teardown(bool joinWatches) {
  std::shared_ptr<Library> l;
  std::vector<std::shared_ptr<Lane>> ls;
  std::vector<std::shared_ptr<WatchCore>> ws;
  {
    std::lock_guard<std::mutex> lock(mu);
    state = State::Closed;
    l = std::move(lib);
    ls = std::move(lanes);
    if (systemLane) ls.push_back(std::move(systemLane));
    ws = std::move(watches);
  }
  for (auto& w : ws) w->RequestStop();
  for (auto& lane : ls) lane->Stop();
  if (timer) timer->Stop(false);
  // Release the session's threadsafe function (a collected session would otherwise keep it, and its
  // uv handle, until the env goes away). Nothing is pending on it: the session is pinned while a
  // promise is, and at env teardown nothing will run anyway. Idempotent after close().
  if (bridge) bridge->Close();
  if (joinWatches) {
    for (auto& w : ws) w->JoinBounded();
  }
  // The last library reference may run nvmlShutdown, which can hang on a wedged driver: never on
  // the JS thread. Watchers not joined above are joined (bounded) there too, then finished on the
  // JS thread (callbacks released, the watch object unpinned; a no-op once the env is gone).
  std::thread([l, ws]() mutable {
    for (auto& w : ws) {
      w->JoinBounded();
      Watch::PostFinish(w);
    }
    ws.clear();
    l.reset();
  }).detach();
}

class Session : public Napi::ObjectWrap<Session> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeSession",
        {InstanceMethod<&Session::Open>("open"), InstanceMethod<&Session::DeviceCount>("deviceCount"),
         InstanceMethod<&Session::System>("system"), InstanceMethod<&Session::Devices>("devices"),
         InstanceMethod<&Session::Snapshot>("snapshot"), InstanceMethod<&Session::SuspectDevices>("suspectDevices"),
         InstanceMethod<&Session::WatchJs>("watch"), InstanceMethod<&Session::Close>("close"),
         InstanceAccessor<&Session::LibraryPath>("libraryPath")});
  }

  explicit Session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Session>(info) {
    Napi::Env env = info.Env();
    core_ = std::make_shared<SessionCore>();
    core_->bridge = Bridge::Create(env, "navarch:nvml-session", false);
    core_->timer = std::make_unique<DeadlineTimer>();
    auto* data = env.GetInstanceData<AddonData>();
    auto& list = data->sessions;
    list.erase(
        std::remove_if(list.begin(), list.end(), [](const std::weak_ptr<SessionCore>& w) { return w.expired(); }),
        list.end());
    list.push_back(core_);
  }

  ~Session() override {
    if (core_ && core_->state != SessionCore::State::Closed) core_->Teardown(false);
  }

 private:
  std::shared_ptr<Batch> NewBatch(Napi::Env env, size_t slots, unsigned timeoutMs, Batch::Finish finish,
                                  Batch::TimeoutFill onTimeout) {
    // While a promise is pending this object must not be collected (its teardown would strand the
    // promise): pin it until the finish task ran on the JS thread. The finish task only runs while
    // the env is alive, so `self` is valid there.
    Session* self = this;
    Ref();
    Batch::Finish pinned = [self, finish = std::move(finish)](Napi::Env e, std::vector<std::unique_ptr<Payload>>& r) {
      self->Unref();
      finish(e, r);
    };
    auto batch =
        std::make_shared<Batch>(slots, DeadlineIn(timeoutMs), core_->bridge, std::move(pinned), std::move(onTimeout));
    core_->bridge->Hold();  // released by the finish task
    core_->timer->Add(batch);
    return batch;
  }

  bool IsOpen() {
    std::lock_guard<std::mutex> lock(core_->mu);
    return core_->state == SessionCore::State::Open;
  }

  // open(libraryPath: string, callTimeoutMs: number): Promise<number /* device count */>
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString())
      throw Napi::TypeError::New(env, "open(libraryPath: string, callTimeoutMs?: number)");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    unsigned timeoutMs = TimeoutArg(info, 1, 5000, "callTimeoutMs");
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->state != SessionCore::State::Idle)
        return Rejected(env, Failure::Own("NVML_CLOSED", "open", "session already opened"));
      core_->state = SessionCore::State::Opening;
      core_->callTimeoutMs = timeoutMs;
    }
    auto deferred = Napi::Promise::Deferred::New(env);
    std::shared_ptr<SessionCore> core = core_;
    auto batch = NewBatch(
        env, 1, timeoutMs,
        [deferred, core](Napi::Env e, std::vector<std::unique_ptr<Payload>>& r) {
          core->bridge->Unhold();
          if (const Failure* f = r[0]->AsFailure()) {
            std::lock_guard<std::mutex> lock(core->mu);
            if (core->state == SessionCore::State::Opening) core->state = SessionCore::State::Idle;
            deferred.Reject(f->ToError(e).Value());
          } else {
            deferred.Resolve(r[0]->ToJs(e));
          }
        },
        [timeoutMs](size_t) -> std::unique_ptr<Payload> {
          return std::make_unique<FailurePayload>(
              Failure::Own("NVML_CALL_TIMEOUT", "nvmlInit_v2",
                           "opening NVML did not finish within " + std::to_string(timeoutMs) + " ms"));
        });
    std::thread([core, batch, path] {
      Failure failure;
      std::shared_ptr<Library> lib = Library::Open(path, &failure);
      std::unique_ptr<Payload> result;
      if (!lib) {
        result = std::make_unique<FailurePayload>(failure);
      } else {
        unsigned n = 0;
        int st = lib->api().DeviceGetCount(&n);
        if (st != abi::kSuccess) {
          result = std::make_unique<FailurePayload>(lib->Fail(st, "nvmlDeviceGetCount_v2"));
        } else {
          std::lock_guard<std::mutex> lock(core->mu);
          if (core->state == SessionCore::State::Opening && !batch->Settled()) {
            core->lib = lib;
            core->libraryPath = lib->path();
            core->systemLane = Lane::Start(lib, -1);
            for (unsigned i = 0; i < n; ++i) {
              core->lanes.push_back(Lane::Start(lib, static_cast<int>(i)));
              // Learn UUID/PCI ids early, so a GPU lost later is still reported with its UUID.
              std::string ignored;
              core->lanes.back()->Submit(&WarmIdentity, DeadlineIn(core->callTimeoutMs), &ignored);
            }
            core->activeCount = n;
            core->state = SessionCore::State::Open;
            result = std::make_unique<NumberPayload>(n);
          } else {
            result = std::make_unique<FailurePayload>(Closed("open"));
          }
        }
      }
      batch->Fill(0, std::move(result));
      // If the library was not installed, dropping it here runs nvmlShutdown on this thread.
    }).detach();
    return deferred.Promise();
  }

  Napi::Value LibraryPath(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(core_->mu);
    return Napi::String::New(info.Env(), core_->libraryPath);
  }

  /** Run one query on the system lane; resolves its payload or rejects its FailurePayload. */
  Napi::Value SystemLaneCall(Napi::Env env, unsigned timeoutMs, const char* fn,
                             std::unique_ptr<Payload> (*query)(Lane&), bool isCount) {
    std::shared_ptr<Lane> lane;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->state != SessionCore::State::Open) return Rejected(env, Closed(fn));
      lane = core_->systemLane;
    }
    auto deferred = Napi::Promise::Deferred::New(env);
    std::shared_ptr<SessionCore> core = core_;
    auto batch = NewBatch(
        env, 1, timeoutMs,
        [deferred, core, isCount](Napi::Env e, std::vector<std::unique_ptr<Payload>>& r) {
          core->bridge->Unhold();
          if (const Failure* f = r[0]->AsFailure()) {
            deferred.Reject(f->ToError(e).Value());
            return;
          }
          if (isCount) {
            auto n = static_cast<unsigned>(static_cast<NumberPayload*>(r[0].get())->value);
            std::lock_guard<std::mutex> lock(core->mu);
            if (core->state == SessionCore::State::Open) {
              for (size_t i = core->lanes.size(); i < n; ++i) {
                core->lanes.push_back(Lane::Start(core->lib, static_cast<int>(i)));
                std::string ignored;
                core->lanes.back()->Submit(&WarmIdentity, DeadlineIn(core->callTimeoutMs), &ignored);
              }
              core->activeCount = n;
            }
          }
          deferred.Resolve(r[0]->ToJs(e));
        },
        [lane, timeoutMs](size_t) -> std::unique_ptr<Payload> {
          return std::make_unique<FailurePayload>(TimeoutFailure(lane, -1, timeoutMs));
        });
    std::string why;
    bool ok = lane->Submit(
        [batch, query](Lane& l) {
          if (!batch->Settled()) batch->Fill(0, query(l));
        },
        batch->deadline(), &why);
    if (!ok)
      batch->Fill(
          0, std::make_unique<FailurePayload>(Failure::Own("NVML_CALL_TIMEOUT", lane->CurrentFn(), "NVML: " + why)));
    return deferred.Promise();
  }

  Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
    return SystemLaneCall(info.Env(), TimeoutArg(info, 0, core_->callTimeoutMs, "timeoutMs"), "nvmlDeviceGetCount_v2",
                          &QueryCount, true);
  }

  Napi::Value System(const Napi::CallbackInfo& info) {
    return SystemLaneCall(info.Env(), TimeoutArg(info, 0, core_->callTimeoutMs, "timeoutMs"), "system", &QuerySystem,
                          false);
  }

  using TimeoutMaker = std::unique_ptr<Payload> (*)(int, const DeviceIdentity&, const Failure&);

  /** One job per GPU lane, settled together (or at the deadline) into one array. */
  Napi::Value PerDevice(Napi::Env env, unsigned timeoutMs, const char* fn, std::unique_ptr<Payload> (*query)(Lane&),
                        TimeoutMaker onTimeout) {
    std::vector<std::shared_ptr<Lane>> lanes;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->state != SessionCore::State::Open) return Rejected(env, Closed(fn));
      lanes.assign(core_->lanes.begin(), core_->lanes.begin() + core_->activeCount);
    }
    if (lanes.empty()) return Resolved(env, Napi::Array::New(env, 0));
    auto deferred = Napi::Promise::Deferred::New(env);
    std::shared_ptr<SessionCore> core = core_;
    auto batch = NewBatch(
        env, lanes.size(), timeoutMs,
        [deferred, core](Napi::Env e, std::vector<std::unique_ptr<Payload>>& r) {
          core->bridge->Unhold();
          Napi::Array arr = Napi::Array::New(e, r.size());
          for (size_t i = 0; i < r.size(); ++i) arr.Set(static_cast<uint32_t>(i), r[i]->ToJs(e));
          deferred.Resolve(arr);
        },
        [lanes, timeoutMs, onTimeout](size_t i) {
          return onTimeout(static_cast<int>(i), lanes[i]->Identity(),
                           TimeoutFailure(lanes[i], static_cast<int>(i), timeoutMs));
        });
    for (size_t i = 0; i < lanes.size(); ++i) {
      std::string why;
      bool ok = lanes[i]->Submit(
          [batch, i, query](Lane& l) {
            if (!batch->Settled()) batch->Fill(i, query(l));
          },
          batch->deadline(), &why);
      if (!ok) {
        batch->Fill(i, onTimeout(static_cast<int>(i), lanes[i]->Identity(),
                                 Failure::Own("NVML_CALL_TIMEOUT", lanes[i]->CurrentFn(),
                                              "GPU " + std::to_string(i) + ": " + why)));
      }
    }
    return deferred.Promise();
  }

  Napi::Value Devices(const Napi::CallbackInfo& info) {
    return PerDevice(info.Env(), TimeoutArg(info, 0, core_->callTimeoutMs, "timeoutMs"), "devices", &QueryDeviceInfo,
                     &DeviceInfoTimeout);
  }

  Napi::Value Snapshot(const Napi::CallbackInfo& info) {
    return PerDevice(info.Env(), TimeoutArg(info, 0, core_->callTimeoutMs, "timeoutMs"), "snapshot", &QuerySnapshot,
                     &SnapshotTimeout);
  }

  Napi::Value SuspectDevices(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<int> out;
    auto now = SteadyClock::now();
    std::vector<std::shared_ptr<Lane>> lanes;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      lanes = core_->lanes;
    }
    for (auto& l : lanes) {
      if (l->Suspect(now)) out.push_back(l->index());
    }
    Napi::Array arr = Napi::Array::New(env, out.size());
    for (size_t i = 0; i < out.size(); ++i) arr.Set(static_cast<uint32_t>(i), out[i]);
    return arr;
  }

  // watch(onEvents, onDropped|null, waitTimeoutMs, queueCapacity, ref, wantedMask|null): NativeWatch
  Napi::Value WatchJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "watch(onEvents: function, ...)");
    Napi::Function onDropped;
    if (info.Length() > 1 && info[1].IsFunction()) onDropped = info[1].As<Napi::Function>();
    WatchOptions opts;
    opts.waitTimeoutMs = TimeoutArg(info, 2, 500, "waitTimeoutMs");
    if (info.Length() > 3 && info[3].IsNumber()) {
      double cap = info[3].As<Napi::Number>().DoubleValue();
      if (!(cap >= 1 && cap <= 1048576))
        throw Napi::RangeError::New(env, "queueCapacity must be between 1 and 1048576");
      opts.queueCapacity = static_cast<size_t>(cap);
    }
    opts.ref = info.Length() > 4 && info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
    opts.wantedMask = DefaultWantedMask();
    if (info.Length() > 5 && info[5].IsNumber())
      opts.wantedMask = static_cast<uint64_t>(info[5].As<Napi::Number>().Int64Value());
    std::shared_ptr<Library> lib;
    unsigned count;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->state != SessionCore::State::Open) throw Closed("watch").ToError(env);
      lib = core_->lib;
      count = core_->activeCount;
    }
    auto bridge = Bridge::Create(env, "navarch:nvml-events", opts.ref);
    auto wcore = std::make_shared<WatchCore>(lib, count, opts, bridge);
    auto* data = env.GetInstanceData<AddonData>();
    Napi::Object obj = data->watchCtor.New({});
    Watch* w = Watch::Unwrap(obj);
    w->Attach(wcore, info[0].As<Napi::Function>(), onDropped);
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      auto& ws = core_->watches;
      ws.erase(std::remove_if(ws.begin(), ws.end(),
                              [](const std::shared_ptr<WatchCore>& c) { return !c->bridge()->IsOpen(); }),
               ws.end());
      ws.push_back(wcore);
    }
    wcore->Start();
    return obj;
  }

  // close(): Promise<boolean>  (true: nvmlShutdown ran; false: a call is still stuck, deferred)
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Library> lib;
    std::vector<std::shared_ptr<Lane>> lanes;
    std::vector<std::shared_ptr<WatchCore>> watches;
    unsigned bound;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->state == SessionCore::State::Closed) return Resolved(env, Napi::Boolean::New(env, true));
      core_->state = SessionCore::State::Closed;
      lib = std::move(core_->lib);
      lanes = std::move(core_->lanes);
      if (core_->systemLane) lanes.push_back(std::move(core_->systemLane));
      watches = std::move(core_->watches);
      bound = core_->callTimeoutMs;
    }
    for (auto& w : watches) w->RequestStop();
    // In-flight batches settle now (as timed out). Before the lanes stop: Lane::Stop drops queued
    // jobs, and a batch owned only by those jobs would vanish unsettled (the timer holds weak refs).
    core_->timer->Stop(true);
    for (auto& l : lanes) l->Stop();
    lanes.clear();
    auto deferred = Napi::Promise::Deferred::New(env);
    std::shared_ptr<SessionCore> core = core_;
    core->bridge->Hold();
    Ref();  // pinned until the close promise settles (see NewBatch)
    Session* self = this;
    std::thread([lib, watches, core, deferred, bound, self]() mutable {
      for (auto& w : watches) {
        w->JoinBounded();
        Watch::PostFinish(w);
      }
      watches.clear();
      // Wait (bounded) for lane threads to let go of the library, so nvmlShutdown really runs
      // before close() resolves and the next open() starts from a fresh NVML reference count.
      auto until = SteadyClock::now() + std::chrono::milliseconds(bound);
      while (lib && lib.use_count() > 1 && SteadyClock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      bool clean = !lib || lib.use_count() == 1;
      lib.reset();
      core->bridge->Post([core, deferred, clean, self](Napi::Env e) {
        self->Unref();
        core->bridge->Unhold();
        deferred.Resolve(Napi::Boolean::New(e, clean));
        core->bridge->Close();
      });
    }).detach();
    return deferred.Promise();
  }

  std::shared_ptr<SessionCore> core_;
};

void InitSession(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function session = Session::Define(env);
  Napi::Function watch = Watch::Define(env);
  data->sessionCtor = Napi::Persistent(session);
  data->watchCtor = Napi::Persistent(watch);
  exports.Set("Session", session);
}

}  // namespace navarch
