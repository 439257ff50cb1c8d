// Loading libnvidia-ml: dlopen (RTLD_NOW | RTLD_LOCAL), dlsym of every entry point the addon uses
// (versioned names where NVML has them), nvmlInit_v2 on open and nvmlShutdown + dlclose when the
// last owner lets go. Owners are shared_ptr holders: a session, its device lanes and its watcher.
// A thread stuck inside NVML keeps its reference, so the library is never shut down or unmapped
// under a call that is still running.
#pragma once
#include <memory>
#include <string>

#include "errors.h"
#include "nvml_abi.h"

namespace navarch {

struct NvmlApi {
  // Required: open fails with NVML_SYMBOL_NOT_FOUND without them.
  abi::PFN_nvmlInit_v2 Init = nullptr;
  abi::PFN_nvmlShutdown Shutdown = nullptr;
  abi::PFN_nvmlDeviceGetCount_v2 DeviceGetCount = nullptr;
  abi::PFN_nvmlDeviceGetHandleByIndex_v2 DeviceGetHandleByIndex = nullptr;
  // Optional: a NULL entry makes only that value NVML_ERROR_FUNCTION_NOT_FOUND.
  abi::PFN_nvmlErrorString ErrorString = nullptr;
  abi::PFN_nvmlSystemGetString SystemGetDriverVersion = nullptr;
  abi::PFN_nvmlSystemGetString SystemGetNVMLVersion = nullptr;
  abi::PFN_nvmlSystemGetCudaDriverVersion SystemGetCudaDriverVersion = nullptr;  // _v2, else v1
  abi::PFN_nvmlDeviceGetString DeviceGetUUID = nullptr;
  abi::PFN_nvmlDeviceGetString DeviceGetName = nullptr;
  abi::PFN_nvmlDeviceGetString DeviceGetSerial = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetMinorNumber = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetIndex = nullptr;
  abi::PFN_nvmlDeviceGetPciInfo_v3 DeviceGetPciInfo = nullptr;
  abi::PFN_nvmlDeviceGetMemoryInfo DeviceGetMemoryInfo = nullptr;
  abi::PFN_nvmlDeviceGetTemperature DeviceGetTemperature = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetPowerUsage = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetEnforcedPowerLimit = nullptr;
  abi::PFN_nvmlDeviceGetUtilizationRates DeviceGetUtilizationRates = nullptr;
  abi::PFN_nvmlDeviceGetClockInfo DeviceGetClockInfo = nullptr;
  abi::PFN_nvmlDeviceGetULL DeviceGetCurrentClocksEventReasons = nullptr;
  abi::PFN_nvmlDeviceGetULL DeviceGetCurrentClocksThrottleReasons = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetPerformanceState = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetFanSpeed = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetPersistenceMode = nullptr;
  abi::PFN_nvmlDeviceGetEccMode DeviceGetEccMode = nullptr;
  abi::PFN_nvmlDeviceGetTotalEccErrors DeviceGetTotalEccErrors = nullptr;
  abi::PFN_nvmlDeviceGetRetiredPages DeviceGetRetiredPages = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetRetiredPagesPendingStatus = nullptr;
  abi::PFN_nvmlDeviceGetRemappedRows DeviceGetRemappedRows = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetPcieReplayCounter = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetCurrPcieLinkGeneration = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetMaxPcieLinkGeneration = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetCurrPcieLinkWidth = nullptr;
  abi::PFN_nvmlDeviceGetUInt DeviceGetMaxPcieLinkWidth = nullptr;
  abi::PFN_nvmlDeviceGetNvLinkState DeviceGetNvLinkState = nullptr;
  abi::PFN_nvmlDeviceGetNvLinkErrorCounter DeviceGetNvLinkErrorCounter = nullptr;
  abi::PFN_nvmlDeviceGetGpuFabricInfoV DeviceGetGpuFabricInfoV = nullptr;  // >= 550, Hopper+
  abi::PFN_nvmlDeviceGetULL DeviceGetTotalEnergyConsumption = nullptr;     // mJ, Volta+
  abi::PFN_nvmlDeviceGetUtilSampled DeviceGetEncoderUtilization = nullptr;
  abi::PFN_nvmlDeviceGetUtilSampled DeviceGetDecoderUtilization = nullptr;
  abi::PFN_nvmlDeviceGetPcieThroughput DeviceGetPcieThroughput = nullptr;  // KB/s over 20 ms
  abi::PFN_nvmlDeviceGetFieldValues DeviceGetFieldValues = nullptr;
  abi::PFN_nvmlDeviceGetULL DeviceGetSupportedEventTypes = nullptr;
  abi::PFN_nvmlEventSetCreate EventSetCreate = nullptr;
  abi::PFN_nvmlEventSetFree EventSetFree = nullptr;
  abi::PFN_nvmlDeviceRegisterEvents DeviceRegisterEvents = nullptr;
  abi::PFN_nvmlEventSetWait_v2 EventSetWait = nullptr;
};

class Library {
 public:
  /**
   * dlopen + dlsym + nvmlInit_v2. `path` empty -> $NAVARCH_NVML_LIBRARY -> "libnvidia-ml.so.1".
   * Returns nullptr and fills *failure (NVML_LIBRARY_NOT_FOUND, NVML_SYMBOL_NOT_FOUND, or the
   * status nvmlInit_v2 returned). Blocking: call it on a native thread.
   */
  static std::shared_ptr<Library> Open(const std::string& path, Failure* failure);
  ~Library();
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;

  const NvmlApi& api() const { return api_; }
  /** The file actually mapped (from the link map), e.g. /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1. */
  const std::string& path() const { return path_; }
  /** A Failure for `status` returned by `fn`, with nvmlErrorString's text when available. */
  Failure Fail(int status, const char* fn) const;

 private:
  Library() = default;
  void* handle_ = nullptr;
  bool initialized_ = false;
  std::string path_;
  NvmlApi api_;
};

}  // namespace navarch
