/* Internal state of the fake libnvidia-ml.so.1 (project-own declarations; no nvml.h). */
#ifndef FAKE_NVML_FAKE_H
#define FAKE_NVML_FAKE_H

#include <pthread.h>
#include <stddef.h>

/* ---- ABI types (restated from docs/nvml-abi facts; layouts checked by _Static_assert) ---- */
typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
    unsigned int version;
    unsigned int sensorType;
    int temperature;
} nvmlTemperature_t;
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999
};

#define FAKE_MAX_DEVICES 64
#define FAKE_MAX_NVLINKS 36
#define FAKE_QUEUE_CAP 65536u
#define FAKE_DEVICE_MAGIC 0x4e56444eu /* "NVDN" */
#define FAKE_SET_MAGIC 0x4e564553u    /* "NVES" */

/* Telemetry fields: config key, default value. Order defines the index. */
// An X-macro list, kept as written (clang-format would pack the entries into long lines).
// clang-format off
#define FAKE_FIELDS(X)                                                                       \
    X(temperatureC, 33ULL) X(powerUsageMw, 72000ULL) X(powerLimitMw, 700000ULL)              \
    X(gpuUtil, 0ULL) X(memUtil, 0ULL) X(memoryTotal, 85520809984ULL)                         \
    X(memoryUsed, 566231040ULL) X(memoryReserved, 0ULL) X(smClockMhz, 345ULL)                \
    X(memClockMhz, 2619ULL) X(clockEventReasons, 1ULL) X(pstate, 0ULL) X(fanSpeed, 0ULL)     \
    X(persistenceMode, 1ULL) X(eccCurrent, 1ULL) X(eccPending, 1ULL)                         \
    X(eccVolatileCorrected, 0ULL) X(eccVolatileUncorrected, 0ULL)                            \
    X(eccAggregateCorrected, 0ULL) X(eccAggregateUncorrected, 0ULL)                          \
    X(retiredPagesSbe, 0ULL) X(retiredPagesDbe, 0ULL) X(retiredPagesPending, 0ULL)           \
    X(remappedCorrected, 0ULL) X(remappedUncorrected, 0ULL) X(remappedPending, 0ULL)         \
    X(remappedFailure, 0ULL) X(pcieReplay, 0ULL) X(pcieGenCurrent, 5ULL) X(pcieGenMax, 5ULL) \
    X(pcieWidthCurrent, 16ULL) X(pcieWidthMax, 16ULL) X(nvlinkCount, 18ULL)                  \
    X(nvlinkReplay, 0ULL) X(nvlinkRecovery, 0ULL) X(nvlinkCrcFlit, 0ULL) X(nvlinkCrcData, 0ULL) \
    X(fabricInfoVersion, 0ULL) X(fabricState, 3ULL) X(fabricStatus, 0ULL) X(fabricCliqueId, 0ULL) \
    X(fabricHealthMask, 0ULL) X(fabricHealthSummary, 1ULL) X(memoryTempC, 40ULL)           \
    X(totalEnergyMj, 0ULL) X(encoderUtil, 0ULL) X(decoderUtil, 0ULL) X(pcieTxKBps, 0ULL)    \
    X(pcieRxKBps, 0ULL) X(nvlinkDataTxKiB, 0ULL) X(nvlinkDataRxKiB, 0ULL)
// clang-format on

enum {
#define FAKE_ENUM_F(name, def) F_##name,
    FAKE_FIELDS(FAKE_ENUM_F)
#undef FAKE_ENUM_F
        F_COUNT,
    /* getter groups that can be marked unsupported but are not numeric fields */
    U_serial = F_COUNT,
    U_minorNumber,
    U_nvlink,
    U_ecc,
    U_retiredPages,
    U_remappedRows,
    U_pcie,
    U_name,
    U_uuid,
    U_pciInfo,
    U_nvlinkDown,
    U_COUNT
};
_Static_assert(U_COUNT <= 64, "unsupported mask fits in 64 bits");

typedef struct nvmlDevice_st {
    unsigned magic;
    unsigned index;
    char name[96];
    char uuid[96];
    char serial[32];
    unsigned domain, bus, dev, pciDeviceId, pciSubSystemId;
    unsigned minor;
    unsigned long long supported_events;
    unsigned long long vals[F_COUNT];
    unsigned long long nvlink_down; /* bit per link */
    unsigned long long unsupported; /* bit per F_ / U_ index */
    int lost;
    int lost_unattributed; /* only event waits on a set holding it say GPU_IS_LOST; device calls answer */
    char hang_fn[96];      /* "" = none, "*" = every device call */
    long long hang_ms;
    unsigned hang_gen; /* bumped by recover to release blocked calls */
} fake_device;

typedef struct nvmlEventSet_st {
    unsigned magic;
    struct nvmlEventSet_st *next;
    unsigned long long reg[FAKE_MAX_DEVICES];
    nvmlEventData_t *ring;
    unsigned head, count;
    unsigned long long dropped;
    int waiters;
    int freed;
    pthread_cond_t cv;
} fake_set;

typedef struct {
    char driver_version[80];
    char nvml_version[80];
    int cuda_driver_version;
    int init_error;
    long long init_hang_ms;
    char control_socket[108];
} fake_system;

/* Global state; everything below is guarded by g_mu. */
extern pthread_mutex_t g_mu;
extern pthread_cond_t g_hang_cv; /* signalled when a hang is cleared */
extern int g_init_count;
extern unsigned g_hung; /* calls blocked in a hang right now */
extern fake_system g_sys;
extern fake_device g_dev[FAKE_MAX_DEVICES];
extern unsigned g_ndev;
extern fake_set *g_sets;
extern unsigned long long g_waits, g_recorded, g_dropped, g_last_enqueue_ns;

/* config.c */
int fake_load_config(char *err, size_t errlen);      /* fills g_sys/g_dev (caller holds g_mu) */
int fake_symbol_missing(const char *name);           /* for the IFUNC resolvers */
int fake_field_index(const char *name);              /* F_ index or -1 */
int fake_unsup_index(const char *name);              /* F_/U_ index or -1 */
unsigned long long fake_event_bit(const char *name); /* 0 when unknown */
const char *fake_field_name(int idx);
unsigned long long fake_now_ns(void); /* CLOCK_MONOTONIC */

/* events (api.c); caller holds g_mu. Returns sets recorded into; *dropped counts overflow. */
unsigned fake_enqueue(unsigned dev, unsigned long long type, unsigned long long data, unsigned *dropped);
void fake_wake_all(void);

/* control.c */
int fake_control_start(const char *path, char *err, size_t errlen);
void fake_control_stop(void);

#endif
