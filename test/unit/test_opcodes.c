/* test_opcodes.c - the opcode table (opcodes.def) against CPython's
 * pickletools.opcodes: same names, bytes, protocols, argument descriptors and
 * stack effects, and every byte the table lacks is unknown to pickletools. */
#include <stdlib.h>

#include "t.h"
#include "opcodes.h"

static void test_against_pickletools(void) {
    FILE *f = popen("/usr/bin/python3 -c \"import pickletools\n"
                    "for o in pickletools.opcodes:\n"
                    "  print(o.name, ord(o.code), o.proto, o.arg.name if o.arg else 'none',\n"
                    "        '|'+' '.join(s.name for s in o.stack_before)+'|', '|'+' '.join(s.name for s in o.stack_after)+'|', sep='\\t')\"",
                    "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char line[512];
    int seen[256] = {0}, n = 0;
    while (fgets(line, sizeof line, f)) {
        char nameb[64], argb[64], beforeb[200], afterb[200];
        const char *name = nameb, *arg = argb, *before = beforeb, *after = afterb;
        int code, proto;
        line[strcspn(line, "\n")] = '\0';
        char *tok[6];
        int k = 0;
        for (char *s = strtok(line, "\t"); s && k < 6; s = strtok(NULL, "\t")) tok[k++] = s;
        T_EQ_INT(k, 6);
        if (k != 6) continue;
        snprintf(nameb, sizeof nameb, "%s", tok[0]);
        code = atoi(tok[1]);
        proto = atoi(tok[2]);
        snprintf(argb, sizeof argb, "%s", tok[3]);
        snprintf(beforeb, sizeof beforeb, "%.*s", (int)strlen(tok[4]) - 2, tok[4] + 1);
        snprintf(afterb, sizeof afterb, "%.*s", (int)strlen(tok[5]) - 2, tok[5] + 1);
        const spa_opinfo *oi = spa_op_info((uint8_t)code);
        T_CHECK_MSG(oi != NULL, "opcode %s missing", name);
        if (!oi) continue;
        T_EQ_STR(oi->name, name);
        T_EQ_INT(oi->proto, proto);
        T_EQ_STR(oi->argname, arg);
        T_EQ_STR(oi->before, before);
        T_EQ_STR(oi->after, after);
        seen[code] = 1;
        n++;
    }
    T_CHECK(pclose(f) == 0);
    size_t tn;
    spa_op_table(&tn);
    T_EQ_INT(n, (int)tn);
    T_EQ_INT(n, 68);
    for (int b = 0; b < 256; b++)
        if (!seen[b]) T_CHECK_MSG(spa_op_info((uint8_t)b) == NULL, "byte 0x%02x in table but not in pickletools", b);
}

static void test_arg_kinds(void) {
    T_EQ_INT(spa_op_info(SPA_OP_GLOBAL)->kind, SPA_ARG_LINE2);
    T_EQ_INT(spa_op_info(SPA_OP_INT)->kind, SPA_ARG_LINE);
    T_EQ_INT(spa_op_info(SPA_OP_BINSTRING)->kind, SPA_ARG_CNT4S);
    T_EQ_INT(spa_op_info(SPA_OP_BINBYTES)->kind, SPA_ARG_CNT4);
    T_EQ_INT(spa_op_info(SPA_OP_BYTEARRAY8)->kind, SPA_ARG_CNT8);
    T_EQ_INT(spa_op_info(SPA_OP_FRAME)->kind, SPA_ARG_U8);
    T_EQ_INT(spa_op_info(SPA_OP_BINFLOAT)->kind, SPA_ARG_F8);
    T_EQ_INT(spa_op_info(SPA_OP_LONG_BINPUT)->kind, SPA_ARG_U4);
    T_EQ_INT(spa_op_info(SPA_OP_BININT)->kind, SPA_ARG_S4);
    T_CHECK(spa_op_info(0xff) == NULL);
}

T_MAIN("opcodes", T_CASE(test_against_pickletools), T_CASE(test_arg_kinds))
