/* Configuration of the fake libnvidia-ml.so.1: defaults and the JSON file named by
 * NAVARCH_FAKE_NVML_CONFIG (format: docs/fake-nvml.md). */
#define _GNU_SOURCE
#include "fake.h"
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONFIG_MAX_BYTES (1u << 20)

extern const char *const fake_exported_names[]; /* api.c, NULL-terminated */

static const char *const field_names[F_COUNT] = {
#define FAKE_NAME_F(name, def) #name,
    FAKE_FIELDS(FAKE_NAME_F)
#undef FAKE_NAME_F
};
static const unsigned long long field_defaults[F_COUNT] = {
#define FAKE_DEF_F(name, def) def,
    FAKE_FIELDS(FAKE_DEF_F)
#undef FAKE_DEF_F
};
static const char *const unsup_names[U_COUNT - F_COUNT] = {
    "serial", "minorNumber", "nvlink", "ecc",     "retiredPages", "remappedRows",
    "pcie",   "name",        "uuid",   "pciInfo", "nvlinkDown",
};

static const struct {
    const char *name;
    unsigned long long bit;
} event_names[] = {
    {"ecc_sbe", 0x1},
    {"ecc_dbe", 0x2},
    {"pstate", 0x4},
    {"xid", 0x8},
    {"clock", 0x10},
    {"power_source", 0x80},
    {"mig_config", 0x100},
    {"ecc_storm", 0x200},
    {"dram_retirement_event", 0x400},
    {"dram_retirement_failure", 0x800},
    {"non_fatal_poison", 0x1000},
    {"fatal_poison", 0x2000},
    {"gpu_unavailable", 0x4000},
    {"gpu_recovery_action", 0x8000},
};

static const unsigned default_bus[8] = {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb};

unsigned long long fake_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

int fake_field_index(const char *name) {
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(field_names[i], name) == 0) return i;
    return -1;
}

const char *fake_field_name(int idx) {
    if (idx >= 0 && idx < F_COUNT) return field_names[idx];
    if (idx >= F_COUNT && idx < U_COUNT) return unsup_names[idx - F_COUNT];
    return "?";
}

int fake_unsup_index(const char *name) {
    if (strcmp(name, "fanSpeedPercent") == 0) return F_fanSpeed; /* alias used in early docs */
    int f = fake_field_index(name);
    if (f >= 0) return f;
    for (int i = F_COUNT; i < U_COUNT; i++)
        if (strcmp(unsup_names[i - F_COUNT], name) == 0) return i;
    return -1;
}

unsigned long long fake_event_bit(const char *name) {
    for (size_t i = 0; i < sizeof event_names / sizeof event_names[0]; i++)
        if (strcmp(event_names[i].name, name) == 0) return event_names[i].bit;
    return 0;
}

static void default_device(fake_device *d, unsigned i) {
    memset(d, 0, sizeof *d);
    d->magic = FAKE_DEVICE_MAGIC;
    d->index = i;
    snprintf(d->name, sizeof d->name, "NVIDIA H100 80GB HBM3");
    snprintf(d->uuid, sizeof d->uuid, "GPU-5ca1ab1e-%04x-4e56-8a4d-%012x", i, 0x100000u + i);
    snprintf(d->serial, sizeof d->serial, "1650924060%03u", i + 1);
    d->domain = i / 8;
    d->bus = default_bus[i % 8];
    d->dev = 0;
    d->pciDeviceId = 0x233010DEu;
    d->pciSubSystemId = 0x16C110DEu;
    d->minor = i;
    d->supported_events = 0x1 | 0x2 | 0x4 | 0x8 | 0x10;
    memcpy(d->vals, field_defaults, sizeof d->vals);
    d->vals[F_temperatureC] += i;
    d->vals[F_powerUsageMw] += 1000ULL * i;
}

static void default_system(fake_system *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->driver_version, sizeof s->driver_version, "550.163.01");
    snprintf(s->nvml_version, sizeof s->nvml_version, "12.550.163.01");
    s->cuda_driver_version = 12040;
}

