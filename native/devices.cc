// Device enumeration, identity and telemetry queries. Every getter result is classified:
// SUCCESS -> value; GPU_IS_LOST -> the whole device entry fails; anything else (NOT_SUPPORTED,
// FUNCTION_NOT_FOUND for an entry point an older driver lacks, NO_PERMISSION...) -> null.
#include "devices.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace navarch {

namespace {

using abi::nvmlDevice_t;
using OptNum = std::optional<double>;
using OptBool = std::optional<bool>;

/** Thrown inside a device query when the GPU is lost: the entry becomes {ok:false}. */
struct DeviceFatal {
  Failure failure;
};

Napi::Value Num(Napi::Env env, const OptNum& v) {
  return v ? Napi::Value(Napi::Number::New(env, *v)) : env.Null();
}
Napi::Value Bool(Napi::Env env, const OptBool& v) {
  return v ? Napi::Value(Napi::Boolean::New(env, *v)) : env.Null();
}
Napi::Value Str(Napi::Env env, const std::optional<std::string>& v) {
  return v ? Napi::Value(Napi::String::New(env, *v)) : env.Null();
}

/** Calls an optional entry point. A NULL pointer is FUNCTION_NOT_FOUND. */
template <typename Fn, typename... Args>
int Call(Lane& lane, Fn fn, const char* name, Args... args) {
  if (fn == nullptr) return abi::kErrFunctionNotFound;
  lane.SetCurrentFn(name);
  int st = fn(args...);
  lane.SetCurrentFn("");
  if (st == abi::kErrGpuIsLost) throw DeviceFatal{lane.lib().Fail(st, name)};
  return st;
}

#define NV_CALL(lane, member, ...) Call(lane, (lane).api().member, "nvml" #member, __VA_ARGS__)

OptNum UInt(int st, unsigned v) {
  return st == abi::kSuccess ? OptNum(static_cast<double>(v)) : std::nullopt;
}

std::string Trimmed(const char* buf, size_t cap) {
  return std::string(buf, strnlen(buf, cap));
}

std::string ShortBusId(const abi::nvmlPciInfo_t& pci) {
  char buf[48];
  snprintf(buf, sizeof buf, "%04x:%02x:%02x", pci.domain, pci.bus, pci.device);
  return buf;
}

std::string LongBusId(const abi::nvmlPciInfo_t& pci) {
  std::string s = Trimmed(pci.busId, sizeof pci.busId);
  if (!s.empty()) return s;
  char buf[48];
  snprintf(buf, sizeof buf, "%08X:%02X:%02X.0", pci.domain, pci.bus, pci.device);
  return buf;
}

/**
 * Handle plus identity (UUID, PCI ids), cached on the lane. Throws DeviceFatal when the GPU cannot
 * be opened or identified.
 */
nvmlDevice_t Identify(Lane& lane, DeviceIdentity* out) {
  nvmlDevice_t h = nullptr;
  int st = lane.Handle(&h);
  if (st != abi::kSuccess) throw DeviceFatal{lane.lib().Fail(st, "nvmlDeviceGetHandleByIndex_v2")};
  DeviceIdentity id = lane.Identity();
  if (!id.known) {
    char uuid[abi::kUuidBufferSize] = {0};
    st = NV_CALL(lane, DeviceGetUUID, h, uuid, abi::kUuidBufferSize);
    if (st != abi::kSuccess) throw DeviceFatal{lane.lib().Fail(st, "nvmlDeviceGetUUID")};
    id.uuid = Trimmed(uuid, sizeof uuid);
    abi::nvmlPciInfo_t pci;
    memset(&pci, 0, sizeof pci);
    // Named explicitly: NV_CALL would report "nvmlDeviceGetPciInfo", not the _v3 symbol it calls.
    st = Call(lane, lane.api().DeviceGetPciInfo, "nvmlDeviceGetPciInfo_v3", h, &pci);
    if (st != abi::kSuccess) throw DeviceFatal{lane.lib().Fail(st, "nvmlDeviceGetPciInfo_v3")};
    id.pciBusId = LongBusId(pci);
    id.pciBusIdShort = ShortBusId(pci);
    id.known = true;
    lane.SetIdentity(id);
  }
  *out = id;
  return h;
}

// ----------------------------------------------------------------------------------- payloads

struct SystemPayload : Payload {
  std::optional<std::string> driver, nvml, cuda;
  Napi::Value ToJs(Napi::Env env) const override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("driverVersion", Str(env, driver));
    o.Set("nvmlVersion", Str(env, nvml));
    o.Set("cudaDriverVersion", Str(env, cuda));
    return o;
  }
};

