/* NVML entry points of the fake libnvidia-ml.so.1. Every exported entry point is a GNU IFUNC
 * whose resolver returns NULL when the symbol is listed in the config's "missingSymbols", so
 * dlsym() finds nothing, exactly as with an older driver that lacks the symbol. */
#define _GNU_SOURCE
#include "fake.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

_Static_assert(sizeof(nvmlPciInfo_t) == 68 && offsetof(nvmlPciInfo_t, busId) == 36, "pci");
_Static_assert(sizeof(nvmlMemory_t) == 24, "mem");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40 && offsetof(nvmlMemory_v2_t, total) == 8, "mem2");
_Static_assert(sizeof(nvmlUtilization_t) == 8, "util");
_Static_assert(sizeof(nvmlTemperature_t) == 12, "temp");
_Static_assert(sizeof(nvmlEventData_t) == 32 && offsetof(nvmlEventData_t, gpuInstanceId) == 24, "ev");

typedef struct {
    unsigned int version, domain, bus, device, pciDeviceId, pciSubSystemId, baseClass, subClass;
    char busId[32];
} nvmlPciInfoExt_t;
_Static_assert(sizeof(nvmlPciInfoExt_t) == 64 && offsetof(nvmlPciInfoExt_t, busId) == 32, "pciext");

#define VER_MEMORY_V2 0x02000028u
#define VER_TEMPERATURE_V1 0x0100000Cu
#define VER_PCI_INFO_EXT_V1 0x01000040u
#define NVML_ERROR_GPU_NOT_FOUND 28

pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_hang_cv;
int g_init_count;
unsigned g_hung;
fake_system g_sys;
fake_device g_dev[FAKE_MAX_DEVICES];
unsigned g_ndev;
fake_set *g_sets;
unsigned long long g_waits, g_recorded, g_dropped, g_last_enqueue_ns;

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;

