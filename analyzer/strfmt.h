/* strfmt.h - bounded text formatting for messages (owner: strfmt.c). */
#ifndef SPA_STRFMT_H
#define SPA_STRFMT_H

#include <stddef.h>

/* snprintf that truncates silently (every caller sizes for display, not for data);
 * returns the length written. Defined in strfmt.c. */
int spa_fmt(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif /* SPA_STRFMT_H */
