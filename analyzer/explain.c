/* explain.c - a decompiler-like pseudo-Python listing of what loading a file
 * would do: one statement per IR entry, every call bound to _v<IR index>. */
#include <string.h>

#include "opcodes.h"
#include "report.h"
#include "vm.h"

static void ex_stream(FILE *f, const spa_result *r, size_t si) {
    const spa_stream *s = &r->streams[si];
    char a[2048], b[2048];
    fprintf(f, "# stream #%zu  %s  bytes %llu..%llu  protocol %d  %llu opcodes", si, s->loc ? s->loc : "",
            (unsigned long long)s->start, (unsigned long long)s->end, s->proto, (unsigned long long)s->nops);
    if (s->parent != UINT32_MAX) fprintf(f, "  (nested in stream #%u)", s->parent);
    fputc('\n', f);
    for (size_t k = 0; k < s->n_ir; k++) {
        const spa_ir *e = &s->ir[k];
        int w = 0;
        switch ((spa_irkind)e->kind) {
        case SPA_IR_IMPORT:
            if (e->flags & SPA_IRF_DYNAMIC) {
                spa_val_repr_named(e->target, a, sizeof a);
                spa_val_repr_named(e->arg, b, sizeof b);
                w = fprintf(f, "_g%zu = getattr(__import__(%s), %s)", k, a, b);
            } else if (e->flags & SPA_IRF_EXT) {
                w = fprintf(f, "_g%zu = copyreg._inverted_registry[%s]", k, e->name + 5);
            } else {
                w = fprintf(f, "from %s import %s", e->module, e->name);
            }
            break;
        case SPA_IR_CALL:
            spa_val_repr_named(e->result, a, sizeof a);
            if (e->flags & SPA_IRF_NEW) {
                /* a is "cls(args)": show cls.__new__(cls, args) */
                spa_val_ref(e->target, b, sizeof b);
                size_t bl = strlen(b);
                const char *args = (!strncmp(a, b, bl) && a[bl] == '(') ? a + bl + 1 : ")";
                w = fprintf(f, "_v%zu = %s.__new__(%s%s%s", k, b, b, *args == ')' ? "" : ", ", args);
            } else {
                w = fprintf(f, "_v%zu = %s", k, a);
            }
            break;
        case SPA_IR_BUILD:
            spa_val_ref(e->target, a, sizeof a);
            spa_val_repr_named(e->arg, b, sizeof b);
            w = fprintf(f, "%s.__setstate__(%s)", a, b);
            break;
        case SPA_IR_MUTATE: {
            spa_val_ref(e->target, a, sizeof a);
            spa_val_repr_named(e->arg, b, sizeof b);
            const char *how = (e->opcode == SPA_OP_SETITEM || e->opcode == SPA_OP_SETITEMS) ? "__setitem__ each of" :
                              e->opcode == SPA_OP_ADDITEMS ? "add each of" : "extend";
            w = fprintf(f, "%s.%s(%s)", a, how, b);
            break;
        }
        case SPA_IR_DISCARD:
            spa_val_ref(e->target, a, sizeof a);
            w = fprintf(f, "del %s  # result dropped, but it ran", a);
            break;
        case SPA_IR_PERSID:
            spa_val_repr(e->arg, a, sizeof a);
            w = fprintf(f, "_p%zu = persistent_load(%s)", k, a);
            break;
        case SPA_IR_NESTED:
            if (e->opcode == SPA_OP_BUILD) {   /* after BUILD: an inline stream (object array data) */
                spa_val_ref(e->target, a, sizeof a);
                w = fprintf(f, "# %.60s is followed by an inline pickle -> stream #%u", a, e->nested_stream);
                break;
            }
            spa_val_repr(e->target, a, sizeof a);
            if (e->nested_stream != UINT32_MAX) w = fprintf(f, "pickle.loads(%.60s)  # -> stream #%u", a, e->nested_stream);
            else w = fprintf(f, "# nested pickle in %.60s (not scanned)", a);
            break;
        default: break;
        }
        if (w < 0) w = 0;
        fprintf(f, "%*s# @%llu %s\n", w < 60 ? 60 - w : 1, "", (unsigned long long)e->off, spa_opname(e->opcode));
    }
    if (s->err.code == SPA_E_LIMIT)
        fprintf(f, "# LIMIT %s hit at @%llu: %s; nothing after it was examined\n", spa_limit_name(s->limit),
                (unsigned long long)s->err.off, s->err.msg);
    else if (s->err.code != SPA_OK)
        fprintf(f, "# the loader fails here: %s at @%llu: %s (everything above already ran)\n",
                spa_code_name(s->err.code), (unsigned long long)s->err.off, s->err.msg);
    else if (s->complete)
        fprintf(f, "# STOP\n");
}

void spa_explain(FILE *f, const spa_result *r) {
    fprintf(f, "# %s (%s)\n", r->path ? r->path : "", spa_format_name(r->format));
    if (!r->n_streams) fprintf(f, "# no pickle stream found\n");
    for (size_t i = 0; i < r->n_streams; i++) {
        if (i) fputc('\n', f);
        ex_stream(f, r, i);
    }
    for (size_t i = 0; i < r->n_notes; i++)
        fprintf(f, "# note: %s%s%s\n", r->notes[i].err.msg ? r->notes[i].err.msg : "",
                r->notes[i].loc ? " in " : "", r->notes[i].loc ? r->notes[i].loc : "");
}
