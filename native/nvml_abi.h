// The subset of NVML's C ABI that the addon uses, declared by this project from
// shared/reference/nvml-abi.md (no nvml.h is vendored). Layouts are pinned with static_assert so a
// mistake fails the build instead of corrupting memory at run time. x86-64 / aarch64 LP64 only.
#pragma once
#include <cstddef>
#include <cstdint>

namespace navarch {
namespace abi {

using nvmlReturn_t = int;  // 4-byte enum on every supported ABI
struct nvmlDevice_st;
struct nvmlEventSet_st;
using nvmlDevice_t = nvmlDevice_st*;
using nvmlEventSet_t = nvmlEventSet_st*;

// ---- return codes --------------------------------------------------------------------------
constexpr nvmlReturn_t kSuccess = 0;
constexpr nvmlReturn_t kErrUninitialized = 1;
constexpr nvmlReturn_t kErrInvalidArgument = 2;
constexpr nvmlReturn_t kErrNotSupported = 3;
constexpr nvmlReturn_t kErrNoPermission = 4;
constexpr nvmlReturn_t kErrInsufficientSize = 7;
constexpr nvmlReturn_t kErrDriverNotLoaded = 9;
constexpr nvmlReturn_t kErrTimeout = 10;
constexpr nvmlReturn_t kErrLibraryNotFound = 12;
constexpr nvmlReturn_t kErrFunctionNotFound = 13;
constexpr nvmlReturn_t kErrGpuIsLost = 15;
constexpr nvmlReturn_t kErrLibRmVersionMismatch = 18;
constexpr nvmlReturn_t kErrUnknown = 999;

// ---- buffer sizes ---------------------------------------------------------------------------
constexpr unsigned kUuidBufferSize = 96;     // NVML_DEVICE_UUID_V2_BUFFER_SIZE
constexpr unsigned kNameBufferSize = 96;     // NVML_DEVICE_NAME_V2_BUFFER_SIZE
constexpr unsigned kSerialBufferSize = 32;   // NVML_DEVICE_SERIAL_BUFFER_SIZE is 30
constexpr unsigned kVersionBufferSize = 80;  // NVML_SYSTEM_*_VERSION_BUFFER_SIZE
constexpr unsigned kNvLinkMaxLinks = 36;     // 18 before driver 590; extra links answer INVALID_ARGUMENT

// ---- enums ------------------------------------------------------------------------------------
constexpr unsigned kTemperatureGpu = 0;
constexpr unsigned kClockSm = 1;
constexpr unsigned kClockMem = 2;
constexpr unsigned kPstateUnknown = 32;
constexpr unsigned kMemoryErrorCorrected = 0;
constexpr unsigned kMemoryErrorUncorrected = 1;
constexpr unsigned kVolatileEcc = 0;
constexpr unsigned kAggregateEcc = 1;
constexpr unsigned kRetireMultipleSbe = 0;
constexpr unsigned kRetireDbe = 1;
constexpr unsigned kNvLinkErrReplay = 0;
constexpr unsigned kNvLinkErrRecovery = 1;
constexpr unsigned kNvLinkErrCrcFlit = 2;
constexpr unsigned kNvLinkErrCrcData = 3;
constexpr unsigned kFeatureEnabled = 1;

// ---- event type bits --------------------------------------------------------------------------
constexpr uint64_t kEventSingleBitEcc = 0x1;
constexpr uint64_t kEventDoubleBitEcc = 0x2;
constexpr uint64_t kEventPState = 0x4;
constexpr uint64_t kEventXid = 0x8;
constexpr uint64_t kEventClock = 0x10;
constexpr uint64_t kEventPowerSource = 0x80;
constexpr uint64_t kEventMigConfig = 0x100;
constexpr uint64_t kEventSbeStorm = 0x200;
constexpr uint64_t kEventDramRetirement = 0x400;
constexpr uint64_t kEventDramRetirementFailure = 0x800;
constexpr uint64_t kEventNonFatalPoison = 0x1000;
constexpr uint64_t kEventFatalPoison = 0x2000;
constexpr uint64_t kEventGpuUnavailable = 0x4000;
constexpr uint64_t kEventGpuRecoveryAction = 0x8000;
constexpr unsigned kMigIdNone = 0xFFFFFFFFu;

// ---- structs ----------------------------------------------------------------------------------
struct nvmlPciInfo_t {
  char busIdLegacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[32];
};
static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t size");
static_assert(offsetof(nvmlPciInfo_t, domain) == 16, "nvmlPciInfo_t.domain");
static_assert(offsetof(nvmlPciInfo_t, pciSubSystemId) == 32, "nvmlPciInfo_t.pciSubSystemId");
static_assert(offsetof(nvmlPciInfo_t, busId) == 36, "nvmlPciInfo_t.busId");

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t size");
static_assert(offsetof(nvmlMemory_t, used) == 16, "nvmlMemory_t.used");

struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
static_assert(sizeof(nvmlUtilization_t) == 8, "nvmlUtilization_t size");

struct nvmlEventData_t {
  nvmlDevice_t device;
  unsigned long long eventType;
  unsigned long long eventData;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t size");
static_assert(offsetof(nvmlEventData_t, eventType) == 8, "nvmlEventData_t.eventType");
static_assert(offsetof(nvmlEventData_t, eventData) == 16, "nvmlEventData_t.eventData");
static_assert(offsetof(nvmlEventData_t, gpuInstanceId) == 24, "nvmlEventData_t.gpuInstanceId");
static_assert(offsetof(nvmlEventData_t, computeInstanceId) == 28, "nvmlEventData_t.computeInstanceId");

// nvmlGpuFabricInfo_v3_t; v2 is its first 36 bytes (no healthSummary). nvml-abi.md §4.8.
struct nvmlGpuFabricInfoV_t {
  unsigned int version;
  unsigned char clusterUuid[16];
  nvmlReturn_t status;
  unsigned int cliqueId;
  unsigned char state;
  unsigned int healthMask;
  unsigned char healthSummary;
};
static_assert(sizeof(nvmlGpuFabricInfoV_t) == 40, "nvmlGpuFabricInfo_v3_t size");
static_assert(offsetof(nvmlGpuFabricInfoV_t, status) == 20, "nvmlGpuFabricInfoV_t.status");
static_assert(offsetof(nvmlGpuFabricInfoV_t, cliqueId) == 24, "nvmlGpuFabricInfoV_t.cliqueId");
static_assert(offsetof(nvmlGpuFabricInfoV_t, state) == 28, "nvmlGpuFabricInfoV_t.state");
static_assert(offsetof(nvmlGpuFabricInfoV_t, healthMask) == 32, "nvmlGpuFabricInfoV_t.healthMask");
static_assert(offsetof(nvmlGpuFabricInfoV_t, healthSummary) == 36, "nvmlGpuFabricInfoV_t.healthSummary");
constexpr unsigned int kGpuFabricInfoV3 = 0x03000028;  // NVML_STRUCT_VER(v3, 3): 40 bytes
constexpr unsigned int kGpuFabricInfoV2 = 0x02000024;  // NVML_STRUCT_VER(v2, 2): 36 bytes
constexpr nvmlReturn_t kErrArgumentVersionMismatch = 25;

// nvmlFieldValue_t: 40 bytes, align 8 (nvml-abi.md §4.7). `value` is an 8-byte union read by
// `valueType` (0 double, 1 uint, 2 ulong, 3 ull, 4 sll, 5 sint, 6 ushort).
struct nvmlFieldValue_t {
  unsigned int fieldId;
  unsigned int scopeId;
  long long timestamp;
  long long latencyUsec;
  unsigned int valueType;
  nvmlReturn_t nvmlReturn;
  union {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    unsigned short usVal;
  } value;
};
static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t size");
static_assert(offsetof(nvmlFieldValue_t, valueType) == 24, "nvmlFieldValue_t.valueType");
static_assert(offsetof(nvmlFieldValue_t, nvmlReturn) == 28, "nvmlFieldValue_t.nvmlReturn");
static_assert(offsetof(nvmlFieldValue_t, value) == 32, "nvmlFieldValue_t.value");
// Field ids below 251 have kept their numbers across driver branches (nvml-abi.md §3.7); these
// three match in the NVML headers of CUDA 11.x and 12.x.
constexpr unsigned int kFieldMemoryTemp = 82;              // NVML_FI_DEV_MEMORY_TEMP, C
constexpr unsigned int kFieldNvLinkDataTx = 138;           // NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, KiB
constexpr unsigned int kFieldNvLinkDataRx = 139;           // NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, KiB
constexpr unsigned int kFieldScopeAllLinks = 0xFFFFFFFFu;  // scopeId UINT_MAX: summed over links
constexpr unsigned kPcieUtilTxBytes = 0;                   // nvmlPcieUtilCounter_t
constexpr unsigned kPcieUtilRxBytes = 1;

// ---- entry points (enum parameters are passed as unsigned int, identical on SysV) -------------
using PFN_nvmlInit_v2 = nvmlReturn_t (*)();
using PFN_nvmlShutdown = nvmlReturn_t (*)();
using PFN_nvmlErrorString = const char* (*)(nvmlReturn_t);
using PFN_nvmlSystemGetString = nvmlReturn_t (*)(char*, unsigned int);
using PFN_nvmlSystemGetCudaDriverVersion = nvmlReturn_t (*)(int*);
using PFN_nvmlDeviceGetCount_v2 = nvmlReturn_t (*)(unsigned int*);
using PFN_nvmlDeviceGetHandleByIndex_v2 = nvmlReturn_t (*)(unsigned int, nvmlDevice_t*);
using PFN_nvmlDeviceGetString = nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned int);
using PFN_nvmlDeviceGetUInt = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*);
using PFN_nvmlDeviceGetULL = nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*);
using PFN_nvmlDeviceGetPciInfo_v3 = nvmlReturn_t (*)(nvmlDevice_t, nvmlPciInfo_t*);
using PFN_nvmlDeviceGetMemoryInfo = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*);
using PFN_nvmlDeviceGetTemperature = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*);
using PFN_nvmlDeviceGetUtilizationRates = nvmlReturn_t (*)(nvmlDevice_t, nvmlUtilization_t*);
using PFN_nvmlDeviceGetClockInfo = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*);
using PFN_nvmlDeviceGetEccMode = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, unsigned int*);
using PFN_nvmlDeviceGetTotalEccErrors = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int, unsigned long long*);
using PFN_nvmlDeviceGetRetiredPages = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*, unsigned long long*);
using PFN_nvmlDeviceGetRemappedRows = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, unsigned int*, unsigned int*,
                                                       unsigned int*);
using PFN_nvmlDeviceGetNvLinkState = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*);
using PFN_nvmlDeviceGetNvLinkErrorCounter = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int,
                                                             unsigned long long*);
using PFN_nvmlDeviceGetGpuFabricInfoV = nvmlReturn_t (*)(nvmlDevice_t, nvmlGpuFabricInfoV_t*);
using PFN_nvmlDeviceGetFieldValues = nvmlReturn_t (*)(nvmlDevice_t, int, nvmlFieldValue_t*);
using PFN_nvmlDeviceGetUtilSampled = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, unsigned int*);
using PFN_nvmlDeviceGetPcieThroughput = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*);
using PFN_nvmlEventSetCreate = nvmlReturn_t (*)(nvmlEventSet_t*);
using PFN_nvmlEventSetFree = nvmlReturn_t (*)(nvmlEventSet_t);
using PFN_nvmlDeviceRegisterEvents = nvmlReturn_t (*)(nvmlDevice_t, unsigned long long, nvmlEventSet_t);
using PFN_nvmlEventSetWait_v2 = nvmlReturn_t (*)(nvmlEventSet_t, nvmlEventData_t*, unsigned int);

}  // namespace abi
}  // namespace navarch
