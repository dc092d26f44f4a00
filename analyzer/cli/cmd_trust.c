/* cmd_trust.c - `safepickle trust FILE... [--policy P]`: records that a person
 * reviewed FILE by adding its SHA-256 to the policy's trusted_sha256 list. The
 * policy is edited with cJSON, validated with the real parser, and replaced
 * atomically; a missing policy file is created from the embedded default. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "deploy.h"
#include "verdict.h"

#define TRUST_MAX_POLICY (16u << 20) /* bytes of a policy file we agree to edit */
#define TRUST_OBJ        "trusted"   /* policies/SCHEMA.md: trusted.sha256 */
#define TRUST_KEY        "sha256"
#define TRUST_MAX_FILES  256         /* files per call */

static void trust_usage(FILE *f) {
    fprintf(f,
        "usage: safepickle trust FILE... [--policy P]\n\n"
        "Adds the SHA-256 of each FILE (one you reviewed) to the \"" TRUST_OBJ "." TRUST_KEY "\" list of\n"
        "policy P (default: $SAFEPICKLE_POLICY). Loads of a file with a trusted digest are\n"
        "allowed whatever its content; changing one byte makes it untrusted again.\n"
        "P is validated before and after the edit and replaced atomically (its mode is kept);\n"
        "if P does not exist it is created from the embedded default policy.\n"
        "Prints each file's current verdict under P so you see what you are accepting.\n");
}

static int trust_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int trust_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "safepickle trust: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_ERROR;
}

static void trust_hex(const uint8_t d[32], char out[65]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) { out[2 * i] = hx[d[i] >> 4]; out[2 * i + 1] = hx[d[i] & 15]; }
    out[64] = '\0';
}

/* Current verdict of a file under a policy, printed for the reviewer. */
static void trust_show_verdict(const char *path, const spa_policy *pol) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.limits = pol->limits;
    o.name = path;
    spa_result *r = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    if (spa_scan_path(&o, path, &r, &err) != SPA_OK) {
        printf("  %s: cannot scan (%s)\n", path, err.msg ? err.msg : spa_code_name(err.code));
        return;
    }
    if (!r->pickle_bearing) printf("  %s: not pickle-bearing\n", path);
    else if (spa_classify(r, pol) != SPA_OK) printf("  %s: cannot classify\n", path);
    else {
        printf("  %s: currently %s", path, spa_verdict_name(r->verdict));
        const spa_reason *best = NULL;
        for (size_t i = 0; i < r->n_reasons; i++)
            if (!best || r->reasons[i].severity > best->severity) best = &r->reasons[i];
        if (best) printf(" (%s: %s)", best->rule ? best->rule : "", best->msg ? best->msg : "");
        printf("\n");
    }
    spa_result_free(r);
}

