/* Concurrency stress test of the fake libnvidia-ml.so.1, meant to be built with
 * -fsanitize=thread (make -C native/fake-nvml tsan). It dlopens the library given as argv[1]
 * (a TSan-instrumented build), then for several rounds: init, start getter threads, a waiter
 * thread, and an injector thread talking to the control socket (xid, storm, set, lost/recover,
 * hang), and finally shuts down while waits and hung calls are in flight.
 * Exit status 0 when every check held; TSan reports races on stderr (and fails the exit code). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef int (*fn_void)(void);
typedef int (*fn_count)(unsigned *);
typedef int (*fn_handle)(unsigned, void **);
typedef int (*fn_uint)(void *, unsigned *);
typedef int (*fn_temp)(void *, unsigned, unsigned *);
typedef int (*fn_set_create)(void **);
typedef int (*fn_register)(void *, unsigned long long, void *);
typedef int (*fn_wait)(void *, void *, unsigned);
typedef int (*fn_set_free)(void *);

static fn_void p_init, p_shutdown;
static fn_count p_count;
static fn_handle p_handle;
static fn_uint p_power;
static fn_temp p_temp;
static fn_set_create p_set_create;
static fn_register p_register;
static fn_wait p_wait;
static fn_set_free p_set_free;

static const char *g_sock;
static volatile int g_stop; /* only written before joins; read by workers (atomic builtins below) */
static int g_failures;

static void fail(const char *what) {
    __atomic_add_fetch(&g_failures, 1, __ATOMIC_SEQ_CST);
    fprintf(stderr, "stress: %s\n", what);
}

static int stopping(void) { return __atomic_load_n(&g_stop, __ATOMIC_SEQ_CST); }

static void *getters(void *arg) {
    (void)arg;
    unsigned n = 0;
    while (!stopping()) {
        if (p_count(&n) != 0) {
            fail("count");
            break;
        }
        for (unsigned i = 0; i < n; i++) {
            void *h;
            unsigned v;
            int rc = p_handle(i, &h);
            if (rc == 15) continue; /* lost */
            if (rc != 0) {
                fail("handle");
                return NULL;
            }
            rc = p_power(h, &v);
            if (rc != 0 && rc != 15) {
                fail("power");
                return NULL;
            }
            rc = p_temp(h, 0, &v);
            if (rc != 0 && rc != 15) {
                fail("temperature");
                return NULL;
            }
        }
    }
    return NULL;
}

typedef struct {
    void *set;
    unsigned long long events;
    int lost_seen;
} waiter_arg;

static void *waiter(void *arg) {
    waiter_arg *w = arg;
    unsigned char data[32];
    while (!stopping()) {
        int rc = p_wait(w->set, data, 50);
        if (rc == 0) w->events++;
        else if (rc == 15) {
            w->lost_seen = 1;
            usleep(1000);
        } else if (rc != 10) {
            fail("wait");
            break;
        }
    }
    return NULL;
}

static int request(const char *line, char *reply, size_t cap) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", g_sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r = read(fd, reply + got, cap - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
        if (memchr(reply, '\n', got)) break;
    }
    reply[got] = '\0';
    close(fd);
    return strstr(reply, "\"ok\":true") ? 0 : -1;
}

static void *injector(void *arg) {
    (void)arg;
    char reply[1024];
    static const char *const reqs[] = {
        "{\"op\":\"xid\",\"device\":0,\"xid\":79}\n",
        "{\"op\":\"storm\",\"device\":1,\"xid\":13,\"count\":20000,\"distinct\":7}\n",
        "{\"op\":\"set\",\"device\":2,\"field\":\"temperatureC\",\"value\":91}\n",
        "{\"op\":\"lost\",\"device\":3}\n",
        "{\"op\":\"hang\",\"device\":2,\"function\":\"nvmlDeviceGetPowerUsage\",\"ms\":20}\n",
        "{\"op\":\"recover\",\"device\":3}\n",
        "{\"op\":\"recover\",\"device\":2}\n",
        "{\"op\":\"event\",\"device\":0,\"type\":\"ecc_dbe\"}\n",
        "{\"op\":\"stats\"}\n",
    };
    for (unsigned k = 0; !stopping(); k++) {
        const char *r = reqs[k % (sizeof reqs / sizeof reqs[0])];
        if (request(r, reply, sizeof reply) != 0) {
            fail(reply[0] ? reply : "control request");
            break;
        }
    }
    return NULL;
}

