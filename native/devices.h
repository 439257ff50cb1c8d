// Inventory and telemetry: the NVML queries for one device (run on that device's lane thread) and
// the payloads they produce (converted to the facade's shapes on the JS thread).
#pragma once
#include <napi.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errors.h"
#include "executor.h"

namespace navarch {

/** A rejected single-value operation (system(), open()). */
struct FailurePayload : Payload {
  Failure failure;
  explicit FailurePayload(Failure f) : failure(std::move(f)) {}
  Napi::Value ToJs(Napi::Env env) const override { return failure.ToInfo(env); }
  const Failure* AsFailure() const override { return &failure; }
};

struct NumberPayload : Payload {
  double value;
  explicit NumberPayload(double v) : value(v) {}
  Napi::Value ToJs(Napi::Env env) const override { return Napi::Number::New(env, value); }
};

/** system(): driver, NVML and CUDA driver versions (each null when unavailable). */
std::unique_ptr<Payload> QuerySystem(Lane& lane);
/** nvmlDeviceGetCount_v2 -> NumberPayload or FailurePayload. */
std::unique_ptr<Payload> QueryCount(Lane& lane);
/** DeviceInfo of the lane's GPU (a lost GPU is listed with `error`). */
std::unique_ptr<Payload> QueryDeviceInfo(Lane& lane);
/** DeviceSnapshot of the lane's GPU ({ok:true, telemetry} or {ok:false, error}). */
std::unique_ptr<Payload> QuerySnapshot(Lane& lane);

/** Learn and cache the lane GPU's handle and identity (run once after open; errors are ignored). */
void WarmIdentity(Lane& lane);

/** What a device slot holds when its lane missed the deadline. */
std::unique_ptr<Payload> DeviceInfoTimeout(int index, const DeviceIdentity& id, const Failure& f);
std::unique_ptr<Payload> SnapshotTimeout(int index, const DeviceIdentity& id, const Failure& f);

/** "12.4" from 12040. */
std::string CudaVersionString(int v);

}  // namespace navarch
