/*
 * metrics: the running daemon's state in the Prometheus text exposition
 * format 0.0.4 (GET /metrics): per laser its frequency, lock error, lock
 * state, output, readings by status, revisit period and relocks; the
 * daemon's clients, loop lag, wavemeter state and build. Base units,
 * Prometheus' naming conventions; the names are listed in docs/HTTP.md and
 * alert rules depend on them. Reads the daemon's structs on the loop
 * thread; never sees a socket.
 */
#ifndef WMD_METRICS_H
#define WMD_METRICS_H

#include <stddef.h>

struct daemon;

/* The exposition: new malloc'd text (not NUL-counted in *len), or NULL
 * when out of memory. Loop thread. */
char *metrics_text(const struct daemon *d, size_t *len);

/* The same with the daemon as a void pointer: struct http_hooks.metrics. */
char *metrics_hook(void *daemon, size_t *len);

#endif
