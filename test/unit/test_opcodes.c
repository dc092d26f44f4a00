/* test_opcodes.c - the opcode table (opcodes.def) against CPython's
 * pickletools.opcodes: same names, bytes, protocols, argument descriptors and
 * stack effects, and every byte the table lacks is unknown to pickletools. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "opcodes.h"

/* pickletools' ArgumentDescriptor.n for an argument kind: the width of a
 * fixed one, UP_TO_NEWLINE (-1), TAKEN_FROM_ARGUMENT1 (-2), ARGUMENT4 (-3,
 * signed), ARGUMENT4U (-4), ARGUMENT8U (-5) */
static int pt_arg_n(int kind) {
    switch (kind) {
    case SPA_ARG_NONE: return 0;
    case SPA_ARG_LINE: case SPA_ARG_LINE2: return -1;
    case SPA_ARG_CNT1: return -2;
    case SPA_ARG_CNT4S: return -3;
    case SPA_ARG_CNT4: return -4;
    case SPA_ARG_CNT8: return -5;
    default: return (int)spa_arg_width((unsigned)kind);
    }
}

/* The numbers generated from the stack names (what the sniffer runs on),
 * recomputed here independently from pickletools' names. */
static void check_stack_numbers(const spa_opinfo *oi, const char *before, const char *after) {
    char b[200], a[200];
    snprintf(b, sizeof b, "%s", before);
    snprintf(a, sizeof a, "%s", after);
    int pop = 0, below = 0, push = 0;
    bool mark = false, pushmark = false, str = false;
    for (char *sv, *w = strtok_r(b, " ", &sv); w; w = strtok_r(NULL, " ", &sv)) {
        if (!strcmp(w, "mark")) { mark = true; below = pop; pop = 0; }
        else if (strcmp(w, "stackslice")) pop++;
    }
    const char *last = NULL;
    for (char *sv, *w = strtok_r(a, " ", &sv); w; w = strtok_r(NULL, " ", &sv)) {
        if (!strcmp(w, "mark")) pushmark = true; else push++;
        last = w;
    }
    str = last && (!strcmp(last, "any") || !strcmp(last, "str") || !strcmp(last, "bytes_or_str"));
    T_CHECK_MSG(oi->pop == pop && oi->below == below && oi->push == push, "%s: pop %d below %d push %d, want %d %d %d",
                oi->name, oi->pop, oi->below, oi->push, pop, below, push);
    T_CHECK_MSG(!!(oi->stk & SPA_STK_MARK) == mark, "%s: SPA_STK_MARK", oi->name);
    T_CHECK_MSG(!!(oi->stk & SPA_STK_PUSHMARK) == pushmark, "%s: SPA_STK_PUSHMARK", oi->name);
    T_CHECK_MSG(!!(oi->stk & SPA_STK_STR) == str, "%s: SPA_STK_STR", oi->name);
}

static void test_against_pickletools(void) {
    FILE *f = popen("/usr/bin/python3 -c \"import pickletools\n"
                    "for o in pickletools.opcodes:\n"
                    "  print(o.name, ord(o.code), o.proto, o.arg.name if o.arg else 'none',\n"
                    "        '|'+' '.join(s.name for s in o.stack_before)+'|', '|'+' '.join(s.name for s in o.stack_after)+'|',\n"
                    "        o.arg.n if o.arg else 0, sep='\\t')\"",
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
        char *tok[7];
        int k = 0;
        for (char *s = strtok(line, "\t"); s && k < 7; s = strtok(NULL, "\t")) tok[k++] = s;
        T_EQ_INT(k, 7);
        if (k != 7) continue;
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
        check_stack_numbers(oi, before, after);
        T_EQ_INT(pt_arg_n(oi->kind), atoi(tok[6]));
        seen[code] = 1;
        n++;
    }
    T_CHECK(pclose(f) == 0);
    size_t tn;
    spa_op_table(&tn);
    T_EQ_INT(n, (int)tn);
    T_CHECK(n > 0);
    for (int b = 0; b < 256; b++)
        if (!seen[b]) T_CHECK_MSG(spa_op_info((uint8_t)b) == NULL, "byte 0x%02x in table but not in pickletools", b);
}

/* A few stack effects spelled out (the generator and the check above could
 * share a misreading of pickletools' notation). */
static void test_stack_effects(void) {
    const spa_opinfo *o = spa_op_info(SPA_OP_APPENDS);   /* list mark stackslice -> list */
    T_CHECK(o->pop == 0 && o->below == 1 && o->push == 1 && (o->stk & SPA_STK_MARK));
    o = spa_op_info(SPA_OP_OBJ);                         /* mark any stackslice -> any */
    T_CHECK(o->pop == 1 && o->below == 0 && o->push == 1 && (o->stk & SPA_STK_MARK) && (o->stk & SPA_STK_STR));
    o = spa_op_info(SPA_OP_MARK);
    T_CHECK(o->pop == 0 && o->push == 0 && o->stk == SPA_STK_PUSHMARK);
    o = spa_op_info(SPA_OP_NEWOBJ_EX);
    T_CHECK(o->pop == 3 && o->push == 1 && !(o->stk & SPA_STK_MARK));
    o = spa_op_info(SPA_OP_DUP);
    T_CHECK(o->pop == 1 && o->push == 2);
    o = spa_op_info(SPA_OP_SHORT_BINBYTES);
    T_CHECK(o->pop == 0 && o->push == 1 && !(o->stk & SPA_STK_STR));
    o = spa_op_info(SPA_OP_STOP);
    T_CHECK(o->pop == 1 && o->push == 0);
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

T_MAIN("opcodes", T_CASE(test_against_pickletools), T_CASE(test_stack_effects), T_CASE(test_arg_kinds))
