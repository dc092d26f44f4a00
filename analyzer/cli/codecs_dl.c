/* codecs_dl.c - the CLI's decompression libraries, each loaded (dlopen by
 * soname, as ld.so would find it at start) the first time a scan meets its
 * format: a scan of plain pickles maps none of them, which is most of the
 * CLI's start-up memory they cost (analyzer/README.md, "Memory"). This
 * definition of spc_codecs_get replaces the linked one (codecs.c) in the CLI.
 * A library that does not load, or lacks a function, makes the getter return
 * NULL with the reason: decomp.c then fails the open (never "no pickle"). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "codecs.h"

static const char *const cdl_soname[SPC_CODEC_COUNT] = {
#define CDL_SONAME(id, soname, name) [id] = soname,
    SPC_CODEC_LIBS(CDL_SONAME)
#undef CDL_SONAME
};
static const char *const cdl_name[SPC_CODEC_COUNT] = {
#define CDL_NAME(id, soname, name) [id] = name,
    SPC_CODEC_LIBS(CDL_NAME)
#undef CDL_NAME
};

static pthread_mutex_t cdl_mu = PTHREAD_MUTEX_INITIALIZER;
static spc_codecs cdl_tab;                  /* a library's fields are set once, under cdl_mu */
static enum { CDL_NEW, CDL_OK, CDL_FAILED } cdl_state[SPC_CODEC_COUNT];
static char cdl_why[SPC_CODEC_COUNT][320];  /* why a library is unusable (for the process's life) */

static void cdl_load(spc_codec_id id) {
    void *h = dlopen(cdl_soname[id], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(cdl_why[id], sizeof cdl_why[id], "the %s library (%s) could not be loaded: %s",
                 cdl_name[id], cdl_soname[id], e ? e : "unknown error");
        cdl_state[id] = CDL_FAILED;
        return;
    }
    spc_codecs t = {0};
    const char *missing = NULL;
#define CDL_SYM(lib, fn) \
    if (lib == id && !missing && !(*(void **)&t.fn = dlsym(h, #fn))) missing = #fn;
    SPC_CODEC_FUNCS(CDL_SYM)
#undef CDL_SYM
    if (missing) {
        snprintf(cdl_why[id], sizeof cdl_why[id], "the %s library (%s) lacks %s", cdl_name[id], cdl_soname[id],
                 missing);
        cdl_state[id] = CDL_FAILED;
        dlclose(h);
        return;
    }
    /* only this library's fields: other threads may be calling through the others */
#define CDL_SET(lib, fn) if (lib == id) cdl_tab.fn = t.fn;
    SPC_CODEC_FUNCS(CDL_SET)
#undef CDL_SET
    cdl_state[id] = CDL_OK;
}

const spc_codecs *spc_codecs_get(spc_codec_id id, const char **why) {
    if ((unsigned)id >= SPC_CODEC_COUNT) {
        *why = "unknown decompression library";
        return NULL;
    }
    pthread_mutex_lock(&cdl_mu);
    if (cdl_state[id] == CDL_NEW) cdl_load(id);
    bool ok = cdl_state[id] == CDL_OK;
    pthread_mutex_unlock(&cdl_mu);
    if (!ok) *why = cdl_why[id];
    return ok ? &cdl_tab : NULL;
}
