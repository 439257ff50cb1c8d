/* Run-time fault injection over a UNIX stream socket (docs/fake-nvml.md, "Run-time injection").
 * One listener thread, started by the first nvmlInit and joined by the last nvmlShutdown.
 * Requests and replies are single lines of JSON. */
#define _GNU_SOURCE
#include "fake.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 32
#define MAX_LINE (64 * 1024)
#define REPLY_CAP 1024
#define STORM_BATCH 1024
#define STORM_MAX 100000000LL

extern const char *const fake_exported_names[];
int fake_parse_nvlink_down(const jv *v, unsigned long long *mask, char *err, size_t errlen);
int fake_field_max(int idx, unsigned long long *max);

typedef struct {
    int fd;
    size_t len;
    char *buf;
} client;

static pthread_t g_thread;
static int g_running;
static int g_listen_fd = -1;
static int g_wake[2] = {-1, -1};
static char g_path[108];

/* ---------------------------------------------------------------- replies */

static void json_escape(char *out, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o] = '\0';
}

static void reply_err(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_err(char *out, const char *fmt, ...) {
    char msg[400], esc[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_escape(esc, sizeof esc, msg);
    snprintf(out, REPLY_CAP, "{\"ok\":false,\"error\":\"%s\"}", esc);
}

/* ---------------------------------------------------------------- request helpers */

static int want_int(const jv *req, const char *key, long long lo, long long hi, long long *out, char *reply,
                    int required, long long dflt) {
    const jv *v = jv_get(req, key);
    if (!v) {
        if (!required) {
            *out = dflt;
            return 0;
        }
        reply_err(reply, "missing \"%s\"", key);
        return -1;
    }
    long long x;
    if (jv_int(v, &x) != 0 || x < lo || x > hi) {
        reply_err(reply, "\"%s\" must be an integer in %lld..%lld", key, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Device index check; caller holds g_mu. */
static int want_device(const jv *req, long long *dev, char *reply) {
    if (want_int(req, "device", 0, FAKE_MAX_DEVICES - 1, dev, reply, 1, 0) != 0) return -1;
    if ((unsigned long long)*dev >= g_ndev) {
        reply_err(reply, "device %lld out of range (%u devices)", *dev, g_ndev);
        return -1;
    }
    return 0;
}

static const char *want_str(const jv *req, const char *key, char *reply) {
    const jv *v = jv_get(req, key);
    if (!v || v->kind != JV_STR) {
        reply_err(reply, "\"%s\" must be a string", key);
        return NULL;
    }
    return v->str;
}

static void reply_enqueue(char *reply, unsigned rec, unsigned drop) {
    snprintf(reply, REPLY_CAP, "{\"ok\":true,\"recorded\":%u,\"dropped\":%u,\"enqueuedNs\":%llu}", rec, drop,
             g_last_enqueue_ns);
}

/* ---------------------------------------------------------------- ops */

static void op_storm(const jv *req, char *reply) {
    long long dev, xid, count, distinct, rate;
    pthread_mutex_lock(&g_mu);
    int bad = want_device(req, &dev, reply) || want_int(req, "xid", 0, 0xFFFFFFFFLL, &xid, reply, 0, 13) ||
              want_int(req, "count", 1, STORM_MAX, &count, reply, 1, 0) ||
              want_int(req, "distinct", 1, 1000000, &distinct, reply, 0, 1) ||
              want_int(req, "perSecond", 0, 1000000000LL, &rate, reply, 0, 0);
    pthread_mutex_unlock(&g_mu);
    if (bad) return;
    unsigned long long rec = 0, drop = 0, start = fake_now_ns();
    long long done = 0;
    /* paced storms enqueue about one millisecond's worth per lock hold */
    long long batch = rate > 0 && rate / 1000 < STORM_BATCH ? (rate / 1000 > 0 ? rate / 1000 : 1) : STORM_BATCH;
    while (done < count) {
        if (rate > 0) { /* paced storm: never run ahead of done/rate seconds */
            unsigned long long due = start + (unsigned long long)((double)done * 1e9 / (double)rate);
            unsigned long long now = fake_now_ns();
            if (due > now) {
                struct timespec ts = {(time_t)((due - now) / 1000000000ULL), (long)((due - now) % 1000000000ULL)};
                nanosleep(&ts, NULL);
            }
        }
        pthread_mutex_lock(&g_mu);
        if ((unsigned long long)dev >= g_ndev) {
            pthread_mutex_unlock(&g_mu);
            break;
        }
        for (long long k = 0; k < batch && done < count; k++, done++) {
            unsigned d = 0;
            rec += fake_enqueue((unsigned)dev, 0x8, (unsigned long long)(xid + done % distinct), &d);
            drop += d;
        }
        pthread_mutex_unlock(&g_mu);
    }
    unsigned long long end = fake_now_ns();
    snprintf(reply, REPLY_CAP,
             "{\"ok\":true,\"recorded\":%llu,\"dropped\":%llu,\"startNs\":%llu,\"endNs\":%llu,\"elapsedNs\":%llu}", rec,
             drop, start, end, end - start);
}

static int known_function(const char *fn) {
    if (strcmp(fn, "*") == 0) return 1;
    for (const char *const *n = fake_exported_names; *n; n++)
        if (strcmp(*n, fn) == 0) return 1;
    return 0;
}

/* Handles one request line; writes a one-line JSON reply (without newline) into reply. */
static void handle(const char *line, size_t len, char *reply) {
    char perr[200];
    jv *req = jv_parse(line, len, perr, sizeof perr);
    if (!req) {
        reply_err(reply, "%s", perr);
        return;
    }
    if (req->kind != JV_OBJ) {
        reply_err(reply, "request must be a JSON object");
        jv_free(req);
        return;
    }
    const char *op = want_str(req, "op", reply);
    if (!op) {
        jv_free(req);
        return;
    }
    long long dev = 0, x = 0;

    if (strcmp(op, "storm") == 0) {
        op_storm(req, reply);
        jv_free(req);
        return;
    }

    pthread_mutex_lock(&g_mu);
    if (strcmp(op, "stats") == 0) {
        unsigned long long queued = 0, sets = 0;
        for (fake_set *s = g_sets; s; s = s->next) {
            queued += s->count;
            sets++;
        }
        snprintf(reply, REPLY_CAP,
                 "{\"ok\":true,\"queued\":%llu,\"waits\":%llu,\"recorded\":%llu,\"dropped\":%llu,"
                 "\"eventSets\":%llu,\"initCount\":%d,\"devices\":%u,\"hung\":%u,\"lastEnqueueNs\":%llu,"
                 "\"nowNs\":%llu}",
                 queued, g_waits, g_recorded, g_dropped, sets, g_init_count, g_ndev, g_hung, g_last_enqueue_ns,
                 fake_now_ns());
    } else if (strcmp(op, "xid") == 0) {
        if (!want_device(req, &dev, reply) && !want_int(req, "xid", 0, 0xFFFFFFFFLL, &x, reply, 1, 0)) {
            unsigned drop = 0, rec = fake_enqueue((unsigned)dev, 0x8, (unsigned long long)x, &drop);
            reply_enqueue(reply, rec, drop);
        }
    } else if (strcmp(op, "event") == 0) {
        const char *type;
        unsigned long long bit = 0;
        if (!want_device(req, &dev, reply) && (type = want_str(req, "type", reply)) != NULL) {
            bit = fake_event_bit(type);
            if (!bit) reply_err(reply, "unknown event type \"%s\"", type);
            else if (!want_int(req, "data", 0, 0xFFFFFFFFLL, &x, reply, 0, 0)) {
                unsigned drop = 0, rec = fake_enqueue((unsigned)dev, bit, (unsigned long long)x, &drop);
                reply_enqueue(reply, rec, drop);
            }
        }
    } else if (strcmp(op, "lost") == 0) {
        const jv *attr = jv_get(req, "attributable");
        if (attr && attr->kind != JV_BOOL) {
            reply_err(reply, "\"attributable\" must be a boolean");
        } else if (!want_device(req, &dev, reply)) {
            /* attributable:false = NVML cannot say which GPU: its calls still answer, only a wait
             * on an event set holding it returns GPU_IS_LOST */
            if (attr && !attr->boolean) g_dev[dev].lost_unattributed = 1;
            else g_dev[dev].lost = 1;
            fake_wake_all();
            snprintf(reply, REPLY_CAP, "{\"ok\":true}");
        }
    } else if (strcmp(op, "recover") == 0) {
        if (!want_device(req, &dev, reply)) {
            g_dev[dev].lost = 0;
            g_dev[dev].lost_unattributed = 0;
            g_dev[dev].hang_fn[0] = '\0';
            g_dev[dev].hang_ms = 0;
            g_dev[dev].hang_gen++;
            fake_wake_all();
            snprintf(reply, REPLY_CAP, "{\"ok\":true}");
        }
    } else if (strcmp(op, "hang") == 0) {
        const char *fn;
        if (!want_device(req, &dev, reply) && (fn = want_str(req, "function", reply)) != NULL &&
            !want_int(req, "ms", 0, 86400000LL, &x, reply, 1, 0)) {
            if (!known_function(fn) || strlen(fn) >= sizeof g_dev[0].hang_fn)
                reply_err(reply, "unknown function \"%s\" (an nvml entry point or \"*\")", fn);
            else {
                snprintf(g_dev[dev].hang_fn, sizeof g_dev[dev].hang_fn, "%s", fn);
                g_dev[dev].hang_ms = x;
                snprintf(reply, REPLY_CAP, "{\"ok\":true}");
            }
        }
    } else if (strcmp(op, "set") == 0) {
        const char *field;
        if (!want_device(req, &dev, reply) && (field = want_str(req, "field", reply)) != NULL) {
            const jv *v = jv_get(req, "value");
            int f = fake_field_index(field);
            if (!v) reply_err(reply, "missing \"value\"");
            else if (strcmp(field, "nvlinkDown") == 0) {
                char e[160];
                unsigned long long m;
                if (fake_parse_nvlink_down(v, &m, e, sizeof e) != 0) reply_err(reply, "%s", e);
                else {
                    g_dev[dev].nvlink_down = m;
                    snprintf(reply, REPLY_CAP, "{\"ok\":true}");
                }
            } else if (f < 0) reply_err(reply, "unknown field \"%s\"", field);
            else {
                unsigned long long max;
                long long val;
                fake_field_max(f, &max);
                if (v->kind == JV_BOOL) val = v->boolean;
                else if (jv_int(v, &val) != 0) val = -1;
                if (val < 0 || (unsigned long long)val > max)
                    reply_err(reply, "\"value\" for %s must be an integer in 0..%llu", field, max);
                else {
                    g_dev[dev].vals[f] = (unsigned long long)val;
                    snprintf(reply, REPLY_CAP, "{\"ok\":true}");
                }
            }
        }
    } else if (strcmp(op, "unsupported") == 0) {
        const char *field;
        if (!want_device(req, &dev, reply) && (field = want_str(req, "field", reply)) != NULL) {
            int idx = fake_unsup_index(field);
            const jv *v = jv_get(req, "value");
            if (idx < 0) reply_err(reply, "unknown field \"%s\"", field);
            else if (v && v->kind != JV_BOOL) reply_err(reply, "\"value\" must be a boolean");
            else {
                if (!v || v->boolean) g_dev[dev].unsupported |= 1ULL << idx;
                else g_dev[dev].unsupported &= ~(1ULL << idx);
                snprintf(reply, REPLY_CAP, "{\"ok\":true}");
            }
        }
    } else {
        reply_err(reply, "unknown op \"%s\"", op);
    }
    pthread_mutex_unlock(&g_mu);
    jv_free(req);
}

/* ---------------------------------------------------------------- listener */

static void send_line(int fd, const char *s) {
    size_t n = strlen(s), off = 0;
    char buf[REPLY_CAP + 2];
    memcpy(buf, s, n);
    buf[n++] = '\n';
    while (off < n) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* peer gone or send timeout: the reply is lost, the state change is not */
        off += (size_t)w;
    }
}

static void drop_client(client *c) {
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = 0;
}

/* Reads what is available; handles every complete line. Returns -1 when the client is done. */
static int serve_client(client *c) {
    if (!c->buf) {
        c->buf = malloc(MAX_LINE);
        if (!c->buf) return -1;
    }
    ssize_t r = recv(c->fd, c->buf + c->len, MAX_LINE - c->len, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (r <= 0) return -1;
    c->len += (size_t)r;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (!nl) break;
        size_t l = (size_t)(nl - c->buf);
        char reply[REPLY_CAP];
        size_t ll = l;
        if (ll > 0 && c->buf[ll - 1] == '\r') ll--;
        handle(c->buf, ll, reply);
        send_line(c->fd, reply);
        memmove(c->buf, nl + 1, c->len - l - 1);
        c->len -= l + 1;
    }
    if (c->len == MAX_LINE) {
        char reply[REPLY_CAP];
        reply_err(reply, "request line longer than %d bytes", MAX_LINE);
        send_line(c->fd, reply);
        return -1;
    }
    return 0;
}

static void *listener(void *arg) {
    (void)arg;
    client clients[MAX_CLIENTS];
    for (int i = 0; i < MAX_CLIENTS; i++) {
        clients[i].fd = -1;
        clients[i].buf = NULL;
        clients[i].len = 0;
    }
    for (;;) {
        struct pollfd pf[MAX_CLIENTS + 2];
        int map[MAX_CLIENTS + 2];
        nfds_t n = 0;
        pf[n].fd = g_wake[0];
        pf[n].events = POLLIN;
        map[n++] = -1;
        pf[n].fd = g_listen_fd;
        pf[n].events = POLLIN;
        map[n++] = -2;
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (clients[i].fd >= 0) {
                pf[n].fd = clients[i].fd;
                pf[n].events = POLLIN;
                map[n++] = i;
            }
        int pr = poll(pf, n, -1);
        if (pr < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pf[0].revents) break; /* stop requested */
        if (pf[1].revents & POLLIN) {
            int fd = accept4(g_listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS; i++)
                    if (clients[i].fd < 0) {
                        slot = i;
                        break;
                    }
                if (slot < 0) {
                    send_line(fd, "{\"ok\":false,\"error\":\"too many control connections\"}");
                    close(fd);
                } else {
                    struct timeval tv = {2, 0}; /* a client that never reads cannot wedge the listener */
                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                    clients[slot].fd = fd;
                }
            }
        }
        for (nfds_t k = 2; k < n; k++)
            if (pf[k].revents && serve_client(&clients[map[k]]) != 0) drop_client(&clients[map[k]]);
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i].fd >= 0) drop_client(&clients[i]);
    return NULL;
}

int fake_control_start(const char *path, char *err, size_t errlen) {
    struct sockaddr_un addr;
    if (strlen(path) >= sizeof addr.sun_path) {
        snprintf(err, errlen, "path longer than %zu bytes: %s", sizeof addr.sun_path - 1, path);
        return -1;
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            return -1;
        }
        /* A live listener there belongs to another process using the same config: leave it alone
         * (injections keep going to that process) instead of stealing its path. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0) {
            close(probe);
            fprintf(stderr, "fake-nvml: control socket %s is served by another process; this one does not listen\n",
                    path);
            return 0;
        }
        if (probe >= 0) close(probe);
        unlink(path); /* stale socket of an earlier session */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
        snprintf(err, errlen, "bind/listen %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (pipe2(g_wake, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    g_listen_fd = fd;
    snprintf(g_path, sizeof g_path, "%s", path);
    /* the listener must never take the host process's signals */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g_thread, NULL, listener, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(rc));
        close(fd);
        close(g_wake[0]);
        close(g_wake[1]);
        g_listen_fd = g_wake[0] = g_wake[1] = -1;
        unlink(path);
        return -1;
    }
    g_running = 1;
    return 0;
}

/* Stops the listener; with wait_ms > 0 gives up joining after that long (process exit, dlclose). */
static void control_stop(long wait_ms) {
    if (!g_running) return;
    ssize_t w;
    do { w = write(g_wake[1], "x", 1); } while (w < 0 && errno == EINTR);
    if (wait_ms > 0) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += wait_ms / 1000;
        dl.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        if (pthread_timedjoin_np(g_thread, NULL, &dl) != 0) {
            unlink(g_path);
            return;
        }
    } else {
        pthread_join(g_thread, NULL);
    }
    close(g_listen_fd);
    close(g_wake[0]);
    close(g_wake[1]);
    g_listen_fd = g_wake[0] = g_wake[1] = -1;
    unlink(g_path);
    g_running = 0;
}

void fake_control_stop(void) { control_stop(0); }

/* Process exit or dlclose without the final nvmlShutdown: stop the thread, remove the socket file. */
__attribute__((destructor)) static void control_dtor(void) { control_stop(2000); }
