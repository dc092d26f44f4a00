/* report.c - scan results as JSON (cJSON; the shape is documented in the
 * README, section analyzer, and is stable) and as a text listing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "opcodes.h"
#include "report.h"
#include "vm.h"

#define REP_DEPTH 6          /* nesting of values rendered as JSON */
#define REP_STR 4096         /* bytes of a str/bytes constant rendered */
#define REP_OPAQUE 64        /* ... of opaque binary data (array payloads) */

const char *spa_opname(uint8_t op) {
    const spa_opinfo *oi = spa_op_info(op);
    return oi ? oi->name : "?";
}

/* bytes as a Python-style escaped string (b'..' body) */
static char *rep_bytes(const uint8_t *p, size_t n) {
    char *o = malloc(n * 4 + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') o[j++] = (char)c;
        else if (c == '\\') { o[j++] = '\\'; o[j++] = '\\'; }
        else {
            static const char hx[] = "0123456789abcdef";
            o[j++] = '\\'; o[j++] = 'x'; o[j++] = hx[c >> 4]; o[j++] = hx[c & 15];
        }
    }
    o[j] = '\0';
    return o;
}

/* Add a C string that may hold arbitrary bytes (names from the stream). Added
 * as is: spa_json_print repairs it and keeps the raw bytes beside it as <k>_hex. */
static void rep_add_str(cJSON *o, const char *k, const char *s) {
    cJSON_AddStringToObject(o, k, s ? s : "");
}

static cJSON *rep_val(const spa_val *v, int depth) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (!v) { cJSON_AddStringToObject(o, "type", "unknown"); return o; }
    cJSON_AddStringToObject(o, "type", spa_vkind_name((spa_vkind)v->kind));
    switch ((spa_vkind)v->kind) {
    case SPA_V_BOOL: cJSON_AddBoolToObject(o, "value", v->u.i != 0); break;
    case SPA_V_INT: cJSON_AddNumberToObject(o, "value", (double)v->u.i); break;
    case SPA_V_FLOAT:
        if (isfinite(v->u.f)) cJSON_AddNumberToObject(o, "value", v->u.f);
        else cJSON_AddStringToObject(o, "value", isnan(v->u.f) ? "nan" : v->u.f > 0 ? "inf" : "-inf");
        break;
    case SPA_V_STR: case SPA_V_BYTES: case SPA_V_LONG: {
        bool opaque = v->kind == SPA_V_BYTES && (v->opcode & SPA_VOP_OPAQUE);
        size_t lim = opaque ? REP_OPAQUE : REP_STR;
        size_t n = v->u.s.kept < lim ? (size_t)v->u.s.kept : lim;
        bool text = v->kind == SPA_V_STR || (v->kind == SPA_V_LONG && ((v->opcode & SPA_VOP_MASK) == SPA_OP_INT || (v->opcode & SPA_VOP_MASK) == SPA_OP_LONG));
        char *s = text ? spa_utf8_sanitize(v->u.s.p, n) : rep_bytes(v->u.s.p, n);
        if (s) { cJSON_AddStringToObject(o, "value", s); free(s); }
        cJSON_AddNumberToObject(o, "len", (double)v->u.s.len);
        if (n < v->u.s.len) cJSON_AddTrueToObject(o, "truncated");
        if (opaque) cJSON_AddTrueToObject(o, "opaque");
        if (v->flags & SPA_VF_PY2STR) cJSON_AddTrueToObject(o, "py2str");
        if (v->flags & SPA_VF_BYTEARRAY) cJSON_AddTrueToObject(o, "bytearray");
        break;
    }
    case SPA_V_GLOBAL:
        rep_add_str(o, "module", v->u.g.module);
        rep_add_str(o, "name", v->u.g.name);
        break;
    case SPA_V_CALL:
        if (v->u.call.ir != UINT32_MAX) cJSON_AddNumberToObject(o, "ir", v->u.call.ir);
        if (depth < REP_DEPTH) cJSON_AddItemToObject(o, "callee", rep_val(v->u.call.callee, depth + 1));
        break;
    case SPA_V_PERSID:
        if (depth < REP_DEPTH) cJSON_AddItemToObject(o, "pid", rep_val(v->u.persid.pid, depth + 1));
        break;
    case SPA_V_TUPLE: case SPA_V_LIST: case SPA_V_DICT: case SPA_V_SET: case SPA_V_FROZENSET: {
        cJSON_AddNumberToObject(o, "count", (double)(v->kind == SPA_V_DICT ? v->u.seq.count / 2 : v->u.seq.count));
        if (v->u.seq.count > v->n) cJSON_AddTrueToObject(o, "truncated");
        if (depth >= REP_DEPTH) { cJSON_AddTrueToObject(o, "elided"); break; }
        cJSON *items = cJSON_AddArrayToObject(o, "items");
        for (uint32_t i = 0; items && i < v->n; i++) cJSON_AddItemToArray(items, rep_val(v->u.seq.items[i], depth + 1));
        break;
    }
    default: break;
    }
    if (v->flags & SPA_VF_MUTATED) cJSON_AddTrueToObject(o, "mutated");
    return o;
}