static char *read_config_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %m", path);
        return NULL;
    }
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t n = fread(buf, 1, CONFIG_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    if (n > CONFIG_MAX_BYTES) {
        free(buf);
        snprintf(err, errlen, "%s is larger than %u bytes", path, CONFIG_MAX_BYTES);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static jv *load_tree(char *err, size_t errlen, const char **path_out) {
    const char *path = getenv("NAVARCH_FAKE_NVML_CONFIG");
    *path_out = path;
    if (!path || !*path) return NULL;
    size_t len;
    char *text = read_config_file(path, &len, err, errlen);
    if (!text) return NULL;
    char perr[200];
    jv *root = jv_parse(text, len, perr, sizeof perr);
    free(text);
    if (!root) {
        snprintf(err, errlen, "%s: %s", path, perr);
        return NULL;
    }
    if (root->kind != JV_OBJ) {
        snprintf(err, errlen, "%s: top level must be an object", path);
        jv_free(root);
        return NULL;
    }
    return root;
}

int fake_symbol_missing(const char *name) {
    char err[256];
    const char *path;
    jv *root = load_tree(err, sizeof err, &path);
    if (!root) return 0;
    const jv *ms = jv_get(root, "missingSymbols");
    int missing = 0;
    if (ms && ms->kind == JV_ARR)
        for (size_t i = 0; i < ms->len; i++)
            if (ms->items[i]->kind == JV_STR && strcmp(ms->items[i]->str, name) == 0) missing = 1;
    jv_free(root);
    return missing;
}

/* ---- strict parsing helpers ---- */

typedef struct {
    char *err;
    size_t errlen;
    int failed;
} ctx;

static void cfail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfail(ctx *c, const char *fmt, ...) {
    if (c->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->failed = 1;
}

static int check_keys(ctx *c, const jv *obj, const char *where, const char *const *allowed) {
    for (size_t i = 0; i < obj->len; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(obj->keys[i], *a) == 0) ok = 1;
        if (!ok) {
            cfail(c, "%s: unknown key \"%s\"", where, obj->keys[i]);
            return -1;
        }
    }
    return 0;
}

/* Unsigned integer (booleans count as 0/1). */
static int get_uint(ctx *c, const jv *v, const char *where, unsigned long long max, unsigned long long *out) {
    if (v->kind == JV_BOOL) {
        *out = (unsigned long long)v->boolean;
        return 0;
    }
    long long x;
    if (jv_int(v, &x) != 0 || x < 0 || (unsigned long long)x > max) {
        cfail(c, "%s: expected an integer in 0..%llu", where, max);
        return -1;
    }
    *out = (unsigned long long)x;
    return 0;
}

static int get_str(ctx *c, const jv *v, const char *where, char *dst, size_t cap) {
    if (v->kind != JV_STR) {
        cfail(c, "%s: expected a string, got %s", where, jv_kind_name(v->kind));
        return -1;
    }
    if (v->len + 1 > cap) {
        cfail(c, "%s: longer than %zu bytes", where, cap - 1);
        return -1;
    }
    if (strlen(v->str) != v->len) {
        cfail(c, "%s: contains NUL", where);
        return -1;
    }
    memcpy(dst, v->str, v->len + 1);
    return 0;
}

int fake_parse_nvlink_down(const jv *v, unsigned long long *mask, char *err, size_t errlen);
int fake_parse_nvlink_down(const jv *v, unsigned long long *mask, char *err, size_t errlen) {
    if (v->kind != JV_ARR) {
        snprintf(err, errlen, "nvlinkDown: expected an array of link numbers");
        return -1;
    }
    unsigned long long m = 0;
    for (size_t i = 0; i < v->len; i++) {
        long long l;
        if (jv_int(v->items[i], &l) != 0 || l < 0 || l >= FAKE_MAX_NVLINKS) {
            snprintf(err, errlen, "nvlinkDown[%zu]: expected a link number in 0..%d", i, FAKE_MAX_NVLINKS - 1);
            return -1;
        }
        m |= 1ULL << l;
    }
    *mask = m;
    return 0;
}

int fake_field_max(int idx, unsigned long long *max);
int fake_field_max(int idx, unsigned long long *max) {
    switch (idx) {
        case F_memoryTotal:
        case F_memoryUsed:
        case F_memoryReserved:
        case F_clockEventReasons:
        case F_eccVolatileCorrected:
        case F_eccVolatileUncorrected:
        case F_eccAggregateCorrected:
        case F_eccAggregateUncorrected:
        case F_nvlinkReplay:
        case F_nvlinkRecovery:
        case F_nvlinkCrcFlit:
        case F_nvlinkCrcData:
        case F_totalEnergyMj:
        case F_nvlinkDataTxKiB:
        case F_nvlinkDataRxKiB: *max = (1ULL << 53); break; /* exact in a JS number */
        case F_persistenceMode:
        case F_eccCurrent:
        case F_eccPending:
        case F_retiredPagesPending:
        case F_remappedPending:
        case F_remappedFailure: *max = 1; break;
        case F_pstate: *max = 32; break;
        case F_nvlinkCount: *max = FAKE_MAX_NVLINKS; break;
        case F_retiredPagesSbe:
        case F_retiredPagesDbe: *max = 4096; break;
        default: *max = 0xFFFFFFFFULL; break;
    }
    return 0;
}

static void parse_device(ctx *c, const jv *o, fake_device *d, unsigned i) {
    char where[160];
    static const char *const keys[] = {"name",      "uuid",        "serial", "pci",  "minorNumber", "supportedEvents",
                                       "telemetry", "unsupported", "lost",   "hang", NULL};
    snprintf(where, sizeof where, "devices[%u]", i);
    if (o->kind != JV_OBJ) {
        cfail(c, "%s: expected an object", where);
        return;
    }
    if (check_keys(c, o, where, keys) != 0) return;
    const jv *v;
    unsigned long long u;
    if ((v = jv_get(o, "name"))) {
        snprintf(where, sizeof where, "devices[%u].name", i);
        get_str(c, v, where, d->name, 96);
    }
    if ((v = jv_get(o, "uuid"))) {
        snprintf(where, sizeof where, "devices[%u].uuid", i);
        get_str(c, v, where, d->uuid, 80);
    }
    if ((v = jv_get(o, "serial"))) {
        snprintf(where, sizeof where, "devices[%u].serial", i);
        get_str(c, v, where, d->serial, 30);
    }
    if ((v = jv_get(o, "minorNumber"))) {
        snprintf(where, sizeof where, "devices[%u].minorNumber", i);
        if (get_uint(c, v, where, 0xFFFFFFFFULL, &u) == 0) d->minor = (unsigned)u;
    }
    if ((v = jv_get(o, "pci"))) {
        static const char *const pk[] = {"domain", "bus", "device", "pciDeviceId", "pciSubSystemId", NULL};
        snprintf(where, sizeof where, "devices[%u].pci", i);
        if (v->kind != JV_OBJ) {
            cfail(c, "%s: expected an object", where);
            return;
        }
        if (check_keys(c, v, where, pk) != 0) return;
        struct {
            const char *k;
            unsigned *dst;
            unsigned long long max;
        } m[] = {{"domain", &d->domain, 0xFFFFFFFFULL},
                 {"bus", &d->bus, 0xFF},
                 {"device", &d->dev, 31},
                 {"pciDeviceId", &d->pciDeviceId, 0xFFFFFFFFULL},
                 {"pciSubSystemId", &d->pciSubSystemId, 0xFFFFFFFFULL}};
        for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
            const jv *x = jv_get(v, m[k].k);
            char w2[200];
            snprintf(w2, sizeof w2, "devices[%u].pci.%s", i, m[k].k);
            if (x && get_uint(c, x, w2, m[k].max, &u) == 0) *m[k].dst = (unsigned)u;
        }
    }
    if ((v = jv_get(o, "supportedEvents"))) {
        snprintf(where, sizeof where, "devices[%u].supportedEvents", i);
        if (v->kind != JV_ARR) {
            cfail(c, "%s: expected an array of event names", where);
            return;
        }
        d->supported_events = 0;
        for (size_t k = 0; k < v->len; k++) {
            const jv *x = v->items[k];
            unsigned long long bit = x->kind == JV_STR ? fake_event_bit(x->str) : 0;
            if (!bit) {
                cfail(c, "%s[%zu]: unknown event type", where, k);
                return;
            }
            d->supported_events |= bit;
        }
    }
    if ((v = jv_get(o, "telemetry"))) {
        snprintf(where, sizeof where, "devices[%u].telemetry", i);
        if (v->kind != JV_OBJ) {
            cfail(c, "%s: expected an object", where);
            return;
        }
        for (size_t k = 0; k < v->len; k++) {
            char w2[200];
            snprintf(w2, sizeof w2, "devices[%u].telemetry.%s", i, v->keys[k]);
            if (strcmp(v->keys[k], "nvlinkDown") == 0) {
                char e2[160];
                if (fake_parse_nvlink_down(v->items[k], &d->nvlink_down, e2, sizeof e2) != 0)
                    cfail(c, "devices[%u].telemetry.%s", i, e2);
                continue;
            }
            int f = fake_field_index(v->keys[k]);
            if (f < 0) {
                cfail(c, "%s: unknown telemetry key", w2);
                return;
            }
            unsigned long long max;
            fake_field_max(f, &max);
            if (get_uint(c, v->items[k], w2, max, &u) == 0) d->vals[f] = u;
        }
    }
    if ((v = jv_get(o, "unsupported"))) {
        snprintf(where, sizeof where, "devices[%u].unsupported", i);
        if (v->kind != JV_ARR) {
            cfail(c, "%s: expected an array of names", where);
            return;
        }
        for (size_t k = 0; k < v->len; k++) {
            const jv *x = v->items[k];
            int idx = x->kind == JV_STR ? fake_unsup_index(x->str) : -1;
            if (idx < 0) {
                cfail(c, "%s[%zu]: unknown name %s%s%s", where, k, x->kind == JV_STR ? "\"" : "",
                      x->kind == JV_STR ? x->str : jv_kind_name(x->kind), x->kind == JV_STR ? "\"" : "");
                return;
            }
            d->unsupported |= 1ULL << idx;
        }
    }
    if ((v = jv_get(o, "lost"))) {
        snprintf(where, sizeof where, "devices[%u].lost", i);
        if (v->kind != JV_BOOL) {
            cfail(c, "%s: expected a boolean", where);
            return;
        }
        d->lost = v->boolean;
    }
    if ((v = jv_get(o, "hang"))) {
        static const char *const hk[] = {"function", "ms", NULL};
        snprintf(where, sizeof where, "devices[%u].hang", i);
        if (v->kind != JV_OBJ) {
            cfail(c, "%s: expected an object", where);
            return;
        }
        if (check_keys(c, v, where, hk) != 0) return;
        const jv *fn = jv_get(v, "function"), *ms = jv_get(v, "ms");
        if (!fn || !ms) {
            cfail(c, "%s: needs \"function\" and \"ms\"", where);
            return;
        }
        if (get_str(c, fn, where, d->hang_fn, sizeof d->hang_fn) != 0) return;
        if (get_uint(c, ms, where, 86400000ULL, &u) == 0) d->hang_ms = (long long)u;
    }
}

int fake_load_config(char *err, size_t errlen) {
    fake_system sys;
    static fake_device devs[FAKE_MAX_DEVICES];
    unsigned ndev = 8;
    default_system(&sys);
    for (unsigned i = 0; i < FAKE_MAX_DEVICES; i++) default_device(&devs[i], i);

    const char *path;
    char lerr[300];
    lerr[0] = '\0';
    jv *root = load_tree(lerr, sizeof lerr, &path);
    if (!root && path && *path) {
        snprintf(err, errlen, "%s", lerr);
        return -1;
    }
    ctx c = {err, errlen, 0};
    if (root) {
        static const char *const keys[] = {"driverVersion", "nvmlVersion", "cudaDriverVersion",
                                           "initError",     "initHangMs",  "missingSymbols",
                                           "controlSocket", "devices",     NULL};
        const jv *v;
        unsigned long long u;
        check_keys(&c, root, "top level", keys);
        if (!c.failed && (v = jv_get(root, "driverVersion")))
            get_str(&c, v, "driverVersion", sys.driver_version, sizeof sys.driver_version);
        if (!c.failed && (v = jv_get(root, "nvmlVersion")))
            get_str(&c, v, "nvmlVersion", sys.nvml_version, sizeof sys.nvml_version);
        if (!c.failed && (v = jv_get(root, "cudaDriverVersion")) &&
            get_uint(&c, v, "cudaDriverVersion", 0x7FFFFFFF, &u) == 0)
            sys.cuda_driver_version = (int)u;
        if (!c.failed && (v = jv_get(root, "initError")) && get_uint(&c, v, "initError", 0x7FFFFFFF, &u) == 0)
            sys.init_error = (int)u;
        if (!c.failed && (v = jv_get(root, "initHangMs")) && get_uint(&c, v, "initHangMs", 86400000ULL, &u) == 0)
            sys.init_hang_ms = (long long)u;
        if (!c.failed && (v = jv_get(root, "controlSocket")))
            get_str(&c, v, "controlSocket (max 107 bytes)", sys.control_socket, sizeof sys.control_socket);
        if (!c.failed && (v = jv_get(root, "missingSymbols"))) {
            if (v->kind != JV_ARR) cfail(&c, "missingSymbols: expected an array of symbol names");
            for (size_t k = 0; !c.failed && k < v->len; k++) {
                const jv *x = v->items[k];
                int known = 0;
                for (const char *const *n = fake_exported_names; x->kind == JV_STR && *n; n++)
                    if (strcmp(*n, x->str) == 0) known = 1;
                if (!known) cfail(&c, "missingSymbols[%zu]: not an entry point of this library", k);
            }
        }
        if (!c.failed && (v = jv_get(root, "devices"))) {
            if (v->kind != JV_ARR) cfail(&c, "devices: expected an array");
            else if (v->len > FAKE_MAX_DEVICES) cfail(&c, "devices: at most %d devices", FAKE_MAX_DEVICES);
            else {
                ndev = (unsigned)v->len;
                for (unsigned i = 0; !c.failed && i < ndev; i++) parse_device(&c, v->items[i], &devs[i], i);
            }
        }
        /* duplicate identities would make lookups ambiguous */
        for (unsigned i = 0; !c.failed && i < ndev; i++)
            for (unsigned j = i + 1; !c.failed && j < ndev; j++) {
                if (strcmp(devs[i].uuid, devs[j].uuid) == 0)
                    cfail(&c, "devices[%u] and devices[%u] have the same uuid", i, j);
                else if (devs[i].domain == devs[j].domain && devs[i].bus == devs[j].bus && devs[i].dev == devs[j].dev)
                    cfail(&c, "devices[%u] and devices[%u] have the same PCI bus id", i, j);
            }
        jv_free(root);
        if (c.failed) {
            /* prefix the file name once */
            char tmp[512];
            snprintf(tmp, sizeof tmp, "%s: %s", path, err);
            snprintf(err, errlen, "%s", tmp);
            return -1;
        }
    }
    g_sys = sys;
    memcpy(g_dev, devs, sizeof devs);
    g_ndev = ndev;
    return 0;
}
