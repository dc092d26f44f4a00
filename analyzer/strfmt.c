/* strfmt.c - bounded text formatting shared by the classifier, the knowledge base and
 * callee resolution: messages are sized for display, so truncation is silent. */
#include <stdarg.h>
#include <stdio.h>

#include "strfmt.h"

int spa_fmt(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (fmt[0] == '%' && fmt[1] == 's' && !fmt[2]) {
        /* a plain bounded copy (the classifier and resolver make one per call
         * they judge): what vsnprintf would write, without its setup */
        const char *s = va_arg(ap, const char *);
        va_end(ap);
        if (!s) s = "(null)"; /* as glibc prints it */
        size_t k = 0;
        for (; s[k] && k + 1 < n; k++) out[k] = s[k];
        if (n) out[k] = '\0';
        return (int)k;
    }
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (k < 0) { if (n) out[0] = '\0'; return 0; }
    return (size_t)k < n ? k : (n ? (int)n - 1 : 0);
}