static void rep_add_val(cJSON *o, const char *k, const spa_val *v) {
    if (v) cJSON_AddItemToObject(o, k, rep_val(v, 0));
}

static cJSON *rep_err(const spa_err *e, bool lim, spa_limit_id id) {
    if (e->code == SPA_OK) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "code", spa_code_name(e->code));
    cJSON_AddStringToObject(o, "msg", e->msg ? e->msg : "");
    cJSON_AddNumberToObject(o, "off", (double)e->off);
    if (lim && e->code == SPA_E_LIMIT && id < SPA_LIM_COUNT) cJSON_AddStringToObject(o, "limit", spa_limit_name(id));
    return o;
}

static cJSON *rep_ir(const spa_ir *e, size_t i) {
    cJSON *o = cJSON_CreateObject();
    char buf[1024];
    cJSON_AddNumberToObject(o, "i", (double)i);
    cJSON_AddStringToObject(o, "kind", spa_irkind_name((spa_irkind)e->kind));
    cJSON_AddStringToObject(o, "op", spa_opname(e->opcode));
    cJSON_AddNumberToObject(o, "off", (double)e->off);
    if (e->flags) {
        cJSON *fl = cJSON_AddArrayToObject(o, "flags");
        static const char *const fn[] = { "new", "inst", "dynamic", "ext", "truncated", "pyonly" };
        for (unsigned b = 0; b < sizeof fn / sizeof *fn; b++)
            if (e->flags & (1u << b)) cJSON_AddItemToArray(fl, cJSON_CreateString(fn[b]));
    }
    switch ((spa_irkind)e->kind) {
    case SPA_IR_IMPORT:
        rep_add_str(o, "module", e->module);
        rep_add_str(o, "name", e->name);
        if (e->result && e->result->kind == SPA_V_GLOBAL) {
            rep_add_str(o, "raw_module", e->result->u.g.raw_module);
            rep_add_str(o, "raw_name", e->result->u.g.raw_name);
        }
        if (e->flags & SPA_IRF_DYNAMIC) { rep_add_val(o, "module_value", e->target); rep_add_val(o, "name_value", e->arg); }
        break;
    case SPA_IR_CALL:
        rep_add_val(o, "callee", e->target);
        rep_add_val(o, "args", e->arg);
        rep_add_val(o, "kwargs", e->kwargs);
        spa_val_repr_named(e->result, buf, sizeof buf);
        rep_add_str(o, "text", buf);
        break;
    case SPA_IR_BUILD:
        rep_add_val(o, "target", e->target);
        rep_add_val(o, "state", e->arg);
        break;
    case SPA_IR_MUTATE:
        rep_add_val(o, "target", e->target);
        rep_add_val(o, "items", e->arg);
        break;
    case SPA_IR_DISCARD:
        rep_add_val(o, "target", e->target);
        break;
    case SPA_IR_PERSID:
        rep_add_val(o, "pid", e->arg);
        break;
    case SPA_IR_NESTED:
        rep_add_val(o, "target", e->target);
        if (e->nested_stream != UINT32_MAX) cJSON_AddNumberToObject(o, "nested_stream", e->nested_stream);
        else cJSON_AddNullToObject(o, "nested_stream");
        break;
    default: break;
    }
    return o;
}

static const char *rep_note_name(spa_notekind k) {
    static const char *const n[] = { "info", "unscannable", "limit", "resync", "error" };
    return (unsigned)k < 5 ? n[k] : "unknown";
}

