/* t.h - a tiny unit-test harness for safepickle's C tests.
 * T_CHECK records a failure with file:line and continues; T_MAIN runs the
 * listed test functions and prints "N passed, N failed" as its last line. */
#ifndef SP_T_H
#define SP_T_H
#include <stdio.h>
#include <string.h>

static int t_failed_checks;
static int t_cur_failed;

#define T_CHECK(cond) do { if (!(cond)) { t_failed_checks++; t_cur_failed = 1; \
    fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define T_CHECK_MSG(cond, ...) do { if (!(cond)) { t_failed_checks++; t_cur_failed = 1; \
    fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define T_EQ_INT(a, b) T_CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", \
    (long long)(a), (long long)(b))
#define T_EQ_STR(a, b) T_CHECK_MSG((a) && (b) && strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", \
    (a) ? (a) : "(null)", (b) ? (b) : "(null)")

typedef struct { const char *name; void (*fn)(void); } t_case;
#define T_CASE(f) { #f, f }

static inline int t_run(const char *suite, const t_case *cases, size_t n) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        t_cur_failed = 0;
        cases[i].fn();
        if (t_cur_failed) { failed++; fprintf(stderr, "FAIL %s.%s\n", suite, cases[i].name); }
        else passed++;
    }
    printf("%s: %d passed, %d failed\n", suite, passed, failed);
    return failed ? 1 : 0;
}
#define T_MAIN(suite, ...) int main(void) { static const t_case c[] = { __VA_ARGS__ }; \
    return t_run(suite, c, sizeof c / sizeof c[0]); }
#endif