struct DeviceInfoPayload : Payload {
  int index = 0;
  DeviceIdentity id;
  std::string name;
  std::optional<std::string> serial;
  OptNum minor, memTotal;
  std::optional<Failure> error;
  Napi::Value ToJs(Napi::Env env) const override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", index);
    o.Set("uuid", id.uuid);
    o.Set("name", name);
    o.Set("serial", Str(env, serial));
    o.Set("pciBusId", id.pciBusId);
    o.Set("pciBusIdShort", id.pciBusIdShort);
    o.Set("minorNumber", Num(env, minor));
    o.Set("memoryTotalBytes", Num(env, memTotal));
    o.Set("error", error ? Napi::Value(error->ToInfo(env)) : env.Null());
    return o;
  }
};

struct NvLink {
  unsigned link;
  bool active;
  OptNum replay, recovery, crcFlit, crcData;
};

/** nvmlDeviceGetGpuFabricInfoV as read (v3, or v2 on drivers before 580). */
struct Fabric {
  unsigned version;  // 3 or 2
  unsigned state;
  int status;
  unsigned cliqueId;
  std::string clusterUuid;  // 32 hex digits
  unsigned healthMask;
  std::optional<unsigned> healthSummary;  // v3 only
};

struct Telemetry {
  OptNum temperatureC, powerUsageW, powerLimitW, gpuUtil, memUtil, memUsed, memTotal, smClock, memClock, clockReasons,
      pstate, fan;
  OptBool persistence, eccCurrent, eccPending;
  OptNum eccVolCorr, eccVolUnc, eccAggCorr, eccAggUnc, retiredSbe, retiredDbe;
  OptBool retiredPending;
  OptNum remapCorr, remapUnc;
  OptBool remapPending, remapFailure;
  OptNum pcieReplay, pcieGenCur, pcieGenMax, pcieWidthCur, pcieWidthMax;
  std::optional<std::vector<NvLink>> nvlinks;
  std::optional<Fabric> fabric;
  OptNum memTemp, energyMj, encUtil, decUtil, pcieTxKBps, pcieRxKBps, nvlinkTxKiB, nvlinkRxKiB;
};