static void init_cond(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

__attribute__((constructor)) static void fake_ctor(void) { init_cond(&g_hang_cv); }

static void deadline_after(struct timespec *ts, long long ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int ts_passed(const struct timespec *dl) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > dl->tv_sec || (now.tv_sec == dl->tv_sec && now.tv_nsec >= dl->tv_nsec);
}

/* ---------------------------------------------------------------- common checks */

static int valid_device(nvmlDevice_t d) {
    uintptr_t p = (uintptr_t)d, b = (uintptr_t)&g_dev[0];
    if (p < b || p >= (uintptr_t)&g_dev[g_ndev]) return 0;
    if ((p - b) % sizeof(fake_device) != 0) return 0;
    return d->magic == FAKE_DEVICE_MAGIC;
}

static int valid_set(nvmlEventSet_t s) {
    for (fake_set *x = g_sets; x; x = x->next)
        if (x == s) return x->magic == FAKE_SET_MAGIC && !x->freed;
    return 0;
}

/* Blocks the calling thread while a configured hang applies (releases g_mu meanwhile). */
static void apply_hang(fake_device *d, const char *fn) {
    if (!d->hang_fn[0] || d->hang_ms <= 0) return;
    if (strcmp(d->hang_fn, "*") != 0 && strcmp(d->hang_fn, fn) != 0) return;
    unsigned gen = d->hang_gen;
    struct timespec dl;
    deadline_after(&dl, d->hang_ms);
    g_hung++;
    while (g_init_count > 0 && d->hang_gen == gen && !ts_passed(&dl)) pthread_cond_timedwait(&g_hang_cv, &g_mu, &dl);
    g_hung--;
}

/* Locks g_mu and validates a device call; on failure g_mu is released again. */
static nvmlReturn_t enter_dev(nvmlDevice_t d, const char *fn) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (!valid_device(d)) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    apply_hang(d, fn);
    if (g_init_count == 0) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (d->lost) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_GPU_IS_LOST;
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t leave(nvmlReturn_t rc) {
    pthread_mutex_unlock(&g_mu);
    return rc;
}

#define FN_NAME (__func__ + 5) /* strip "impl_" */
#define ENTER(d)                                   \
    do {                                           \
        nvmlReturn_t e_ = enter_dev((d), FN_NAME); \
        if (e_ != NVML_SUCCESS) return e_;         \
    } while (0)
#define UNSUP(d, idx) (((d)->unsupported >> (idx)) & 1ULL)
#define REQUIRE(p)                                           \
    do {                                                     \
        if (!(p)) return leave(NVML_ERROR_INVALID_ARGUMENT); \
    } while (0)
#define SUPPORTED(d, idx)                                          \
    do {                                                           \
        if (UNSUP(d, idx)) return leave(NVML_ERROR_NOT_SUPPORTED); \
    } while (0)

static nvmlReturn_t copy_str(char *dst, unsigned len, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    size_t n = strlen(src);
    if ((size_t)len < n + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- 3.1 init / system */

static nvmlReturn_t impl_nvmlInitWithFlags(unsigned int flags) {
    pthread_mutex_lock(&g_init_mu);
    pthread_mutex_lock(&g_mu);
    if (g_init_count > 0) {
        g_init_count++;
        pthread_mutex_unlock(&g_mu);
        pthread_mutex_unlock(&g_init_mu);
        return NVML_SUCCESS;
    }
    char err[512];
    if (fake_load_config(err, sizeof err) != 0) {
        pthread_mutex_unlock(&g_mu);
        pthread_mutex_unlock(&g_init_mu);
        fprintf(stderr, "fake-nvml: invalid config: %s\n", err);
        return NVML_ERROR_UNKNOWN;
    }
    nvmlReturn_t rc = g_sys.init_error;
    long long hang = g_sys.init_hang_ms;
    char sock[sizeof g_sys.control_socket];
    memcpy(sock, g_sys.control_socket, sizeof sock);
    unsigned ndev = g_ndev;
    g_waits = g_recorded = g_dropped = g_last_enqueue_ns = 0;
    pthread_mutex_unlock(&g_mu);
    if (hang > 0) {
        struct timespec ts = {(time_t)(hang / 1000), (long)(hang % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
    if (rc == NVML_SUCCESS && ndev == 0 && !(flags & 1u)) rc = NVML_ERROR_GPU_NOT_FOUND;
    if (rc == NVML_SUCCESS && sock[0] && fake_control_start(sock, err, sizeof err) != 0) {
        fprintf(stderr, "fake-nvml: control socket: %s\n", err);
        rc = NVML_ERROR_UNKNOWN;
    }
    if (rc == NVML_SUCCESS) {
        pthread_mutex_lock(&g_mu);
        g_init_count = 1;
        pthread_mutex_unlock(&g_mu);
    }
    pthread_mutex_unlock(&g_init_mu);
    return rc;
}

static nvmlReturn_t impl_nvmlInit_v2(void) { return impl_nvmlInitWithFlags(0); }
static nvmlReturn_t impl_nvmlInit(void) { return impl_nvmlInitWithFlags(0); }

static void destroy_set(fake_set *s) {
    s->magic = 0;
    pthread_cond_destroy(&s->cv);
    free(s->ring);
    free(s);
}

static nvmlReturn_t impl_nvmlShutdown(void) {
    pthread_mutex_lock(&g_init_mu);
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) {
        pthread_mutex_unlock(&g_mu);
        pthread_mutex_unlock(&g_init_mu);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (--g_init_count > 0) {
        pthread_mutex_unlock(&g_mu);
        pthread_mutex_unlock(&g_init_mu);
        return NVML_SUCCESS;
    }
    /* last reference: drop every event set; blocked waiters wake up and return UNINITIALIZED */
    fake_set *s = g_sets;
    g_sets = NULL;
    while (s) {
        fake_set *next = s->next;
        s->freed = 1;
        pthread_cond_broadcast(&s->cv);
        if (s->waiters == 0) destroy_set(s);
        s = next;
    }
    pthread_cond_broadcast(&g_hang_cv);
    pthread_mutex_unlock(&g_mu);
    fake_control_stop();
    pthread_mutex_unlock(&g_init_mu);
    return NVML_SUCCESS;
}

static const char *impl_nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
        case 0: return "Success";
        case 1: return "Uninitialized";
        case 2: return "Invalid Argument";
        case 3: return "Not Supported";
        case 4: return "Insufficient Permissions";
        case 5: return "Already Initialized";
        case 6: return "Not Found";
        case 7: return "Insufficient Size";
        case 8: return "Insufficient External Power";
        case 9: return "Driver Not Loaded";
        case 10: return "Timeout";
        case 11: return "Interrupt Request Issue";
        case 12: return "NVML Shared Library Not Found";
        case 13: return "Function Not Found";
        case 14: return "Corrupted infoROM";
        case 15: return "GPU is lost";
        case 16: return "GPU requires reset";
        case 17: return "GPU access blocked by the operating system";
        case 18: return "Driver/library version mismatch";
        case 19: return "In use by another client";
        case 20: return "Insufficient Memory";
        case 21: return "No data";
        case 22: return "vGPU ECC not supported";
        case 23: return "Insufficient resources";
        case 24: return "Frequency not supported";
        case 25: return "Argument version mismatch";
        case 26: return "Deprecated";
        case 27: return "Not ready";
        case 28: return "GPU not found";
        case 29: return "Invalid state";
        case 30: return "Reset type not supported";
        case 999: return "Unknown Error";
        default: return "Unknown NVML status";
    }
}

static nvmlReturn_t impl_nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    return leave(copy_str(version, length, g_sys.driver_version));
}

static nvmlReturn_t impl_nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    pthread_mutex_lock(&g_mu);
    /* documented without UNINITIALIZED; before the first init the defaults are reported */
    const char *v = g_sys.nvml_version[0] ? g_sys.nvml_version : "12.550.163.01";
    return leave(copy_str(version, length, v));
}

static nvmlReturn_t impl_nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    if (!cudaDriverVersion) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    *cudaDriverVersion = g_sys.cuda_driver_version ? g_sys.cuda_driver_version : 12040;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    return impl_nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion);
}

