/* resolve.c - callee resolution for the classifier: finds what a called value really
 * invokes when it is reached through reflection and trampolines (getattr,
 * inspect.getattr_static, operator.attrgetter/itemgetter/methodcaller/getitem incl. on
 * sys.modules, importlib.import_module, __import__, pkgutil.resolve_name,
 * functools.partial and the KB's other @partial binders) and follows dotted paths component by component. */
#include <stdio.h>
#include <string.h>

#include "kb.h"
#include "resolve.h"
#include "strfmt.h"


/* ------------------------------------------------------------------ value helpers */
bool spa_val_text(const spa_val *v, char *buf, size_t n) {
    if (!v || !n) return false;
    if (v->kind != SPA_V_STR && v->kind != SPA_V_BYTES) return false;
    if (v->u.s.kept < v->u.s.len || v->u.s.len >= n || !v->u.s.p) return false;
    memcpy(buf, v->u.s.p, (size_t)v->u.s.len);
    buf[v->u.s.len] = '\0';
    if (memchr(buf, '\0', (size_t)v->u.s.len)) return false;
    return true;
}

const spa_val *spa_val_item(const spa_val *v, size_t i) {
    if (!v) return NULL;
    if (v->kind != SPA_V_TUPLE && v->kind != SPA_V_LIST) return NULL;
    if (i >= v->n || !v->u.seq.items) return NULL;
    return v->u.seq.items[i];
}

bool spa_target_is(const spa_target *t, const char *module, const char *name) {
    return t->kind == SPA_T_GLOBAL && !strcmp(t->module, module) && !strcmp(t->name, name);
}

static void rs_global(spa_target *t, const char *module, const char *name) {
    char canon[160];
    spa_kb_canon(module, canon, sizeof canon);
    t->kind = SPA_T_GLOBAL;
    spa_fmt(t->module, sizeof t->module, "%s", canon);
    spa_fmt(t->name, sizeof t->name, "%s", name);
}

static void rs_dynamic(spa_target *t) {
    t->kind = SPA_T_DYNAMIC;
    t->via_reflection = true;
}

/* Attribute `attr` (may be dotted) of what `base` resolved to. */
static void rs_attr(spa_target *t, const spa_target *base, const char *attr) {
    spa_target out = *base;
    out.via_reflection = true;
    switch (base->kind) {
    case SPA_T_MODULE: { /* module.attr: a global of that module */
        char mod[160];
        spa_fmt(mod, sizeof mod, "%s", base->module);
        rs_global(&out, mod, attr);
        out.from_module = true;
        break;
    }
    case SPA_T_GLOBAL: { /* Class.attr or module-level object .attr */
        char nm[256];
        int k = spa_fmt(nm, sizeof nm, "%s.%s", base->name, attr);
        if (k < 0 || (size_t)k >= sizeof nm) { rs_dynamic(&out); break; }
        spa_fmt(out.name, sizeof out.name, "%s", nm);
        break;
    }
    case SPA_T_OBJECT:
    case SPA_T_METHOD: {
        char nm[256];
        int k = spa_fmt(nm, sizeof nm, "%s%s%s", base->name, base->name[0] ? "." : "", attr);
        out.kind = SPA_T_METHOD;
        if (k < 0 || (size_t)k >= sizeof nm) nm[0] = '\0';
        spa_fmt(out.name, sizeof out.name, "%s", nm);
        break;
    }
    case SPA_T_SYSMODULES:
        out.kind = SPA_T_METHOD; /* sys.modules.get & co: a getter on the module table */
        spa_fmt(out.module, sizeof out.module, "sys");
        spa_fmt(out.name, sizeof out.name, "modules.%s", attr);
        break;
    default:
        rs_dynamic(&out);
        break;
    }
    *t = out;
}

/* Item `key` of what `base` resolved to. */
static void rs_item(spa_target *t, const spa_target *base, const spa_val *key) {
    char k[160];
    if (base->kind == SPA_T_SYSMODULES) {
        if (spa_val_text(key, k, sizeof k)) {
            memset(t, 0, sizeof *t);
            t->kind = SPA_T_MODULE;
            t->via_reflection = true;
            spa_kb_canon(k, t->module, sizeof t->module);
        } else {
            rs_dynamic(t);
        }
        return;
    }
    if (base->kind == SPA_T_MODULE || base->kind == SPA_T_DYNAMIC) { rs_dynamic(t); return; }
    /* subscription of a data object or a class (typing.List[int]): data */
    memset(t, 0, sizeof *t);
    t->kind = SPA_T_OBJECT;
}

/* ------------------------------------------------------------------ resolution */
static bool rs_is(const spa_target *t, const char *m, const char *n) { return spa_target_is(t, m, n); }