struct SnapshotPayload : Payload {
  int index = 0;
  std::string uuid;
  double takenAtMs = 0;
  std::optional<Failure> error;
  Telemetry t;
  Napi::Value ToJs(Napi::Env env) const override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", index);
    o.Set("uuid", uuid);
    o.Set("ok", !error);
    if (error) {
      o.Set("error", error->ToInfo(env));
    } else {
      Napi::Object x = Napi::Object::New(env);
      x.Set("temperatureC", Num(env, t.temperatureC));
      x.Set("powerUsageW", Num(env, t.powerUsageW));
      x.Set("powerLimitW", Num(env, t.powerLimitW));
      x.Set("gpuUtilPercent", Num(env, t.gpuUtil));
      x.Set("memUtilPercent", Num(env, t.memUtil));
      x.Set("memoryUsedBytes", Num(env, t.memUsed));
      x.Set("memoryTotalBytes", Num(env, t.memTotal));
      x.Set("smClockMhz", Num(env, t.smClock));
      x.Set("memClockMhz", Num(env, t.memClock));
      x.Set("clockEventReasons", Num(env, t.clockReasons));
      x.Set("performanceState", Num(env, t.pstate));
      x.Set("fanSpeedPercent", Num(env, t.fan));
      x.Set("persistenceMode", Bool(env, t.persistence));
      x.Set("eccModeCurrent", Bool(env, t.eccCurrent));
      x.Set("eccModePending", Bool(env, t.eccPending));
      x.Set("eccVolatileCorrected", Num(env, t.eccVolCorr));
      x.Set("eccVolatileUncorrected", Num(env, t.eccVolUnc));
      x.Set("eccAggregateCorrected", Num(env, t.eccAggCorr));
      x.Set("eccAggregateUncorrected", Num(env, t.eccAggUnc));
      x.Set("retiredPagesSbe", Num(env, t.retiredSbe));
      x.Set("retiredPagesDbe", Num(env, t.retiredDbe));
      x.Set("retiredPagesPending", Bool(env, t.retiredPending));
      x.Set("remappedRowsCorrected", Num(env, t.remapCorr));
      x.Set("remappedRowsUncorrected", Num(env, t.remapUnc));
      x.Set("remappedRowsPending", Bool(env, t.remapPending));
      x.Set("remappedRowsFailure", Bool(env, t.remapFailure));
      x.Set("pcieReplayCounter", Num(env, t.pcieReplay));
      x.Set("pcieLinkGenCurrent", Num(env, t.pcieGenCur));
      x.Set("pcieLinkGenMax", Num(env, t.pcieGenMax));
      x.Set("pcieLinkWidthCurrent", Num(env, t.pcieWidthCur));
      x.Set("pcieLinkWidthMax", Num(env, t.pcieWidthMax));
      x.Set("memoryTemperatureC", Num(env, t.memTemp));
      x.Set("totalEnergyMj", Num(env, t.energyMj));
      x.Set("encoderUtilPercent", Num(env, t.encUtil));
      x.Set("decoderUtilPercent", Num(env, t.decUtil));
      x.Set("pcieTxKBps", Num(env, t.pcieTxKBps));
      x.Set("pcieRxKBps", Num(env, t.pcieRxKBps));
      x.Set("nvlinkDataTxKiB", Num(env, t.nvlinkTxKiB));
      x.Set("nvlinkDataRxKiB", Num(env, t.nvlinkRxKiB));
      if (t.nvlinks) {
        Napi::Array links = Napi::Array::New(env, t.nvlinks->size());
        uint32_t i = 0;
        for (const NvLink& l : *t.nvlinks) {
          Napi::Object lo = Napi::Object::New(env);
          lo.Set("link", l.link);
          lo.Set("active", l.active);
          lo.Set("replayErrors", Num(env, l.replay));
          lo.Set("recoveryErrors", Num(env, l.recovery));
          lo.Set("crcFlitErrors", Num(env, l.crcFlit));
          lo.Set("crcDataErrors", Num(env, l.crcData));
          links.Set(i++, lo);
        }
        x.Set("nvlinks", links);
      } else {
        x.Set("nvlinks", env.Null());
      }
      if (t.fabric) {
        const Fabric& f = *t.fabric;
        Napi::Object fo = Napi::Object::New(env);
        fo.Set("version", f.version);
        fo.Set("state", f.state);
        fo.Set("status", f.status);
        fo.Set("cliqueId", f.cliqueId);
        fo.Set("clusterUuid", f.clusterUuid);
        fo.Set("healthMask", f.healthMask);
        fo.Set("healthSummary", f.healthSummary ? Napi::Value(Napi::Number::New(env, *f.healthSummary)) : env.Null());
        x.Set("fabric", fo);
      } else {
        x.Set("fabric", env.Null());
      }
      o.Set("telemetry", x);
    }
    o.Set("takenAtMs", takenAtMs);
    return o;
  }
};

