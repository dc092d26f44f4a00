/* jsonout.c - strict UTF-8 for every JSON document written (see jsonout.h).
 * Strings reach JSON from pickle bytes, file names and error messages that may
 * quote either, so the check is made once, on the finished tree, not at every
 * place a string is added. */
#include <stdlib.h>
#include <string.h>

#include "jsonout.h"
#include "bytes.h"

static char *hex_of(const uint8_t *p, size_t n) {
    static const char hx[] = "0123456789abcdef";
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) { o[2 * i] = hx[p[i] >> 4]; o[2 * i + 1] = hx[p[i] & 15]; }
    o[2 * n] = '\0';
    return o;
}

/* Repair one string item in place; add "<key>_hex" to parent when asked. */
static bool fix_string(cJSON *parent, cJSON *it, bool raw_siblings) {
    const uint8_t *s = (const uint8_t *)it->valuestring;
    size_t n = strlen(it->valuestring);
    if (spa_utf8_valid(s, n)) return false;
    char *fixed = spa_utf8_sanitize(s, n);
    char *hex = raw_siblings && it->string && cJSON_IsObject(parent) ? hex_of(s, n) : NULL;
    if (fixed) {
        free(it->valuestring);
        it->valuestring = fixed;
    } else {
        it->valuestring[0] = '\0'; /* OOM: an empty string is still valid */
    }
    if (hex) {
        size_t kl = strlen(it->string);
        char *key = malloc(kl + 5);
        if (key) {
            memcpy(key, it->string, kl);
            memcpy(key + kl, "_hex", 5);
            cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
            cJSON_AddStringToObject(parent, key, hex);
            free(key);
        }
        free(hex);
    }
    return true;
}

static size_t walk(cJSON *node, bool raw_siblings, int depth) {
    size_t fixed = 0;
    if (depth > 512) return 0; /* our trees are shallow; never recurse without bound */
    for (cJSON *it = node->child; it; it = it->next) {
        if (cJSON_IsString(it) && it->valuestring) fixed += fix_string(node, it, raw_siblings);
        else if (cJSON_IsArray(it) || cJSON_IsObject(it)) fixed += walk(it, raw_siblings, depth + 1);
    }
    return fixed;
}

size_t spa_json_make_utf8(cJSON *root, bool raw_siblings) {
    if (!root) return 0;
    if (cJSON_IsString(root) && root->valuestring) {
        const uint8_t *s = (const uint8_t *)root->valuestring;
        if (spa_utf8_valid(s, strlen(root->valuestring))) return 0;
        char *f = spa_utf8_sanitize(s, strlen(root->valuestring));
        if (f) { free(root->valuestring); root->valuestring = f; }
        else root->valuestring[0] = '\0';
        return 1;
    }
    return walk(root, raw_siblings, 0);
}

char *spa_json_print(cJSON *root, bool formatted, bool raw_siblings) {
    if (!root) return NULL;
    spa_json_make_utf8(root, raw_siblings);
    return formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
}