/* ---------------------------------------------------------------- 3.2 enumeration / identity */

static nvmlReturn_t impl_nvmlDeviceGetCount_v2(unsigned int *count) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(count);
    *count = g_ndev;
    return leave(NVML_SUCCESS);
}
static nvmlReturn_t impl_nvmlDeviceGetCount(unsigned int *count) { return impl_nvmlDeviceGetCount_v2(count); }

/* Hands out a handle unless the device is lost (attaching a lost GPU fails). Holds g_mu. */
static nvmlReturn_t handout(fake_device *d, nvmlDevice_t *out, const char *fn) {
    apply_hang(d, fn);
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (d->lost) return NVML_ERROR_GPU_IS_LOST;
    *out = d;
    return NVML_SUCCESS;
}

static nvmlReturn_t impl_nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(device && index < g_ndev);
    return leave(handout(&g_dev[index], device, "nvmlDeviceGetHandleByIndex_v2"));
}
static nvmlReturn_t impl_nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return impl_nvmlDeviceGetHandleByIndex_v2(index, device);
}

static nvmlReturn_t impl_nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(uuid && device);
    for (unsigned i = 0; i < g_ndev; i++)
        if (strcmp(g_dev[i].uuid, uuid) == 0) return leave(handout(&g_dev[i], device, "nvmlDeviceGetHandleByUUID"));
    return leave(NVML_ERROR_NOT_FOUND);
}

/* Accepts "dddddddd:bb:dd.f", "dddd:bb:dd.f" and "bb:dd.f" (hex, any case). */
static int parse_bus_id(const char *s, unsigned *dom, unsigned *bus, unsigned *dev) {
    unsigned a, b, c, f;
    char tail;
    int colons = 0;
    for (const char *p = s; *p; p++) colons += *p == ':';
    if (colons == 2 && sscanf(s, "%x:%x:%x.%x%c", &a, &b, &c, &f, &tail) == 4) {
        *dom = a;
        *bus = b;
        *dev = c;
        return 0;
    }
    if (colons == 1 && sscanf(s, "%x:%x.%x%c", &b, &c, &f, &tail) == 3) {
        *dom = 0;
        *bus = b;
        *dev = c;
        return 0;
    }
    return -1;
}

static nvmlReturn_t impl_nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(pciBusId && device);
    unsigned dom, bus, dev;
    REQUIRE(parse_bus_id(pciBusId, &dom, &bus, &dev) == 0);
    for (unsigned i = 0; i < g_ndev; i++)
        if (g_dev[i].domain == dom && g_dev[i].bus == bus && g_dev[i].dev == dev)
            return leave(handout(&g_dev[i], device, "nvmlDeviceGetHandleByPciBusId_v2"));
    return leave(NVML_ERROR_NOT_FOUND);
}
static nvmlReturn_t impl_nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device) {
    return impl_nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

static nvmlReturn_t impl_nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER(d);
    SUPPORTED(d, U_uuid);
    return leave(copy_str(uuid, length, d->uuid));
}

static nvmlReturn_t impl_nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER(d);
    SUPPORTED(d, U_name);
    return leave(copy_str(name, length, d->name));
}

static nvmlReturn_t impl_nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length) {
    ENTER(d);
    SUPPORTED(d, U_serial);
    return leave(copy_str(serial, length, d->serial));
}

static nvmlReturn_t impl_nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    ENTER(d);
    REQUIRE(minor);
    SUPPORTED(d, U_minorNumber);
    *minor = d->minor;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    ENTER(d);
    REQUIRE(index);
    *index = d->index;
    return leave(NVML_SUCCESS);
}

static void fill_pci(const fake_device *d, nvmlPciInfo_t *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%04X:%02X:%02X.0", d->domain & 0xFFFFu, d->bus, d->dev);
    snprintf(p->busId, sizeof p->busId, "%08X:%02X:%02X.0", d->domain, d->bus, d->dev);
    p->domain = d->domain;
    p->bus = d->bus;
    p->device = d->dev;
    p->pciDeviceId = d->pciDeviceId;
    p->pciSubSystemId = d->pciSubSystemId;
}

static nvmlReturn_t impl_nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    ENTER(d);
    REQUIRE(pci);
    SUPPORTED(d, U_pciInfo);
    fill_pci(d, pci);
    return leave(NVML_SUCCESS);
}
static nvmlReturn_t impl_nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    return impl_nvmlDeviceGetPciInfo_v3(d, pci);
}
static nvmlReturn_t impl_nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    return impl_nvmlDeviceGetPciInfo_v3(d, pci);
}