OptNum Ull(int st, unsigned long long v) {
  return st == abi::kSuccess ? OptNum(static_cast<double>(v)) : std::nullopt;
}

OptNum RetiredCount(Lane& lane, nvmlDevice_t h, unsigned cause) {
  unsigned count = 0;
  unsigned long long scratch[1] = {0};
  int st = NV_CALL(lane, DeviceGetRetiredPages, h, cause, &count, scratch);
  if (st == abi::kSuccess || st == abi::kErrInsufficientSize) return static_cast<double>(count);
  return std::nullopt;
}

/** A field value's number by its valueType; its own nvmlReturn other than SUCCESS -> null. */
OptNum FieldNumber(const abi::nvmlFieldValue_t& f) {
  if (f.nvmlReturn != abi::kSuccess) return std::nullopt;
  switch (f.valueType) {
    case 0: return std::isfinite(f.value.dVal) ? OptNum(f.value.dVal) : std::nullopt;
    case 1: return static_cast<double>(f.value.uiVal);
    case 2: return static_cast<double>(f.value.ulVal);
    case 3: return static_cast<double>(f.value.ullVal);
    case 4: return static_cast<double>(f.value.sllVal);
    case 5: return static_cast<double>(f.value.siVal);
    case 6: return static_cast<double>(f.value.usVal);
    default: return std::nullopt;
  }
}

/** Encoder/decoder utilization, energy, PCIe throughput and the field values (memory temperature,
 * NVLink data throughput over all links): dcgm-exporter's default fields that NVML provides. */
void ReadDcgmDefaults(Lane& lane, nvmlDevice_t h, Telemetry& t) {
  unsigned u = 0, period = 0;
  unsigned long long ull = 0;
  int st = NV_CALL(lane, DeviceGetTotalEnergyConsumption, h, &ull);
  t.energyMj = Ull(st, ull);
  st = NV_CALL(lane, DeviceGetEncoderUtilization, h, &u, &period);
  t.encUtil = UInt(st, u);
  st = NV_CALL(lane, DeviceGetDecoderUtilization, h, &u, &period);
  t.decUtil = UInt(st, u);
  st = NV_CALL(lane, DeviceGetPcieThroughput, h, abi::kPcieUtilTxBytes, &u);
  t.pcieTxKBps = UInt(st, u);
  st = NV_CALL(lane, DeviceGetPcieThroughput, h, abi::kPcieUtilRxBytes, &u);
  t.pcieRxKBps = UInt(st, u);

  abi::nvmlFieldValue_t fv[3];
  memset(fv, 0, sizeof fv);
  fv[0].fieldId = abi::kFieldMemoryTemp;
  fv[1].fieldId = abi::kFieldNvLinkDataTx;
  fv[1].scopeId = abi::kFieldScopeAllLinks;
  fv[2].fieldId = abi::kFieldNvLinkDataRx;
  fv[2].scopeId = abi::kFieldScopeAllLinks;
  st = NV_CALL(lane, DeviceGetFieldValues, h, 3, fv);
  if (st == abi::kSuccess) {
    t.memTemp = FieldNumber(fv[0]);
    t.nvlinkTxKiB = FieldNumber(fv[1]);
    t.nvlinkRxKiB = FieldNumber(fv[2]);
  }
}

