/* Minimal JSON reader for the fake libnvidia-ml (config file and control-socket requests).
 * Builds a small tree; strings are UTF-8 with escapes decoded; numbers keep an exact 64-bit
 * integer form when they are integral. Bounded: depth <= 64, input size chosen by the caller. */
#ifndef FAKE_NVML_JSON_H
#define FAKE_NVML_JSON_H

#include <stddef.h>

typedef enum { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_ARR, JV_OBJ } jv_kind;

typedef struct jv {
    jv_kind kind;
    int boolean;
    double num;
    long long inum; /* valid when is_int */
    int is_int;
    char *str;         /* JV_STR */
    size_t len;        /* JV_STR: bytes; JV_ARR/JV_OBJ: element count */
    char **keys;       /* JV_OBJ */
    struct jv **items; /* JV_ARR / JV_OBJ values */
} jv;

/* Parses `text` (length `n`). On failure returns NULL and writes a one-line message to err. */
jv *jv_parse(const char *text, size_t n, char *err, size_t errlen);
void jv_free(jv *v);
/* Object member lookup (NULL when v is not an object or the key is absent). */
const jv *jv_get(const jv *v, const char *key);
/* Integral number accessor: returns 0 and sets *out when v is an integral number. */
int jv_int(const jv *v, long long *out);
const char *jv_kind_name(jv_kind k);

#endif
