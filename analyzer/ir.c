/* ir.c - rendering of the VM's symbolic values (spa_val) as bounded
 * pseudo-Python, shared by the JSON report, the text printer and explain. */
#include <stdio.h>
#include <string.h>

#include "opcodes.h"
#include "vm.h"

const char *spa_vkind_name(spa_vkind k) {
    static const char *const n[SPA_V_KIND_COUNT] = {
        "unknown", "none", "bool", "int", "long", "float", "str", "bytes", "tuple", "list",
        "dict", "set", "frozenset", "global", "call", "persid", "buffer", "mark",
    };
    return (unsigned)k < SPA_V_KIND_COUNT ? n[k] : "unknown";
}

typedef struct { char *b; size_t cap, len; bool names; } rbuf;

static void rb_put(rbuf *r, const char *s, size_t n) {
    if (r->cap == 0) return;
    size_t room = r->cap - 1 - r->len;
    if (n > room) n = room;
    memcpy(r->b + r->len, s, n);
    r->len += n;
    r->b[r->len] = '\0';
}
static void rb_s(rbuf *r, const char *s) { rb_put(r, s, strlen(s)); }

#define REPR_STR_MAX 200
#define REPR_DEPTH 6

static void rb_text(rbuf *r, const spa_val *v) {
    bool bytes = v->kind == SPA_V_BYTES && !(v->flags & SPA_VF_PY2STR);
    if (bytes) rb_s(r, (v->flags & SPA_VF_BYTEARRAY) ? "bytearray(b" : "b");
    size_t n = v->u.s.kept < REPR_STR_MAX ? (size_t)v->u.s.kept : REPR_STR_MAX;
    /* quote like Python's repr: double quotes when only single ones occur */
    char q = '\'';
    if (memchr(v->u.s.p, '\'', n) && !memchr(v->u.s.p, '"', n)) q = '"';
    rb_put(r, &q, 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = v->u.s.p[i];
        char e[8];
        if (c == '\\' || c == (uint8_t)q) { e[0] = '\\'; e[1] = (char)c; rb_put(r, e, 2); }
        else if (c == '\n') rb_s(r, "\\n");
        else if (c == '\r') rb_s(r, "\\r");
        else if (c == '\t') rb_s(r, "\\t");
        else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) { snprintf(e, sizeof e, "\\x%02x", c); rb_s(r, e); }
        else rb_put(r, (const char *)&c, 1);
    }
    if (n < v->u.s.len) rb_s(r, "...");
    rb_put(r, &q, 1);
    if (bytes && (v->flags & SPA_VF_BYTEARRAY)) rb_s(r, ")");
    if (n < v->u.s.len) {
        char e[48];
        snprintf(e, sizeof e, "<%llu bytes>", (unsigned long long)v->u.s.len);
        rb_s(r, e);
    }
}