void ReadTelemetry(Lane& lane, nvmlDevice_t h, Telemetry& t) {
  unsigned u = 0, u2 = 0, u3 = 0, u4 = 0;
  unsigned long long ull = 0;
  int st;

  st = NV_CALL(lane, DeviceGetTemperature, h, abi::kTemperatureGpu, &u);
  t.temperatureC = UInt(st, u);
  st = NV_CALL(lane, DeviceGetPowerUsage, h, &u);
  if (st == abi::kSuccess) t.powerUsageW = u / 1000.0;
  st = NV_CALL(lane, DeviceGetEnforcedPowerLimit, h, &u);
  if (st == abi::kSuccess) t.powerLimitW = u / 1000.0;
  abi::nvmlUtilization_t util{0, 0};
  st = NV_CALL(lane, DeviceGetUtilizationRates, h, &util);
  if (st == abi::kSuccess) {
    t.gpuUtil = util.gpu;
    t.memUtil = util.memory;
  }
  abi::nvmlMemory_t mem{0, 0, 0};
  st = NV_CALL(lane, DeviceGetMemoryInfo, h, &mem);
  if (st == abi::kSuccess) {
    t.memUsed = static_cast<double>(mem.used);
    t.memTotal = static_cast<double>(mem.total);
  }
  st = NV_CALL(lane, DeviceGetClockInfo, h, abi::kClockSm, &u);
  t.smClock = UInt(st, u);
  st = NV_CALL(lane, DeviceGetClockInfo, h, abi::kClockMem, &u);
  t.memClock = UInt(st, u);
  // Clock event reasons (driver >= 535), else the older throttle-reasons name (same bits).
  if (lane.api().DeviceGetCurrentClocksEventReasons != nullptr) {
    st = NV_CALL(lane, DeviceGetCurrentClocksEventReasons, h, &ull);
  } else {
    st = NV_CALL(lane, DeviceGetCurrentClocksThrottleReasons, h, &ull);
  }
  t.clockReasons = Ull(st, ull);
  st = NV_CALL(lane, DeviceGetPerformanceState, h, &u);
  if (st == abi::kSuccess && u != abi::kPstateUnknown) t.pstate = u;
  st = NV_CALL(lane, DeviceGetFanSpeed, h, &u);
  t.fan = UInt(st, u);
  st = NV_CALL(lane, DeviceGetPersistenceMode, h, &u);
  if (st == abi::kSuccess) t.persistence = u == abi::kFeatureEnabled;
  st = NV_CALL(lane, DeviceGetEccMode, h, &u, &u2);
  if (st == abi::kSuccess) {
    t.eccCurrent = u == abi::kFeatureEnabled;
    t.eccPending = u2 == abi::kFeatureEnabled;
  }
  st = NV_CALL(lane, DeviceGetTotalEccErrors, h, abi::kMemoryErrorCorrected, abi::kVolatileEcc, &ull);
  t.eccVolCorr = Ull(st, ull);
  st = NV_CALL(lane, DeviceGetTotalEccErrors, h, abi::kMemoryErrorUncorrected, abi::kVolatileEcc, &ull);
  t.eccVolUnc = Ull(st, ull);
  st = NV_CALL(lane, DeviceGetTotalEccErrors, h, abi::kMemoryErrorCorrected, abi::kAggregateEcc, &ull);
  t.eccAggCorr = Ull(st, ull);
  st = NV_CALL(lane, DeviceGetTotalEccErrors, h, abi::kMemoryErrorUncorrected, abi::kAggregateEcc, &ull);
  t.eccAggUnc = Ull(st, ull);
  t.retiredSbe = RetiredCount(lane, h, abi::kRetireMultipleSbe);
  t.retiredDbe = RetiredCount(lane, h, abi::kRetireDbe);
  st = NV_CALL(lane, DeviceGetRetiredPagesPendingStatus, h, &u);
  if (st == abi::kSuccess) t.retiredPending = u == abi::kFeatureEnabled;
  st = NV_CALL(lane, DeviceGetRemappedRows, h, &u, &u2, &u3, &u4);
  if (st == abi::kSuccess) {
    t.remapCorr = u;
    t.remapUnc = u2;
    t.remapPending = u3 != 0;
    t.remapFailure = u4 != 0;
  }
  st = NV_CALL(lane, DeviceGetPcieReplayCounter, h, &u);
  t.pcieReplay = UInt(st, u);
  st = NV_CALL(lane, DeviceGetCurrPcieLinkGeneration, h, &u);
  t.pcieGenCur = UInt(st, u);
  st = NV_CALL(lane, DeviceGetMaxPcieLinkGeneration, h, &u);
  t.pcieGenMax = UInt(st, u);
  st = NV_CALL(lane, DeviceGetCurrPcieLinkWidth, h, &u);
  t.pcieWidthCur = UInt(st, u);
  st = NV_CALL(lane, DeviceGetMaxPcieLinkWidth, h, &u);
  t.pcieWidthMax = UInt(st, u);

  // NVLink: walk link indices until INVALID_ARGUMENT (past the driver's maximum); links answering
  // NOT_SUPPORTED do not exist on this board and are omitted. No link at all -> null.
  if (lane.api().DeviceGetNvLinkState != nullptr) {
    std::vector<NvLink> links;
    for (unsigned l = 0; l < abi::kNvLinkMaxLinks; ++l) {
      st = NV_CALL(lane, DeviceGetNvLinkState, h, l, &u);
      if (st == abi::kErrInvalidArgument) break;
      if (st != abi::kSuccess) continue;
      NvLink link{l, u == abi::kFeatureEnabled, std::nullopt, std::nullopt, std::nullopt, std::nullopt};
      st = NV_CALL(lane, DeviceGetNvLinkErrorCounter, h, l, abi::kNvLinkErrReplay, &ull);
      link.replay = Ull(st, ull);
      st = NV_CALL(lane, DeviceGetNvLinkErrorCounter, h, l, abi::kNvLinkErrRecovery, &ull);
      link.recovery = Ull(st, ull);
      st = NV_CALL(lane, DeviceGetNvLinkErrorCounter, h, l, abi::kNvLinkErrCrcFlit, &ull);
      link.crcFlit = Ull(st, ull);
      st = NV_CALL(lane, DeviceGetNvLinkErrorCounter, h, l, abi::kNvLinkErrCrcData, &ull);
      link.crcData = Ull(st, ull);
      links.push_back(link);
    }
    if (!links.empty()) t.nvlinks = std::move(links);
  }

  // Fabric info: v3 first, v2 where the driver (< 580) answers ARGUMENT_VERSION_MISMATCH;
  // NOT_SUPPORTED (pre-Hopper, no fabric) or a missing symbol -> null.
  if (lane.api().DeviceGetGpuFabricInfoV != nullptr) {
    abi::nvmlGpuFabricInfoV_t fi;
    memset(&fi, 0, sizeof fi);
    fi.version = abi::kGpuFabricInfoV3;
    unsigned version = 3;
    st = NV_CALL(lane, DeviceGetGpuFabricInfoV, h, &fi);
    if (st == abi::kErrArgumentVersionMismatch) {
      memset(&fi, 0, sizeof fi);
      fi.version = abi::kGpuFabricInfoV2;
      version = 2;
      st = NV_CALL(lane, DeviceGetGpuFabricInfoV, h, &fi);
    }
    if (st == abi::kSuccess) {
      Fabric f{version, fi.state, fi.status, fi.cliqueId, std::string(), fi.healthMask, std::nullopt};
      char hex[33];
      for (int i = 0; i < 16; ++i) snprintf(hex + 2 * i, 3, "%02x", fi.clusterUuid[i]);
      f.clusterUuid.assign(hex, 32);
      if (version == 3) f.healthSummary = fi.healthSummary;
      t.fabric = std::move(f);
    }
  }

  ReadDcgmDefaults(lane, h, t);
}

}  // namespace

