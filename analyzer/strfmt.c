/* strfmt.c - bounded text formatting shared by the classifier, the knowledge base and
 * callee resolution: messages are sized for display, so truncation is silent. */
#include <stdarg.h>
#include <stdio.h>

#include "strfmt.h"

int spa_fmt(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (k < 0) { if (n) out[0] = '\0'; return 0; }
    return (size_t)k < n ? k : (n ? (int)n - 1 : 0);
}