void spa_resolve(const spa_val *v, spa_target *t, int depth) {
    memset(t, 0, sizeof *t);
    t->origin = v;
    if (!v || depth > SPA_RESOLVE_MAX_DEPTH) { rs_dynamic(t); return; }
    switch (v->kind) {
    case SPA_V_GLOBAL:
        /* the VM names a non-constant STACK_GLOBAL "<dynamic>" and EXT codes "<ext:N>" */
        if (!v->u.g.module || !v->u.g.name || v->u.g.module[0] == '<' || v->u.g.name[0] == '<') {
            rs_dynamic(t);
            return;
        }
        rs_global(t, v->u.g.module, v->u.g.name);
        if ((rs_is(t, "sys", "modules")))
            t->kind = SPA_T_SYSMODULES;
        return;
    case SPA_V_UNKNOWN:
    case SPA_V_MARK:
        rs_dynamic(t);
        return;
    case SPA_V_CALL:
        break;
    default:
        t->kind = SPA_T_NONE; /* literal, persistent id, buffer */
        return;
    }
    const spa_val *args = v->u.call.args;
    spa_target c;
    spa_resolve(v->u.call.callee, &c, depth + 1);
    char s[256];
    const spa_val *a0 = spa_val_item(args, 0), *a1 = spa_val_item(args, 1);

    if (c.kind == SPA_T_GLOBAL) {
        if (rs_is(&c, "builtins", "getattr") || rs_is(&c, "inspect", "getattr_static")) {
            spa_target base;
            spa_resolve(a0, &base, depth + 1);
            if (!spa_val_text(a1, s, sizeof s)) { rs_dynamic(t); return; }
            rs_attr(t, &base, s);
            t->origin = v;
            return;
        }
        if (rs_is(&c, "operator", "getitem")) {
            spa_target base;
            spa_resolve(a0, &base, depth + 1);
            rs_item(t, &base, a1);
            t->origin = v;
            return;
        }
        if (rs_is(&c, "importlib", "import_module") || rs_is(&c, "builtins", "__import__") ||
            rs_is(&c, "importlib", "__import__")) {
            if (!spa_val_text(a0, s, sizeof s)) { rs_dynamic(t); return; }
            t->kind = SPA_T_MODULE;
            t->via_reflection = true;
            spa_kb_canon(s, t->module, sizeof t->module);
            return;
        }
        if (rs_is(&c, "numpy.core", "_ufunc_reconstruct") || rs_is(&c, "numpy._core", "_ufunc_reconstruct")) {
            /* numpy's old ufunc unpickler: getattr(__import__(module), name) */
            char nm[256];
            if (!spa_val_text(a0, s, sizeof s) || !spa_val_text(a1, nm, sizeof nm)) { rs_dynamic(t); return; }
            rs_global(t, s, nm);
            t->via_reflection = true;
            t->from_module = true;
            return;
        }
        if (rs_is(&c, "pkgutil", "resolve_name")) {
            if (!spa_val_text(a0, s, sizeof s)) { rs_dynamic(t); return; }
            char *colon = strchr(s, ':');
            if (colon) {
                *colon = '\0';
                if (colon[1]) rs_global(t, s, colon + 1);
                else { t->kind = SPA_T_MODULE; spa_kb_canon(s, t->module, sizeof t->module); }
            } else {
                char *dot = strrchr(s, '.');
                if (dot) { *dot = '\0'; rs_global(t, s, dot + 1); }
                else { t->kind = SPA_T_MODULE; spa_kb_canon(s, t->module, sizeof t->module); }
            }
            t->via_reflection = true;
            t->from_module = true;
            return;
        }
        if (rs_is(&c, "operator", "attrgetter") || rs_is(&c, "operator", "itemgetter")) {
            t->kind = SPA_T_GETTER;
            t->itemgetter = c.name[0] == 'i';
            t->bound = args;
            if (!spa_val_text(a0, t->aux, sizeof t->aux)) t->aux[0] = '\0';
            return;
        }
        if (rs_is(&c, "operator", "methodcaller")) {
            t->kind = SPA_T_METHODCALLER;
            t->bound = args;
            if (!spa_val_text(a0, t->aux, sizeof t->aux)) t->aux[0] = '\0';
            return;
        }
        if (spa_kb_partial(c.module, c.name)) {
            /* functools.partial and the KB's other binders (@partial: loky's
             * _rebuild_partial, numpy.vectorize): calling the result calls the
             * function bound first (nothing resolvable bound: dynamic) */
            spa_target inner;
            spa_resolve(a0, &inner, depth + 1);
            *t = inner;
            t->kind = inner.kind == SPA_T_GLOBAL || inner.kind == SPA_T_METHOD ? inner.kind : inner.kind;
            t->bound = args; /* args[0] is the function, the rest are bound */
            t->origin = v;
            t->via_reflection = inner.via_reflection;
            /* remember it is a partial through aux */
            spa_fmt(t->aux, sizeof t->aux, "%s", "partial");
            return;
        }
        /* any other call builds an object of that class (or a function's result) */
        t->kind = SPA_T_OBJECT;
        spa_fmt(t->module, sizeof t->module, "%s", c.module);
        spa_fmt(t->name, sizeof t->name, "%s", c.name);
        return;
    }
    if (c.kind == SPA_T_GETTER) { /* attrgetter('a.b')(obj) / itemgetter('k')(obj) */
        spa_target base;
        spa_resolve(a0, &base, depth + 1);
        if (!c.aux[0]) { rs_dynamic(t); return; }
        if (c.itemgetter) {
            rs_item(t, &base, spa_val_item(c.bound, 0));
        } else {
            rs_attr(t, &base, c.aux);
        }
        t->origin = v;
        return;
    }
    if (c.kind == SPA_T_METHODCALLER) { /* methodcaller('m', *a)(obj) = obj.m(*a): a result */
        t->kind = SPA_T_OBJECT;
        return;
    }
    if (c.kind == SPA_T_DYNAMIC) { rs_dynamic(t); return; }
    /* calling a module, a method, a partial, an object: the result is an object */
    t->kind = SPA_T_OBJECT;
    t->via_reflection = c.via_reflection;
}