std::string CudaVersionString(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

void WarmIdentity(Lane& lane) {
  try {
    DeviceIdentity id;
    Identify(lane, &id);
  } catch (const DeviceFatal&) {
    // Reported by the next devices()/snapshot() on this lane.
  }
}

std::unique_ptr<Payload> QuerySystem(Lane& lane) {
  auto p = std::make_unique<SystemPayload>();
  char buf[abi::kVersionBufferSize] = {0};
  try {
    if (NV_CALL(lane, SystemGetDriverVersion, buf, abi::kVersionBufferSize) == abi::kSuccess)
      p->driver = Trimmed(buf, sizeof buf);
    memset(buf, 0, sizeof buf);
    if (NV_CALL(lane, SystemGetNVMLVersion, buf, abi::kVersionBufferSize) == abi::kSuccess)
      p->nvml = Trimmed(buf, sizeof buf);
    int cuda = 0;
    if (Call(lane, lane.api().SystemGetCudaDriverVersion, "nvmlSystemGetCudaDriverVersion_v2", &cuda) ==
            abi::kSuccess &&
        cuda > 0)
      p->cuda = CudaVersionString(cuda);
  } catch (const DeviceFatal&) {
    // GPU_IS_LOST from a system call is not a device fault; leave the value null.
  }
  return p;
}

std::unique_ptr<Payload> QueryCount(Lane& lane) {
  unsigned n = 0;
  lane.SetCurrentFn("nvmlDeviceGetCount_v2");
  int st = lane.api().DeviceGetCount(&n);
  lane.SetCurrentFn("");
  if (st != abi::kSuccess) return std::make_unique<FailurePayload>(lane.lib().Fail(st, "nvmlDeviceGetCount_v2"));
  return std::make_unique<NumberPayload>(n);
}

std::unique_ptr<Payload> QueryDeviceInfo(Lane& lane) {
  auto p = std::make_unique<DeviceInfoPayload>();
  p->index = lane.index();
  try {
    nvmlDevice_t h = Identify(lane, &p->id);
    char name[abi::kNameBufferSize] = {0};
    if (NV_CALL(lane, DeviceGetName, h, name, abi::kNameBufferSize) == abi::kSuccess)
      p->name = Trimmed(name, sizeof name);
    char serial[abi::kSerialBufferSize] = {0};
    if (NV_CALL(lane, DeviceGetSerial, h, serial, abi::kSerialBufferSize) == abi::kSuccess)
      p->serial = Trimmed(serial, sizeof serial);
    unsigned minor = 0;
    int st = NV_CALL(lane, DeviceGetMinorNumber, h, &minor);
    p->minor = UInt(st, minor);
    abi::nvmlMemory_t mem{0, 0, 0};
    if (NV_CALL(lane, DeviceGetMemoryInfo, h, &mem) == abi::kSuccess) p->memTotal = static_cast<double>(mem.total);
  } catch (DeviceFatal& f) {
    p->id = lane.Identity();  // whatever was learnt before the GPU went away
    p->error = std::move(f.failure);
  }
  return p;
}

std::unique_ptr<Payload> QuerySnapshot(Lane& lane) {
  auto p = std::make_unique<SnapshotPayload>();
  p->index = lane.index();
  try {
    DeviceIdentity id;
    nvmlDevice_t h = Identify(lane, &id);
    p->uuid = id.uuid;
    ReadTelemetry(lane, h, p->t);
  } catch (DeviceFatal& f) {
    p->uuid = lane.Identity().uuid;
    p->error = std::move(f.failure);
  }
  p->takenAtMs = WallMs();
  return p;
}

std::unique_ptr<Payload> DeviceInfoTimeout(int index, const DeviceIdentity& id, const Failure& f) {
  auto p = std::make_unique<DeviceInfoPayload>();
  p->index = index;
  p->id = id;
  p->error = f;
  return p;
}

std::unique_ptr<Payload> SnapshotTimeout(int index, const DeviceIdentity& id, const Failure& f) {
  auto p = std::make_unique<SnapshotPayload>();
  p->index = index;
  p->uuid = id.uuid;
  p->error = f;
  p->takenAtMs = WallMs();
  return p;
}

}  // namespace navarch