static nvmlReturn_t impl_nvmlDeviceGetPciInfoExt(nvmlDevice_t d, nvmlPciInfoExt_t *pci) {
    ENTER(d);
    REQUIRE(pci);
    if (pci->version != VER_PCI_INFO_EXT_V1) return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    SUPPORTED(d, U_pciInfo);
    nvmlPciInfo_t p;
    fill_pci(d, &p);
    pci->domain = p.domain;
    pci->bus = p.bus;
    pci->device = p.device;
    pci->pciDeviceId = p.pciDeviceId;
    pci->pciSubSystemId = p.pciSubSystemId;
    pci->baseClass = 0x03; /* display controller */
    pci->subClass = 0x02;  /* 3D controller */
    memcpy(pci->busId, p.busId, sizeof pci->busId);
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- 3.3 telemetry */

static void memory_values(const fake_device *d, unsigned long long *total, unsigned long long *reserved,
                          unsigned long long *used, unsigned long long *free_) {
    *total = d->vals[F_memoryTotal];
    *reserved = d->vals[F_memoryReserved];
    *used = d->vals[F_memoryUsed] > *reserved ? d->vals[F_memoryUsed] : *reserved;
    *free_ = *total > *used ? *total - *used : 0;
}

static nvmlReturn_t impl_nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    ENTER(d);
    REQUIRE(m);
    SUPPORTED(d, F_memoryTotal);
    SUPPORTED(d, F_memoryUsed);
    unsigned long long reserved;
    memory_values(d, &m->total, &reserved, &m->used, &m->free);
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    ENTER(d);
    REQUIRE(m);
    if (m->version != VER_MEMORY_V2) return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    SUPPORTED(d, F_memoryTotal);
    SUPPORTED(d, F_memoryUsed);
    memory_values(d, &m->total, &m->reserved, &m->used, &m->free);
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetTemperature(nvmlDevice_t d, unsigned int sensor, unsigned int *temp) {
    ENTER(d);
    REQUIRE(temp && sensor == 0);
    SUPPORTED(d, F_temperatureC);
    *temp = (unsigned)d->vals[F_temperatureC];
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetTemperatureV(nvmlDevice_t d, nvmlTemperature_t *t) {
    ENTER(d);
    REQUIRE(t);
    if (t->version != VER_TEMPERATURE_V1) return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    REQUIRE(t->sensorType == 0);
    SUPPORTED(d, F_temperatureC);
    t->temperature = (int)d->vals[F_temperatureC];
    return leave(NVML_SUCCESS);
}

#define UINT_GETTER(fn, idx, group)                                    \
    static nvmlReturn_t impl_##fn(nvmlDevice_t d, unsigned int *out) { \
        ENTER(d);                                                      \
        REQUIRE(out);                                                  \
        SUPPORTED(d, group);                                           \
        SUPPORTED(d, idx);                                             \
        *out = (unsigned)d->vals[idx];                                 \
        return leave(NVML_SUCCESS);                                    \
    }

UINT_GETTER(nvmlDeviceGetPowerUsage, F_powerUsageMw, F_powerUsageMw)
UINT_GETTER(nvmlDeviceGetEnforcedPowerLimit, F_powerLimitMw, F_powerLimitMw)
UINT_GETTER(nvmlDeviceGetPerformanceState, F_pstate, F_pstate)
UINT_GETTER(nvmlDeviceGetFanSpeed, F_fanSpeed, F_fanSpeed)
UINT_GETTER(nvmlDeviceGetPersistenceMode, F_persistenceMode, F_persistenceMode)
UINT_GETTER(nvmlDeviceGetPcieReplayCounter, F_pcieReplay, U_pcie)
UINT_GETTER(nvmlDeviceGetCurrPcieLinkWidth, F_pcieWidthCurrent, U_pcie)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkWidth, F_pcieWidthMax, U_pcie)
UINT_GETTER(nvmlDeviceGetCurrPcieLinkGeneration, F_pcieGenCurrent, U_pcie)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkGeneration, F_pcieGenMax, U_pcie)
UINT_GETTER(nvmlDeviceGetRetiredPagesPendingStatus, F_retiredPagesPending, U_retiredPages)

