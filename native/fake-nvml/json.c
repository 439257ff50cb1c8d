/* Minimal JSON reader (see json.h). Written for this project. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t n, i;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *p, const char *what) {
    if (!p->failed) {
        snprintf(p->err, p->errlen, "invalid JSON at offset %zu: %s", p->i, what);
        p->failed = 1;
    }
}

static void skip_ws(parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

static jv *new_jv(parser *p, jv_kind k) {
    jv *v = calloc(1, sizeof(*v));
    if (!v) {
        fail(p, "out of memory");
        return NULL;
    }
    v->kind = k;
    return v;
}

static jv *parse_value(parser *p, int depth);

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *p, unsigned *out) {
    if (p->i + 4 > p->n) {
        fail(p, "truncated \\u escape");
        return -1;
    }
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + (size_t)k]);
        if (h < 0) {
            fail(p, "bad \\u escape");
            return -1;
        }
        v = (v << 4) | (unsigned)h;
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* Parses a string starting at the opening quote; returns malloc'd bytes. */
static char *parse_string(parser *p, size_t *len_out) {
    if (p->i >= p->n || p->s[p->i] != '"') {
        fail(p, "expected string");
        return NULL;
    }
    p->i++;
    size_t cap = 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fail(p, "out of memory");
        return NULL;
    }
    for (;;) {
        if (p->i >= p->n) {
            fail(p, "unterminated string");
            free(buf);
            return NULL;
        }
        unsigned char c = (unsigned char)p->s[p->i++];
        unsigned cp;
        char tmp[4];
        size_t tl = 0;
        if (c == '"') break;
        if (c < 0x20) {
            p->i--;
            fail(p, "control character in string");
            free(buf);
            return NULL;
        }
        if (c != '\\') {
            tmp[0] = (char)c;
            tl = 1;
        } else {
            if (p->i >= p->n) {
                fail(p, "truncated escape");
                free(buf);
                return NULL;
            }
            char e = p->s[p->i++];
            switch (e) {
                case '"':
                    tmp[0] = '"';
                    tl = 1;
                    break;
                case '\\':
                    tmp[0] = '\\';
                    tl = 1;
                    break;
                case '/':
                    tmp[0] = '/';
                    tl = 1;
                    break;
                case 'b':
                    tmp[0] = '\b';
                    tl = 1;
                    break;
                case 'f':
                    tmp[0] = '\f';
                    tl = 1;
                    break;
                case 'n':
                    tmp[0] = '\n';
                    tl = 1;
                    break;
                case 'r':
                    tmp[0] = '\r';
                    tl = 1;
                    break;
                case 't':
                    tmp[0] = '\t';
                    tl = 1;
                    break;
                case 'u':
                    if (read_hex4(p, &cp) != 0) {
                        free(buf);
                        return NULL;
                    }
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        unsigned lo;
                        if (p->i + 2 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                            fail(p, "unpaired surrogate");
                            free(buf);
                            return NULL;
                        }
                        p->i += 2;
                        if (read_hex4(p, &lo) != 0) {
                            free(buf);
                            return NULL;
                        }
                        if (lo < 0xDC00 || lo > 0xDFFF) {
                            fail(p, "unpaired surrogate");
                            free(buf);
                            return NULL;
                        }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        fail(p, "unpaired surrogate");
                        free(buf);
                        return NULL;
                    }
                    if (cp == 0) {
                        fail(p, "NUL in string");
                        free(buf);
                        return NULL;
                    }
                    if (cp < 0x80) {
                        tmp[0] = (char)cp;
                        tl = 1;
                    } else if (cp < 0x800) {
                        tmp[0] = (char)(0xC0 | (cp >> 6));
                        tmp[1] = (char)(0x80 | (cp & 0x3F));
                        tl = 2;
                    } else if (cp < 0x10000) {
                        tmp[0] = (char)(0xE0 | (cp >> 12));
                        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        tmp[2] = (char)(0x80 | (cp & 0x3F));
                        tl = 3;
                    } else {
                        tmp[0] = (char)(0xF0 | (cp >> 18));
                        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        tmp[3] = (char)(0x80 | (cp & 0x3F));
                        tl = 4;
                    }
                    break;
                default:
                    p->i--;
                    fail(p, "bad escape");
                    free(buf);
                    return NULL;
            }
        }
        if (len + tl + 1 > cap) {
            while (len + tl + 1 > cap) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                fail(p, "out of memory");
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + len, tmp, tl);
        len += tl;
    }
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