int cmd_trust(int argc, char **argv) {
    const char *polarg = NULL;
    const char *files[TRUST_MAX_FILES];
    size_t nf = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { trust_usage(stdout); return CLI_EXIT_OK; }
        if (!strcmp(argv[i], "--policy") && i + 1 < argc) { polarg = argv[++i]; continue; }
        if (!strncmp(argv[i], "--policy=", 9)) { polarg = argv[i] + 9; continue; }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "safepickle trust: unknown or incomplete argument '%s'\n", argv[i]);
            trust_usage(stderr);
            return CLI_EXIT_ERROR;
        }
        if (nf == sizeof files / sizeof files[0]) return trust_fail("at most %zu files per call", nf);
        files[nf++] = argv[i];
    }
    if (!nf) { trust_usage(stderr); return CLI_EXIT_ERROR; }
    if (!polarg) polarg = getenv("SAFEPICKLE_POLICY");
    if (!polarg || !*polarg)
        return trust_fail("which policy? pass --policy FILE (created from the default if missing) or "
                          "set SAFEPICKLE_POLICY; the embedded default cannot be edited");

    /* the policy text: the file, or the embedded default for a new file */
    char *txt = NULL;
    size_t len = 0;
    bool created = false;
    struct stat st;
    if (stat(polarg, &st) != 0 && errno == ENOENT) {
        size_t dn = 0;
        const char *def = spa_policy_default_json(&dn);
        if (!def) return trust_fail("the embedded default policy is missing (broken build)");
        txt = malloc(dn + 1);
        if (!txt) return trust_fail("out of memory");
        memcpy(txt, def, dn);
        txt[dn] = '\0';
        len = dn;
        created = true;
    } else if (!(txt = dep_read_file(polarg, TRUST_MAX_POLICY, &len))) {
        return trust_fail("cannot read %s: %s", polarg, strerror(errno));
    }
    /* refuse to edit a policy that does not validate: never guess what it meant */
    spa_policy *pol = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    if (spa_policy_parse(txt, len, polarg, &pol, &err) != SPA_OK) {
        free(txt);
        return trust_fail("%s is not a valid policy: %s at byte %llu; fix it first", polarg,
                          err.msg ? err.msg : spa_code_name(err.code), (unsigned long long)err.off);
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(txt, len, &end, 0);
    free(txt);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        spa_policy_free(pol);
        return trust_fail("%s: the top level is not a JSON object", polarg);
    }
    cJSON *tobj = cJSON_GetObjectItemCaseSensitive(doc, TRUST_OBJ);
    if (!tobj) tobj = cJSON_AddObjectToObject(doc, TRUST_OBJ);
    cJSON *list = cJSON_IsObject(tobj) ? cJSON_GetObjectItemCaseSensitive(tobj, TRUST_KEY) : NULL;
    if (cJSON_IsObject(tobj) && !list) list = cJSON_AddArrayToObject(tobj, TRUST_KEY);
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(doc);
        spa_policy_free(pol);
        return trust_fail("%s: \"%s.%s\" is not a list", polarg, TRUST_OBJ, TRUST_KEY);
    }
    int added = 0, rc = CLI_EXIT_OK;
    for (size_t i = 0; i < nf; i++) {
        uint8_t d[32];
        char hex[65];
        spa_err e2 = { SPA_OK, NULL, 0 };
        struct stat fs;
        errno = 0;
        if (stat(files[i], &fs) != 0 || !S_ISREG(fs.st_mode)) {
            fprintf(stderr, "safepickle trust: %s: %s\n", files[i],
                    errno ? strerror(errno) : "not a regular file");
            rc = CLI_EXIT_ERROR;
            continue;
        }
        if (spa_sha256_file(files[i], d, &e2) != SPA_OK) {
            fprintf(stderr, "safepickle trust: cannot read %s: %s\n", files[i], e2.msg ? e2.msg : "I/O error");
            rc = CLI_EXIT_ERROR;
            continue;
        }
        trust_hex(d, hex);
        trust_show_verdict(files[i], pol);
        bool have = false;
        const cJSON *it;
        cJSON_ArrayForEach(it, list) {
            uint8_t o[32];
            if (cJSON_IsString(it) && spa_sha256_parse(it->valuestring, o) && !memcmp(o, d, 32)) have = true;
        }
        if (have) { printf("  %s  %s: already trusted\n", hex, files[i]); continue; }
        cJSON_AddItemToArray(list, cJSON_CreateString(hex));
        printf("  %s  %s: trusted\n", hex, files[i]);
        added++;
    }
    spa_policy_free(pol);
    pol = NULL;
    if (added) {
        char *out = cJSON_Print(doc);
        if (!out) { cJSON_Delete(doc); return trust_fail("out of memory"); }
        size_t ol = strlen(out);
        if (spa_policy_parse(out, ol, polarg, &pol, &err) != SPA_OK) {
            /* our edit broke it: the schema has changed under us; write nothing */
            free(out);
            cJSON_Delete(doc);
            return trust_fail("the edited policy does not validate (%s at byte %llu); %s left unchanged",
                              err.msg ? err.msg : spa_code_name(err.code), (unsigned long long)err.off, polarg);
        }
        spa_policy_free(pol);
        out[ol] = '\n'; /* replaces the NUL: written with its length */
        int w = dep_write_atomic(polarg, out, ol + 1, 0644);
        int e = errno;
        free(out);
        if (w != 0) { cJSON_Delete(doc); return trust_fail("cannot write %s: %s", polarg, strerror(e)); }
        printf("%s %s: %d digest%s added\n", created ? "created" : "updated", polarg, added,
               added == 1 ? "" : "s");
    }
    cJSON_Delete(doc);
    return rc;
}