static nvmlReturn_t impl_nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    ENTER(d);
    REQUIRE(u);
    SUPPORTED(d, F_gpuUtil);
    SUPPORTED(d, F_memUtil);
    u->gpu = (unsigned)d->vals[F_gpuUtil];
    u->memory = (unsigned)d->vals[F_memUtil];
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetClockInfo(nvmlDevice_t d, unsigned int type, unsigned int *clock) {
    ENTER(d);
    REQUIRE(clock && type < 4);
    int idx = type == 2 ? F_memClockMhz : F_smClockMhz; /* graphics, SM and video report the SM clock */
    SUPPORTED(d, idx);
    *clock = (unsigned)d->vals[idx];
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    ENTER(d);
    REQUIRE(r);
    SUPPORTED(d, F_clockEventReasons);
    *r = d->vals[F_clockEventReasons];
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    ENTER(d);
    REQUIRE(r);
    SUPPORTED(d, F_clockEventReasons);
    *r = d->vals[F_clockEventReasons];
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- 3.4 ECC / retirement / remapping */

static nvmlReturn_t impl_nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    ENTER(d);
    REQUIRE(current && pending);
    SUPPORTED(d, U_ecc);
    SUPPORTED(d, F_eccCurrent);
    SUPPORTED(d, F_eccPending);
    *current = (unsigned)d->vals[F_eccCurrent];
    *pending = (unsigned)d->vals[F_eccPending];
    return leave(NVML_SUCCESS);
}

static int ecc_field(unsigned errorType, unsigned counterType) {
    if (errorType == 0) return counterType == 0 ? F_eccVolatileCorrected : F_eccAggregateCorrected;
    return counterType == 0 ? F_eccVolatileUncorrected : F_eccAggregateUncorrected;
}

static nvmlReturn_t impl_nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, unsigned int errorType, unsigned int counterType,
                                                     unsigned long long *count) {
    ENTER(d);
    REQUIRE(count && errorType < 2 && counterType < 2);
    SUPPORTED(d, U_ecc);
    int f = ecc_field(errorType, counterType);
    SUPPORTED(d, f);
    *count = d->vals[f];
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetMemoryErrorCounter(nvmlDevice_t d, unsigned int errorType,
                                                         unsigned int counterType, unsigned int location,
                                                         unsigned long long *count) {
    ENTER(d);
    REQUIRE(count && errorType < 2 && counterType < 2 && location < 8);
    SUPPORTED(d, U_ecc);
    int f = ecc_field(errorType, counterType);
    SUPPORTED(d, f);
    *count = location == 2 ? d->vals[f] : 0; /* every error is attributed to device memory */
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t retired_pages(nvmlDevice_t d, unsigned int cause, unsigned int *pageCount,
                                  unsigned long long *addresses, unsigned long long *timestamps) {
    REQUIRE(pageCount && cause < 2);
    SUPPORTED(d, U_retiredPages);
    int f = cause == 0 ? F_retiredPagesSbe : F_retiredPagesDbe;
    SUPPORTED(d, f);
    unsigned n = (unsigned)d->vals[f];
    if (*pageCount < n) {
        *pageCount = n;
        return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    if (n > 0) REQUIRE(addresses);
    for (unsigned k = 0; k < n; k++) {
        addresses[k] = 0x100000ULL * (k + 1) + ((unsigned long long)cause << 40) + ((unsigned long long)d->index << 32);
        if (timestamps) timestamps[k] = 1700000000ULL + k;
    }
    *pageCount = n;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetRetiredPages(nvmlDevice_t d, unsigned int cause, unsigned int *pageCount,
                                                   unsigned long long *addresses) {
    ENTER(d);
    return retired_pages(d, cause, pageCount, addresses, NULL);
}

static nvmlReturn_t impl_nvmlDeviceGetRetiredPages_v2(nvmlDevice_t d, unsigned int cause, unsigned int *pageCount,
                                                      unsigned long long *addresses, unsigned long long *timestamps) {
    ENTER(d);
    return retired_pages(d, cause, pageCount, addresses, timestamps);
}

static nvmlReturn_t impl_nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corrRows, unsigned int *uncRows,
                                                   unsigned int *isPending, unsigned int *failureOccurred) {
    ENTER(d);
    REQUIRE(corrRows && uncRows && isPending && failureOccurred);
    SUPPORTED(d, U_remappedRows);
    SUPPORTED(d, F_remappedCorrected);
    SUPPORTED(d, F_remappedUncorrected);
    SUPPORTED(d, F_remappedPending);
    SUPPORTED(d, F_remappedFailure);
    *corrRows = (unsigned)d->vals[F_remappedCorrected];
    *uncRows = (unsigned)d->vals[F_remappedUncorrected];
    *isPending = (unsigned)d->vals[F_remappedPending];
    *failureOccurred = (unsigned)d->vals[F_remappedFailure];
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- 3.5 NVLink */

static nvmlReturn_t nvlink_check(fake_device *d, unsigned link) {
    if (UNSUP(d, U_nvlink) || UNSUP(d, F_nvlinkCount) || d->vals[F_nvlinkCount] == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= d->vals[F_nvlinkCount]) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

static nvmlReturn_t impl_nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, unsigned int *isActive) {
    ENTER(d);
    REQUIRE(isActive);
    nvmlReturn_t rc = nvlink_check(d, link);
    if (rc != NVML_SUCCESS) return leave(rc);
    SUPPORTED(d, U_nvlinkDown);
    *isActive = ((d->nvlink_down >> link) & 1ULL) ? 0u : 1u;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t d, unsigned int link, unsigned int counter,
                                                         unsigned long long *value) {
    ENTER(d);
    REQUIRE(value && counter < 5);
    nvmlReturn_t rc = nvlink_check(d, link);
    if (rc != NVML_SUCCESS) return leave(rc);
    static const int map[4] = {F_nvlinkReplay, F_nvlinkRecovery, F_nvlinkCrcFlit, F_nvlinkCrcData};
    if (counter == 4) {
        *value = 0;
        return leave(NVML_SUCCESS);
    } /* ECC data: not modelled */
    SUPPORTED(d, map[counter]);
    *value = d->vals[map[counter]];
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- 3.6 events */

static nvmlReturn_t impl_nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    ENTER(d);
    REQUIRE(types);
    *types = d->supported_events;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlEventSetCreate(nvmlEventSet_t *set) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(set);
    fake_set *s = calloc(1, sizeof *s);
    nvmlEventData_t *ring = calloc(FAKE_QUEUE_CAP, sizeof *ring);
    if (!s || !ring) {
        free(s);
        free(ring);
        return leave(NVML_ERROR_UNKNOWN);
    }
    s->magic = FAKE_SET_MAGIC;
    s->ring = ring;
    init_cond(&s->cv);
    s->next = g_sets;
    g_sets = s;
    *set = s;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t impl_nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    ENTER(d);
    REQUIRE(valid_set(set));
    REQUIRE(types != 0);
    if (types & ~d->supported_events) return leave(NVML_ERROR_NOT_SUPPORTED); /* registers nothing */
    set->reg[d->index] |= types;
    return leave(NVML_SUCCESS);
}

static int set_has_lost_device(const fake_set *s) {
    for (unsigned i = 0; i < g_ndev; i++)
        if (s->reg[i] && (g_dev[i].lost || g_dev[i].lost_unattributed)) return 1;
    return 0;
}

static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms, int v2) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(valid_set(set) && data);
    g_waits++;
    struct timespec dl;
    deadline_after(&dl, timeoutms);
    nvmlReturn_t rc;
    set->waiters++;
    for (;;) {
        if (g_init_count == 0) {
            rc = NVML_ERROR_UNINITIALIZED;
            break;
        }
        if (set->freed) {
            rc = NVML_ERROR_INVALID_ARGUMENT;
            break;
        }
        if (set->count > 0) {
            const nvmlEventData_t *e = &set->ring[set->head];
            data->device = e->device;
            data->eventType = e->eventType;
            data->eventData = e->eventData;
            if (v2) {
                data->gpuInstanceId = e->gpuInstanceId;
                data->computeInstanceId = e->computeInstanceId;
            }
            set->head = (set->head + 1) % FAKE_QUEUE_CAP;
            set->count--;
            rc = NVML_SUCCESS;
            break;
        }
        if (set_has_lost_device(set)) {
            rc = NVML_ERROR_GPU_IS_LOST;
            break;
        }
        if (ts_passed(&dl)) {
            rc = NVML_ERROR_TIMEOUT;
            break;
        }
        pthread_cond_timedwait(&set->cv, &g_mu, &dl);
    }
    set->waiters--;
    if (set->freed && set->waiters == 0) destroy_set(set);
    return leave(rc);
}

static nvmlReturn_t impl_nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    return event_wait(set, data, timeoutms, 1);
}

static nvmlReturn_t impl_nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    return event_wait(set, data, timeoutms, 0);
}