cJSON *spa_report_json(const spa_result *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    rep_add_str(o, "path", r->path);
    cJSON_AddStringToObject(o, "format", spa_format_name(r->format));
    cJSON_AddBoolToObject(o, "pickle_bearing", r->pickle_bearing);
    cJSON_AddNumberToObject(o, "bytes_read", (double)r->bytes_read);
    cJSON *ss = cJSON_AddArrayToObject(o, "streams");
    for (size_t i = 0; i < r->n_streams; i++) {
        const spa_stream *s = &r->streams[i];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddNumberToObject(so, "index", (double)i);
        rep_add_str(so, "loc", s->loc);
        cJSON_AddNumberToObject(so, "start", (double)s->start);
        cJSON_AddNumberToObject(so, "end", (double)s->end);
        cJSON_AddNumberToObject(so, "proto", s->proto);
        cJSON_AddNumberToObject(so, "depth", s->depth);
        if (s->parent == UINT32_MAX) cJSON_AddNullToObject(so, "parent");
        else cJSON_AddNumberToObject(so, "parent", s->parent);
        cJSON_AddNumberToObject(so, "ops", (double)s->nops);
        cJSON_AddBoolToObject(so, "complete", s->complete);
        cJSON_AddItemToObject(so, "error", rep_err(&s->err, true, s->limit));
        cJSON *ir = cJSON_AddArrayToObject(so, "ir");
        for (size_t k = 0; k < s->n_ir; k++) cJSON_AddItemToArray(ir, rep_ir(&s->ir[k], k));
        cJSON_AddItemToArray(ss, so);
    }
    cJSON *ns = cJSON_AddArrayToObject(o, "notes");
    for (size_t i = 0; i < r->n_notes; i++) {
        const spa_note *n = &r->notes[i];
        cJSON *no = cJSON_CreateObject();
        cJSON_AddStringToObject(no, "kind", rep_note_name(n->kind));
        rep_add_str(no, "loc", n->loc);
        cJSON_AddItemToObject(no, "error", rep_err(&n->err, false, SPA_LIM_COUNT));
        if (n->kind == SPA_NOTE_LIMIT && n->limit < SPA_LIM_COUNT)
            cJSON_AddStringToObject(no, "limit", spa_limit_name(n->limit));
        if (n->detail) rep_add_str(no, "detail", n->detail);
        cJSON_AddItemToArray(ns, no);
    }
    return o;
}

/* ------------------------------------------------------------------ text */
void spa_report_text(FILE *f, const spa_result *r) {
    char a[1024], b[1024];
    fprintf(f, "%s: %s, %zu stream%s\n", r->path ? r->path : "", spa_format_name(r->format), r->n_streams,
            r->n_streams == 1 ? "" : "s");
    for (size_t i = 0; i < r->n_streams; i++) {
        const spa_stream *s = &r->streams[i];
        fprintf(f, "  stream #%zu %s [%llu..%llu) proto %d, %llu ops: ", i, s->loc ? s->loc : "",
                (unsigned long long)s->start, (unsigned long long)s->end, s->proto, (unsigned long long)s->nops);
        if (s->err.code == SPA_OK) fprintf(f, "%s\n", s->complete ? "complete" : "incomplete");
        else if (s->err.code == SPA_E_LIMIT)
            fprintf(f, "LIMIT %s at @%llu: %s\n", spa_limit_name(s->limit), (unsigned long long)s->err.off, s->err.msg);
        else
            fprintf(f, "ERROR %s at @%llu: %s\n", spa_code_name(s->err.code), (unsigned long long)s->err.off, s->err.msg);
        for (size_t k = 0; k < s->n_ir; k++) {
            const spa_ir *e = &s->ir[k];
            fprintf(f, "    @%-8llu %-8s %-16s ", (unsigned long long)e->off, spa_irkind_name((spa_irkind)e->kind),
                    spa_opname(e->opcode));
            switch ((spa_irkind)e->kind) {
            case SPA_IR_IMPORT: fprintf(f, "%s.%s\n", e->module, e->name); break;
            case SPA_IR_CALL: spa_val_repr_named(e->result, a, sizeof a); fprintf(f, "_v%zu = %s\n", k, a); break;
            case SPA_IR_BUILD: case SPA_IR_MUTATE:
                spa_val_ref(e->target, a, sizeof a);
                spa_val_repr_named(e->arg, b, sizeof b);
                fprintf(f, "%s <- %s\n", a, b);
                break;
            case SPA_IR_DISCARD: spa_val_ref(e->target, a, sizeof a); fprintf(f, "%s\n", a); break;
            case SPA_IR_PERSID: spa_val_repr(e->arg, a, sizeof a); fprintf(f, "persistent_load(%s)\n", a); break;
            case SPA_IR_NESTED:
                if (e->nested_stream != UINT32_MAX) fprintf(f, "stream #%u\n", e->nested_stream);
                else fprintf(f, "(not scanned)\n");
                break;
            default: fprintf(f, "\n"); break;
            }
        }
    }
    for (size_t i = 0; i < r->n_notes; i++) {
        const spa_note *n = &r->notes[i];
        fprintf(f, "  note %s %s: %s%s%s\n", rep_note_name(n->kind), n->loc ? n->loc : "",
                n->err.msg ? n->err.msg : "", n->detail ? " - " : "", n->detail ? n->detail : "");
    }
}
