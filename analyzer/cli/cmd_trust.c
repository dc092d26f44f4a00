/* cmd_trust.c - `safepickle trust FILE... [--policy P]`: records that a person
 * reviewed FILE by adding "SHA256  NAME" to the policy's trusted.sha256 list.
 * The policy text is edited in place (spa_policy_add_trusted: every other byte
 * kept), validated with the real parser, and replaced atomically; a missing
 * policy file is created from the embedded default. */
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
#include "sha256.h"

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
        "Each entry is the digest, two spaces and the file's name (sha256sum's line). Only\n"
        "that list changes: the rest of P is kept byte for byte. P is validated before and\n"
        "after the edit and replaced atomically; if P (a path, or a name ending in .json)\n"
        "does not exist it is created from the embedded default policy. The shipped\n"
        "policies (default, strict, audit) are never edited: copy one first.\n"
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
    char shipped[PATH_MAX];
    if (dep_policy_is_name(polarg)) {
        /* A bare name is a shipped policy (policy_resolve's rule), never a new ./NAME. */
        if (dep_resolve_policy(polarg, shipped, sizeof shipped))
            return trust_fail("'%s' is the shipped policy %s, which trust does not edit; copy it "
                              "(cp %s my-policy.json) and pass --policy my-policy.json", polarg, shipped, shipped);
        size_t pl = strlen(polarg);
        if (pl < 5 || strcmp(polarg + pl - 5, ".json"))
            return trust_fail("policy '%s': no such file and no shipped policy of that name (default, strict, "
                              "audit); to create a new policy file give a path or a name ending in .json", polarg);
    }

    /* the policy text: the file, or the embedded default for a new file */
    char *txt = NULL;
    size_t len = 0;
    bool created = false;
    struct stat st;
    if (stat(polarg, &st) != 0 && errno == ENOENT) {
        size_t dn = 0;
        const char *def = spa_policy_default_json(&dn);
        if (!def || !(txt = strndup(def, dn))) return trust_fail("out of memory");
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
    char *entries[TRUST_MAX_FILES];
    uint8_t digests[TRUST_MAX_FILES][32];
    size_t added = 0;
    int rc = CLI_EXIT_OK;
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
        bool have = spa_policy_trusts_digest(pol, d);
        for (size_t k = 0; k < added && !have; k++) have = !memcmp(digests[k], d, 32);
        if (have) { printf("  %s  %s: already trusted\n", hex, files[i]); continue; }
        /* sha256sum's line: the digest, two spaces, the file's name (for the reader) */
        const char *base = strrchr(files[i], '/') ? strrchr(files[i], '/') + 1 : files[i];
        size_t el = 64 + 2 + strlen(base) + 1;
        if (!(entries[added] = malloc(el))) { rc = trust_fail("out of memory"); break; }
        snprintf(entries[added], el, "%s  %s", hex, base);
        memcpy(digests[added], d, 32);
        printf("  %s  %s: trusted\n", hex, files[i]);
        added++;
    }
    spa_policy_free(pol);
    if (added) {
        char *out = NULL;
        size_t ol = 0;
        if (spa_policy_add_trusted(txt, len, (const char *const *)entries, added, &out, &ol, &err) != SPA_OK) {
            rc = trust_fail("cannot add to %s (%s); it is left unchanged", polarg,
                            err.msg ? err.msg : spa_code_name(err.code));
        } else if (dep_write_atomic(polarg, out, ol, 0644) != 0) {
            rc = trust_fail("cannot write %s: %s", polarg, strerror(errno));
        } else {
            printf("%s %s: %zu digest%s added\n", created ? "created" : "updated", polarg, added,
                   added == 1 ? "" : "s");
        }
        free(out);
    }
    for (size_t k = 0; k < added; k++) free(entries[k]);
    free(txt);
    return rc;
}