static nvmlReturn_t impl_nvmlEventSetFree(nvmlEventSet_t set) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    REQUIRE(valid_set(set));
    for (fake_set **pp = &g_sets; *pp; pp = &(*pp)->next)
        if (*pp == set) {
            *pp = set->next;
            break;
        }
    set->freed = 1;
    pthread_cond_broadcast(&set->cv);
    if (set->waiters == 0) destroy_set(set);
    return leave(NVML_SUCCESS);
}

unsigned fake_enqueue(unsigned dev, unsigned long long type, unsigned long long data, unsigned *dropped) {
    unsigned recorded = 0;
    for (fake_set *s = g_sets; s; s = s->next) {
        if (!(s->reg[dev] & type)) continue;
        if (s->count >= FAKE_QUEUE_CAP) {
            s->dropped++;
            g_dropped++;
            if (dropped) (*dropped)++;
            continue;
        }
        nvmlEventData_t *e = &s->ring[(s->head + s->count) % FAKE_QUEUE_CAP];
        e->device = &g_dev[dev];
        e->eventType = type;
        e->eventData = data;
        e->gpuInstanceId = 0xFFFFFFFFu;
        e->computeInstanceId = 0xFFFFFFFFu;
        s->count++;
        recorded++;
        g_recorded++;
        pthread_cond_signal(&s->cv);
    }
    g_last_enqueue_ns = fake_now_ns();
    return recorded;
}