static void rb_val(rbuf *r, const spa_val *v, int depth) {
    char t[64];
    if (!v) { rb_s(r, "?"); return; }
    if (depth > REPR_DEPTH) { rb_s(r, "..."); return; }
    switch ((spa_vkind)v->kind) {
    case SPA_V_NONE: rb_s(r, "None"); return;
    case SPA_V_BOOL: rb_s(r, v->u.i ? "True" : "False"); return;
    case SPA_V_INT: snprintf(t, sizeof t, "%lld", (long long)v->u.i); rb_s(r, t); return;
    case SPA_V_FLOAT: snprintf(t, sizeof t, "%.17g", v->u.f); rb_s(r, t); return;
    case SPA_V_LONG:
        if ((v->opcode & SPA_VOP_MASK) == SPA_OP_LONG || (v->opcode & SPA_VOP_MASK) == SPA_OP_INT) { /* text form */
            size_t n = v->u.s.kept < 64 ? (size_t)v->u.s.kept : 64;
            rb_put(r, (const char *)v->u.s.p, n);
            if (n < v->u.s.len) rb_s(r, "...");
        } else {
            snprintf(t, sizeof t, "<int of %llu bytes>", (unsigned long long)v->u.s.len);
            rb_s(r, t);
        }
        return;
    case SPA_V_STR: case SPA_V_BYTES: rb_text(r, v); return;
    case SPA_V_GLOBAL:
        rb_s(r, v->u.g.module ? v->u.g.module : "?");
        rb_s(r, ".");
        rb_s(r, v->u.g.name ? v->u.g.name : "?");
        return;
    case SPA_V_CALL:
        if (r->names && depth > 0 && v->u.call.ir != UINT32_MAX) {
            snprintf(t, sizeof t, "_v%u", v->u.call.ir);
            rb_s(r, t);
            return;
        }
        rb_val(r, v->u.call.callee, depth + 1);
        rb_s(r, "(");
        if (v->u.call.args && v->u.call.args->kind == SPA_V_TUPLE) {
            const spa_val *a = v->u.call.args;
            for (uint32_t i = 0; i < a->n; i++) { if (i) rb_s(r, ", "); rb_val(r, a->u.seq.items[i], depth + 1); }
            if (a->u.seq.count > a->n) rb_s(r, a->n ? ", ..." : "...");
        } else if (v->u.call.args) {
            rb_s(r, "*");
            rb_val(r, v->u.call.args, depth + 1);
        }
        if (v->u.call.kwargs) { rb_s(r, ", **"); rb_val(r, v->u.call.kwargs, depth + 1); }
        rb_s(r, ")");
        return;
    case SPA_V_PERSID:
        rb_s(r, "persistent_load(");
        rb_val(r, v->u.persid.pid, depth + 1);
        rb_s(r, ")");
        return;
    case SPA_V_BUFFER: rb_s(r, "<out-of-band buffer>"); return;
    case SPA_V_MARK: rb_s(r, "<mark>"); return;
    case SPA_V_UNKNOWN: rb_s(r, "<unknown>"); return;
    case SPA_V_TUPLE: case SPA_V_LIST: case SPA_V_DICT: case SPA_V_SET: case SPA_V_FROZENSET: {
        const char *open = "(", *close = ")";
        if (v->kind == SPA_V_LIST) { open = "["; close = "]"; }
        else if (v->kind == SPA_V_DICT || v->kind == SPA_V_SET) { open = "{"; close = "}"; }
        else if (v->kind == SPA_V_FROZENSET) { open = "frozenset({"; close = "})"; }
        if (v->kind == SPA_V_SET && v->u.seq.count == 0) { rb_s(r, "set()"); return; }
        rb_s(r, open);
        for (uint32_t i = 0; i < v->n; i++) {
            if (v->kind == SPA_V_DICT) {
                if (i % 2) { rb_s(r, ": "); } else if (i) rb_s(r, ", ");
            } else if (i) rb_s(r, ", ");
            rb_val(r, v->u.seq.items[i], depth + 1);
        }
        if (v->u.seq.count > v->n) {
            snprintf(t, sizeof t, "%s...<%llu items>", v->n ? ", " : "",
                     (unsigned long long)(v->kind == SPA_V_DICT ? v->u.seq.count / 2 : v->u.seq.count));
            rb_s(r, t);
        }
        if (v->kind == SPA_V_TUPLE && v->u.seq.count == 1) rb_s(r, ",");
        rb_s(r, close);
        return;
    }
    default: rb_s(r, "?"); return;
    }
}

size_t spa_val_repr_named(const spa_val *v, char *buf, size_t cap) {
    rbuf r = { buf, cap, 0, true };
    if (cap) buf[0] = '\0';
    rb_val(&r, v, 0);
    return r.len;
}

size_t spa_val_ref(const spa_val *v, char *buf, size_t cap) {
    if (v && v->kind == SPA_V_CALL && v->u.call.ir != UINT32_MAX) {
        int n = snprintf(buf, cap, "_v%u", v->u.call.ir);
        return n < 0 ? 0 : (size_t)n;
    }
    return spa_val_repr_named(v, buf, cap);
}

size_t spa_val_repr(const spa_val *v, char *buf, size_t cap) {
    rbuf r = { buf, cap, 0, false };
    if (cap) buf[0] = '\0';
    rb_val(&r, v, 0);
    return r.len;
}