static jv *parse_number(parser *p) {
    size_t start = p->i;
    int integral = 1;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') {
        fail(p, "bad number");
        return NULL;
    }
    if (p->s[p->i] == '0') p->i++;
    else
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        integral = 0;
        p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') {
            fail(p, "bad number");
            return NULL;
        }
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        integral = 0;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') {
            fail(p, "bad number");
            return NULL;
        }
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    char tmp[64];
    size_t l = p->i - start;
    if (l >= sizeof tmp) {
        p->i = start;
        fail(p, "number too long");
        return NULL;
    }
    memcpy(tmp, p->s + start, l);
    tmp[l] = '\0';
    jv *v = new_jv(p, JV_NUM);
    if (!v) return NULL;
    v->num = strtod(tmp, NULL);
    if (integral) {
        errno = 0;
        long long x = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->inum = x;
            v->is_int = 1;
        }
    } else if (isfinite(v->num) && v->num == floor(v->num) && fabs(v->num) < 9.0e15) {
        v->inum = (long long)v->num;
        v->is_int = 1;
    }
    return v;
}

static int push(parser *p, jv *c, jv *item, char *key) {
    size_t n = c->len + 1;
    jv **ni = realloc(c->items, n * sizeof(*ni));
    if (!ni) {
        fail(p, "out of memory");
        return -1;
    }
    c->items = ni;
    if (c->kind == JV_OBJ) {
        char **nk = realloc(c->keys, n * sizeof(*nk));
        if (!nk) {
            fail(p, "out of memory");
            return -1;
        }
        c->keys = nk;
        c->keys[c->len] = key;
    }
    c->items[c->len] = item;
    c->len = n;
    return 0;
}

static jv *parse_container(parser *p, int depth, int is_obj) {
    jv *c = new_jv(p, is_obj ? JV_OBJ : JV_ARR);
    if (!c) return NULL;
    char close = is_obj ? '}' : ']';
    p->i++; /* opening bracket */
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return c;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (is_obj) {
            size_t kl;
            key = parse_string(p, &kl);
            if (!key) goto bad;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                free(key);
                fail(p, "expected ':'");
                goto bad;
            }
            p->i++;
        }
        jv *item = parse_value(p, depth + 1);
        if (!item) {
            free(key);
            goto bad;
        }
        if (push(p, c, item, key) != 0) {
            free(key);
            jv_free(item);
            goto bad;
        }
        skip_ws(p);
        if (p->i >= p->n) {
            fail(p, is_obj ? "unterminated object" : "unterminated array");
            goto bad;
        }
        if (p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->s[p->i] == close) {
            p->i++;
            return c;
        }
        fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        goto bad;
    }
bad:
    jv_free(c);
    return NULL;
}

static int match_lit(parser *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->i + l <= p->n && memcmp(p->s + p->i, lit, l) == 0) {
        p->i += l;
        return 1;
    }
    return 0;
}

static jv *parse_value(parser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) {
        fail(p, "nesting too deep");
        return NULL;
    }
    skip_ws(p);
    if (p->i >= p->n) {
        fail(p, "unexpected end of input");
        return NULL;
    }
    char c = p->s[p->i];
    if (c == '{') return parse_container(p, depth, 1);
    if (c == '[') return parse_container(p, depth, 0);
    if (c == '"') {
        size_t len;
        char *s = parse_string(p, &len);
        if (!s) return NULL;
        jv *v = new_jv(p, JV_STR);
        if (!v) {
            free(s);
            return NULL;
        }
        v->str = s;
        v->len = len;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
    if (match_lit(p, "true")) {
        jv *v = new_jv(p, JV_BOOL);
        if (v) v->boolean = 1;
        return v;
    }
    if (match_lit(p, "false")) return new_jv(p, JV_BOOL);
    if (match_lit(p, "null")) return new_jv(p, JV_NULL);
    fail(p, "unexpected character");
    return NULL;
}

jv *jv_parse(const char *text, size_t n, char *err, size_t errlen) {
    parser p = {text, n, 0, err, errlen, 0};
    if (errlen) err[0] = '\0';
    jv *v = parse_value(&p, 0);
    if (!v) return NULL;
    skip_ws(&p);
    if (p.i != p.n) {
        fail(&p, "trailing characters");
        jv_free(v);
        return NULL;
    }
    return v;
}

void jv_free(jv *v) {
    if (!v) return;
    for (size_t k = 0; k < v->len && (v->kind == JV_ARR || v->kind == JV_OBJ); k++) {
        jv_free(v->items[k]);
        if (v->keys) free(v->keys[k]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

const jv *jv_get(const jv *v, const char *key) {
    if (!v || v->kind != JV_OBJ) return NULL;
    const jv *found = NULL;
    for (size_t k = 0; k < v->len; k++)
        if (strcmp(v->keys[k], key) == 0) found = v->items[k]; /* last one wins */
    return found;
}

int jv_int(const jv *v, long long *out) {
    if (!v || v->kind != JV_NUM || !v->is_int) return -1;
    *out = v->inum;
    return 0;
}

const char *jv_kind_name(jv_kind k) {
    switch (k) {
        case JV_NULL: return "null";
        case JV_BOOL: return "boolean";
        case JV_NUM: return "number";
        case JV_STR: return "string";
        case JV_ARR: return "array";
        case JV_OBJ: return "object";
    }
    return "?";
}