void fake_wake_all(void) {
    for (fake_set *s = g_sets; s; s = s->next) pthread_cond_broadcast(&s->cv);
    pthread_cond_broadcast(&g_hang_cv);
}

/* ---------------------------------------------------------------- fabric info */

/* nvmlGpuFabricInfo_v3_t; v2 is its first 36 bytes. */
typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned char state;
    unsigned int healthMask;
    unsigned char healthSummary;
} nvmlGpuFabricInfoV_t;
_Static_assert(sizeof(nvmlGpuFabricInfoV_t) == 40, "nvmlGpuFabricInfo_v3_t size");
_Static_assert(offsetof(nvmlGpuFabricInfoV_t, healthMask) == 32, "healthMask offset");

/* fabricInfoVersion: 0 = NOT_SUPPORTED (the default), 2 = a driver before 580 (v3 refused with
 * ARGUMENT_VERSION_MISMATCH), 3 = v3 and v2. The other fabric* fields are the answer. */
static nvmlReturn_t impl_nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t d, nvmlGpuFabricInfoV_t *fi) {
    ENTER(d);
    REQUIRE(fi);
    unsigned long long maxv = d->vals[F_fabricInfoVersion];
    if (maxv == 0) return leave(NVML_ERROR_NOT_SUPPORTED);
    int v3 = fi->version == 0x03000028u;
    if (!(v3 && maxv >= 3) && fi->version != 0x02000024u) return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    for (int i = 0; i < 16; i++) fi->clusterUuid[i] = (unsigned char)(0xc0 + i);
    fi->status = (nvmlReturn_t)d->vals[F_fabricStatus];
    fi->cliqueId = (unsigned int)d->vals[F_fabricCliqueId];
    fi->state = (unsigned char)d->vals[F_fabricState];
    fi->healthMask = (unsigned int)d->vals[F_fabricHealthMask];
    if (v3) fi->healthSummary = (unsigned char)d->vals[F_fabricHealthSummary]; /* v2: 36 bytes, left alone */
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- dcgm-exporter's default fields */

static nvmlReturn_t impl_nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    ENTER(d);
    REQUIRE(mj);
    SUPPORTED(d, F_totalEnergyMj);
    *mj = d->vals[F_totalEnergyMj];
    return leave(NVML_SUCCESS);
}

/* Encoder / decoder utilization: percent and a 1 s sampling period. */
static nvmlReturn_t codec_util(nvmlDevice_t d, int idx, unsigned int *util, unsigned int *periodUs) {
    REQUIRE(util && periodUs);
    SUPPORTED(d, idx);
    *util = (unsigned)d->vals[idx];
    *periodUs = 1000000u;
    return leave(NVML_SUCCESS);
}
static nvmlReturn_t impl_nvmlDeviceGetEncoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *periodUs) {
    ENTER(d);
    return codec_util(d, F_encoderUtil, util, periodUs);
}
static nvmlReturn_t impl_nvmlDeviceGetDecoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *periodUs) {
    ENTER(d);
    return codec_util(d, F_decoderUtil, util, periodUs);
}

/* nvmlPcieUtilCounter_t: 0 TX bytes, 1 RX bytes; KB/s. */
static nvmlReturn_t impl_nvmlDeviceGetPcieThroughput(nvmlDevice_t d, unsigned int counter, unsigned int *value) {
    ENTER(d);
    REQUIRE(value && counter < 2);
    SUPPORTED(d, U_pcie);
    int idx = counter == 0 ? F_pcieTxKBps : F_pcieRxKBps;
    SUPPORTED(d, idx);
    *value = (unsigned)d->vals[idx];
    return leave(NVML_SUCCESS);
}

/* nvmlFieldValue_t (40 bytes): the fields the fake models are 82 memory temperature and 138/139
 * NVLink data TX/RX KiB (scopeId 0xFFFFFFFF = all links, a link number = its share); every other
 * field id answers NOT_SUPPORTED in its own nvmlReturn. */
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    union {
        double dVal;
        unsigned int uiVal;
        unsigned long long ullVal;
    } value;
} nvmlFieldValue_t;
_Static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t size");
_Static_assert(offsetof(nvmlFieldValue_t, value) == 32, "nvmlFieldValue_t.value offset");

