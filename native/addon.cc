// Module entry of the navarch NVML addon. Loading it never fails because NVML is missing: the
// library is opened per session (Session.open), which reports a typed failure instead.
#include <napi.h>

#include "devices.h"
#include "errors.h"
#include "flock.h"
#include "kmsg_reader.h"
#include "sd_notify.h"
#include "session.h"
#include "watcher.h"

namespace navarch {
namespace {

Napi::Value StatusNameJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "statusName(status: number)");
  return Napi::String::New(info.Env(), StatusName(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value EventMaskJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "eventMask(types: string[])");
  Napi::Array arr = info[0].As<Napi::Array>();
  uint64_t mask = 0;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    std::string name = arr.Get(i).ToString().Utf8Value();
    uint64_t bit = EventTypeBit(name);
    if (bit == 0) throw Napi::TypeError::New(env, "unknown NVML event type '" + name + "'");
    mask |= bit;
  }
  return Napi::Number::New(env, static_cast<double>(mask));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  // Runs before the instance data is finalized (worker termination, process exit): stop every
  // session's threads; bounded joins of the watchers, nothing waits on NVML itself.
  env.AddCleanupHook([data] {
    for (auto& weak : data->sessions) {
      if (auto core = weak.lock()) core->Teardown(true);
    }
    data->sessions.clear();
  });
  InitSession(env, exports, data);
  exports.Set("statusName", Napi::Function::New(env, StatusNameJs, "statusName"));
  exports.Set("eventMask", Napi::Function::New(env, EventMaskJs, "eventMask"));
  exports.Set("defaultEventMask", Napi::Number::New(env, static_cast<double>(DefaultWantedMask())));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  InitSdNotify(env, exports);
  InitFlock(env, exports);
  InitKmsgReader(env, exports);
  return exports;
}

}  // namespace
}  // namespace navarch

static Napi::Object InitNavarchNvml(Napi::Env env, Napi::Object exports) {
  return navarch::Init(env, exports);
}

NODE_API_MODULE(navarch_nvml, InitNavarchNvml)
