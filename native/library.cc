// dlopen/dlsym of libnvidia-ml and the nvmlInit_v2 / nvmlShutdown pairing (one pair per Library).
#include "library.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>

namespace navarch {

namespace {

template <typename T>
void Bind(void* handle, const char* name, T* slot) {
  *slot = reinterpret_cast<T>(dlsym(handle, name));
}

template <typename T>
void BindFirst(void* handle, const char* preferred, const char* fallback, T* slot) {
  Bind(handle, preferred, slot);
  if (*slot == nullptr) Bind(handle, fallback, slot);
}

}  // namespace

std::shared_ptr<Library> Library::Open(const std::string& requested, Failure* failure) {
  std::string path = requested;
  if (path.empty()) {
    const char* env = std::getenv("NAVARCH_NVML_LIBRARY");
    path = (env != nullptr && env[0] != '\0') ? env : "libnvidia-ml.so.1";
  }
  if (path.find('/') != std::string::npos && path[0] != '/') {
    *failure = Failure::Own("NVML_LIBRARY_NOT_FOUND", "dlopen",
                            "NVML library path must be absolute or a bare file name, got '" + path + "'");
    return nullptr;
  }
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    *failure = Failure::Own("NVML_LIBRARY_NOT_FOUND", "dlopen",
                            "cannot load " + path + ": " + (why != nullptr ? why : "unknown dlopen error"));
    return nullptr;
  }
  std::shared_ptr<Library> lib(new Library());
  lib->handle_ = handle;
  lib->path_ = path;
  struct link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
      map->l_name[0] != '\0') {
    lib->path_ = map->l_name;
  }

  NvmlApi& a = lib->api_;
  Bind(handle, "nvmlInit_v2", &a.Init);
  Bind(handle, "nvmlShutdown", &a.Shutdown);
  Bind(handle, "nvmlDeviceGetCount_v2", &a.DeviceGetCount);
  Bind(handle, "nvmlDeviceGetHandleByIndex_v2", &a.DeviceGetHandleByIndex);
  const char* missing = a.Init == nullptr                     ? "nvmlInit_v2"
                        : a.Shutdown == nullptr               ? "nvmlShutdown"
                        : a.DeviceGetCount == nullptr         ? "nvmlDeviceGetCount_v2"
                        : a.DeviceGetHandleByIndex == nullptr ? "nvmlDeviceGetHandleByIndex_v2"
                                                              : nullptr;
  if (missing != nullptr) {
    *failure = Failure::Own("NVML_SYMBOL_NOT_FOUND", missing,
                            std::string(missing) + " is missing from " + lib->path_ + " (driver too old?)");
    return nullptr;  // ~Library dlcloses; not initialised, so no nvmlShutdown
  }
  Bind(handle, "nvmlErrorString", &a.ErrorString);
  Bind(handle, "nvmlSystemGetDriverVersion", &a.SystemGetDriverVersion);
  Bind(handle, "nvmlSystemGetNVMLVersion", &a.SystemGetNVMLVersion);
  BindFirst(handle, "nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion",
            &a.SystemGetCudaDriverVersion);
  Bind(handle, "nvmlDeviceGetUUID", &a.DeviceGetUUID);
  Bind(handle, "nvmlDeviceGetName", &a.DeviceGetName);
  Bind(handle, "nvmlDeviceGetSerial", &a.DeviceGetSerial);
  Bind(handle, "nvmlDeviceGetMinorNumber", &a.DeviceGetMinorNumber);
  Bind(handle, "nvmlDeviceGetIndex", &a.DeviceGetIndex);
  Bind(handle, "nvmlDeviceGetPciInfo_v3", &a.DeviceGetPciInfo);
  Bind(handle, "nvmlDeviceGetMemoryInfo", &a.DeviceGetMemoryInfo);
  Bind(handle, "nvmlDeviceGetTemperature", &a.DeviceGetTemperature);
  Bind(handle, "nvmlDeviceGetPowerUsage", &a.DeviceGetPowerUsage);
  Bind(handle, "nvmlDeviceGetEnforcedPowerLimit", &a.DeviceGetEnforcedPowerLimit);
  Bind(handle, "nvmlDeviceGetUtilizationRates", &a.DeviceGetUtilizationRates);
  Bind(handle, "nvmlDeviceGetClockInfo", &a.DeviceGetClockInfo);
  Bind(handle, "nvmlDeviceGetCurrentClocksEventReasons", &a.DeviceGetCurrentClocksEventReasons);
  Bind(handle, "nvmlDeviceGetCurrentClocksThrottleReasons", &a.DeviceGetCurrentClocksThrottleReasons);
  Bind(handle, "nvmlDeviceGetPerformanceState", &a.DeviceGetPerformanceState);
  Bind(handle, "nvmlDeviceGetFanSpeed", &a.DeviceGetFanSpeed);
  Bind(handle, "nvmlDeviceGetPersistenceMode", &a.DeviceGetPersistenceMode);
  Bind(handle, "nvmlDeviceGetEccMode", &a.DeviceGetEccMode);
  Bind(handle, "nvmlDeviceGetTotalEccErrors", &a.DeviceGetTotalEccErrors);
  Bind(handle, "nvmlDeviceGetRetiredPages", &a.DeviceGetRetiredPages);
  Bind(handle, "nvmlDeviceGetRetiredPagesPendingStatus", &a.DeviceGetRetiredPagesPendingStatus);
  Bind(handle, "nvmlDeviceGetRemappedRows", &a.DeviceGetRemappedRows);
  Bind(handle, "nvmlDeviceGetPcieReplayCounter", &a.DeviceGetPcieReplayCounter);
  Bind(handle, "nvmlDeviceGetCurrPcieLinkGeneration", &a.DeviceGetCurrPcieLinkGeneration);
  Bind(handle, "nvmlDeviceGetMaxPcieLinkGeneration", &a.DeviceGetMaxPcieLinkGeneration);
  Bind(handle, "nvmlDeviceGetCurrPcieLinkWidth", &a.DeviceGetCurrPcieLinkWidth);
  Bind(handle, "nvmlDeviceGetMaxPcieLinkWidth", &a.DeviceGetMaxPcieLinkWidth);
  Bind(handle, "nvmlDeviceGetNvLinkState", &a.DeviceGetNvLinkState);
  Bind(handle, "nvmlDeviceGetNvLinkErrorCounter", &a.DeviceGetNvLinkErrorCounter);
  Bind(handle, "nvmlDeviceGetGpuFabricInfoV", &a.DeviceGetGpuFabricInfoV);
  Bind(handle, "nvmlDeviceGetTotalEnergyConsumption", &a.DeviceGetTotalEnergyConsumption);
  Bind(handle, "nvmlDeviceGetEncoderUtilization", &a.DeviceGetEncoderUtilization);
  Bind(handle, "nvmlDeviceGetDecoderUtilization", &a.DeviceGetDecoderUtilization);
  Bind(handle, "nvmlDeviceGetPcieThroughput", &a.DeviceGetPcieThroughput);
  Bind(handle, "nvmlDeviceGetFieldValues", &a.DeviceGetFieldValues);
  Bind(handle, "nvmlDeviceGetSupportedEventTypes", &a.DeviceGetSupportedEventTypes);
  Bind(handle, "nvmlEventSetCreate", &a.EventSetCreate);
  Bind(handle, "nvmlEventSetFree", &a.EventSetFree);
  Bind(handle, "nvmlDeviceRegisterEvents", &a.DeviceRegisterEvents);
  Bind(handle, "nvmlEventSetWait_v2", &a.EventSetWait);

  int st = a.Init();
  if (st != abi::kSuccess) {
    *failure = lib->Fail(st, "nvmlInit_v2");
    return nullptr;
  }
  lib->initialized_ = true;
  return lib;
}

Library::~Library() {
  // Runs on whichever native thread drops the last reference (never the JS thread: see session.cc),
  // so a wedged nvmlShutdown cannot block the event loop.
  if (initialized_) api_.Shutdown();  // SUCCESS or UNINITIALIZED are both fine here
  if (handle_ != nullptr) dlclose(handle_);
}

Failure Library::Fail(int status, const char* fn) const {
  const char* text = nullptr;
  // nvmlErrorString is documented to work without init; before the first init it is still safe.
  if (api_.ErrorString != nullptr) text = api_.ErrorString(status);
  return Failure::FromStatus(status, fn, text);
}

}  // namespace navarch