typedef struct {
    void *dev;
    void *set;
    int rc;
} blocked_arg;

/* One call that blocks: a hung getter (dev) or a 60 s wait (set). */
static void *blocked(void *arg) {
    blocked_arg *b = arg;
    unsigned v;
    unsigned char data[32];
    b->rc = b->dev ? p_power(b->dev, &v) : p_wait(b->set, data, 60000);
    return NULL;
}

#define LOAD(var, type, name)                         \
    do {                                              \
        var = (type)dlsym(lib, name);                 \
        if (!var) {                                   \
            fprintf(stderr, "stress: no %s\n", name); \
            return 2;                                 \
        }                                             \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: stress LIB SOCKET (config in NAVARCH_FAKE_NVML_CONFIG)\n");
        return 2;
    }
    g_sock = argv[2];
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "stress: %s\n", dlerror());
        return 2;
    }
    LOAD(p_init, fn_void, "nvmlInit_v2");
    LOAD(p_shutdown, fn_void, "nvmlShutdown");
    LOAD(p_count, fn_count, "nvmlDeviceGetCount_v2");
    LOAD(p_handle, fn_handle, "nvmlDeviceGetHandleByIndex_v2");
    LOAD(p_power, fn_uint, "nvmlDeviceGetPowerUsage");
    LOAD(p_temp, fn_temp, "nvmlDeviceGetTemperature");
    LOAD(p_set_create, fn_set_create, "nvmlEventSetCreate");
    LOAD(p_register, fn_register, "nvmlDeviceRegisterEvents");
    LOAD(p_wait, fn_wait, "nvmlEventSetWait_v2");
    LOAD(p_set_free, fn_set_free, "nvmlEventSetFree");

    unsigned long long total = 0;
    for (int round = 0; round < 3; round++) {
        if (p_init() != 0) {
            fail("init");
            break;
        }
        void *set;
        if (p_set_create(&set) != 0) {
            fail("set create");
            break;
        }
        for (unsigned i = 0; i < 4; i++) {
            void *h;
            if (p_handle(i, &h) != 0 || p_register(h, 0x8 | 0x2, set) != 0) fail("register");
        }
        __atomic_store_n(&g_stop, 0, __ATOMIC_SEQ_CST);
        waiter_arg w = {set, 0, 0};
        pthread_t tg[3], tw, ti;
        for (int k = 0; k < 3; k++) pthread_create(&tg[k], NULL, getters, NULL);
        pthread_create(&tw, NULL, waiter, &w);
        pthread_create(&ti, NULL, injector, NULL);
        usleep(700 * 1000);
        __atomic_store_n(&g_stop, 1, __ATOMIC_SEQ_CST);
        pthread_join(ti, NULL);
        for (int k = 0; k < 3; k++) pthread_join(tg[k], NULL);
        pthread_join(tw, NULL);
        if (w.events == 0) fail("no event delivered");
        total += w.events;
        if (p_set_free(set) != 0) fail("set free");
        if (round < 2) {
            if (p_shutdown() != 0) fail("shutdown");
            continue;
        }
        /* last round: a hung call and a blocked 60 s wait in flight while the last shutdown happens */
        char reply[256];
        if (request("{\"op\":\"hang\",\"device\":0,\"function\":\"nvmlDeviceGetPowerUsage\",\"ms\":60000}\n", reply,
                    sizeof reply) != 0)
            fail("hang request");
        void *set2, *h0;
        if (p_set_create(&set2) != 0 || p_handle(0, &h0) != 0 || p_register(h0, 0x8, set2) != 0) fail("set 2");
        pthread_t th, tb;
        blocked_arg hb = {h0, NULL, -1}, wb = {NULL, set2, -1};
        pthread_create(&th, NULL, blocked, &hb);
        pthread_create(&tb, NULL, blocked, &wb);
        usleep(300 * 1000);
        if (p_shutdown() != 0) fail("shutdown with calls in flight");
        pthread_join(th, NULL);
        pthread_join(tb, NULL);
        if (hb.rc != 1) fail("hung call did not return UNINITIALIZED at shutdown");
        if (wb.rc != 1) fail("blocked wait did not return UNINITIALIZED at shutdown");
    }
    printf("stress: %llu events delivered, %d failure(s)\n", total, g_failures);
    return g_failures == 0 ? 0 : 1;
}