static nvmlReturn_t field_value(fake_device *d, nvmlFieldValue_t *v) {
    if (v->fieldId == 82) {
        if (UNSUP(d, F_memoryTempC)) return NVML_ERROR_NOT_SUPPORTED;
        v->valueType = 1;
        v->value.uiVal = (unsigned)d->vals[F_memoryTempC];
        return NVML_SUCCESS;
    }
    if (v->fieldId == 138 || v->fieldId == 139) {
        int idx = v->fieldId == 138 ? F_nvlinkDataTxKiB : F_nvlinkDataRxKiB;
        unsigned long long links = d->vals[F_nvlinkCount];
        if (UNSUP(d, U_nvlink) || UNSUP(d, F_nvlinkCount) || links == 0 || UNSUP(d, idx))
            return NVML_ERROR_NOT_SUPPORTED;
        if (v->scopeId != 0xFFFFFFFFu && v->scopeId >= links) return NVML_ERROR_INVALID_ARGUMENT;
        v->valueType = 3;
        v->value.ullVal = v->scopeId == 0xFFFFFFFFu ? d->vals[idx] : d->vals[idx] / links;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_NOT_SUPPORTED;
}

static nvmlReturn_t impl_nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    ENTER(d);
    REQUIRE(values && count > 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
        v->latencyUsec = 0;
        v->nvmlReturn = field_value(d, v);
    }
    return leave(NVML_SUCCESS);
}

/* ---------------------------------------------------------------- exports (IFUNC) */

// An X-macro list, kept as written (clang-format would pack the entries into long lines).
// clang-format off
#define FAKE_ENTRY_POINTS(X)                                                                   \
    X(nvmlInit_v2) X(nvmlInit) X(nvmlInitWithFlags) X(nvmlShutdown) X(nvmlErrorString)         \
    X(nvmlSystemGetDriverVersion) X(nvmlSystemGetNVMLVersion) X(nvmlSystemGetCudaDriverVersion) \
    X(nvmlSystemGetCudaDriverVersion_v2) X(nvmlDeviceGetCount_v2) X(nvmlDeviceGetCount)        \
    X(nvmlDeviceGetHandleByIndex_v2) X(nvmlDeviceGetHandleByIndex) X(nvmlDeviceGetHandleByUUID) \
    X(nvmlDeviceGetHandleByPciBusId_v2) X(nvmlDeviceGetHandleByPciBusId) X(nvmlDeviceGetUUID)  \
    X(nvmlDeviceGetName) X(nvmlDeviceGetSerial) X(nvmlDeviceGetMinorNumber) X(nvmlDeviceGetIndex) \
    X(nvmlDeviceGetPciInfo_v3) X(nvmlDeviceGetPciInfo_v2) X(nvmlDeviceGetPciInfo)              \
    X(nvmlDeviceGetPciInfoExt) X(nvmlDeviceGetMemoryInfo) X(nvmlDeviceGetMemoryInfo_v2)        \
    X(nvmlDeviceGetTemperature) X(nvmlDeviceGetTemperatureV) X(nvmlDeviceGetPowerUsage)        \
    X(nvmlDeviceGetEnforcedPowerLimit) X(nvmlDeviceGetUtilizationRates) X(nvmlDeviceGetClockInfo) \
    X(nvmlDeviceGetCurrentClocksEventReasons) X(nvmlDeviceGetCurrentClocksThrottleReasons)     \
    X(nvmlDeviceGetPerformanceState) X(nvmlDeviceGetFanSpeed) X(nvmlDeviceGetPersistenceMode)  \
    X(nvmlDeviceGetEccMode) X(nvmlDeviceGetTotalEccErrors) X(nvmlDeviceGetMemoryErrorCounter)  \
    X(nvmlDeviceGetRetiredPages) X(nvmlDeviceGetRetiredPages_v2)                               \
    X(nvmlDeviceGetRetiredPagesPendingStatus) X(nvmlDeviceGetRemappedRows)                     \
    X(nvmlDeviceGetNvLinkState) X(nvmlDeviceGetNvLinkErrorCounter) X(nvmlDeviceGetPcieReplayCounter) \
    X(nvmlDeviceGetCurrPcieLinkWidth) X(nvmlDeviceGetMaxPcieLinkWidth)                         \
    X(nvmlDeviceGetCurrPcieLinkGeneration) X(nvmlDeviceGetMaxPcieLinkGeneration)               \
    X(nvmlDeviceGetSupportedEventTypes) X(nvmlEventSetCreate) X(nvmlDeviceRegisterEvents)      \
    X(nvmlEventSetWait_v2) X(nvmlEventSetWait) X(nvmlEventSetFree) X(nvmlDeviceGetGpuFabricInfoV) \
    X(nvmlDeviceGetTotalEnergyConsumption) X(nvmlDeviceGetEncoderUtilization)                  \
    X(nvmlDeviceGetDecoderUtilization) X(nvmlDeviceGetPcieThroughput) X(nvmlDeviceGetFieldValues)
// clang-format on

#define FAKE_EXPORT(name)                                                                                            \
    static __typeof__(&impl_##name) resolve_##name(void) { return fake_symbol_missing(#name) ? NULL : impl_##name; } \
    __attribute__((visibility("default"))) __typeof__(impl_##name) name __attribute__((ifunc("resolve_" #name)));
FAKE_ENTRY_POINTS(FAKE_EXPORT)

#define FAKE_NAME(name) #name,
const char *const fake_exported_names[] = {FAKE_ENTRY_POINTS(FAKE_NAME) NULL};
