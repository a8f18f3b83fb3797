/*
 * store: crash-safe persistence of the daemon's state file. A save writes a
 * snapshot to a temporary file, fsyncs it, renames it over the old file and
 * fsyncs the directory, on the thread pool. Callers that must not answer
 * before their change is durable wait for the first save that started after
 * their change. It knows nothing of lasers: the snapshot comes from a callback.
 */
#ifndef WMD_STORE_H
#define WMD_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "log.h"

/* Called on the loop with 0 once the waiter's change is on disk, or a
 * negative errno-style code if the save failed. */
typedef void (*store_done_cb)(void *arg, int rc);

struct store_waiter {
    struct store_waiter *next;
    uint64_t gen;
    store_done_cb cb;
    void *arg;
};

/* New reference: the whole state to save, built on the loop thread. */
typedef json_t *(*store_snapshot_fn)(void *ctx);

/* Embedded in its owner. */
struct store {
    uv_loop_t *loop;
    char path[CONFIG_PATH_MAX + 32];
    char tmp[CONFIG_PATH_MAX + 32];
    char dir[CONFIG_PATH_MAX];
    store_snapshot_fn snapshot;
    void *ctx;

    uv_work_t work;
    bool busy;
    char *text;          /* the snapshot being written (job input) */
    int rc;              /* job output */
    char err[512];       /* job output: what failed (names a path) */
    uint64_t gen_wanted; /* bumped by every store_save */
    uint64_t gen_saving; /* gen the job in flight covers */
    uint64_t gen_saved;  /* everything up to here is durable */
    uint64_t saves, failures;
    struct log_ratelimit fail_log;
    struct store_waiter *waiters;
    void (*on_idle)(struct store *st);
    /* Optional: called on the loop after a save failed, so the owner can
     * mark its state dirty and have a later save try again. */
    void (*on_failed)(void *ctx);
};

/* dir is the state directory; the file is dir/state.json. */
void store_init(struct store *st, uv_loop_t *loop, const char *dir, store_snapshot_fn fn,
                void *ctx);

/*
 * Load the state file. Returns 0 with *out (new reference) set, -ENOENT when
 * there is none, or another negative code when it is unreadable or does not
 * parse: then it is renamed aside to state.json.corrupt-<time>, err says so,
 * and *out is NULL. Loop thread, start-up only (blocking I/O).
 */
int store_load(struct store *st, json_t **out, char *err, size_t errlen);

/* Ask for a save that covers every change made so far. w (may be NULL) is
 * called when that save completed; it must stay valid until then. */
void store_save(struct store *st, struct store_waiter *w, store_done_cb cb, void *arg);

/* cb runs once no save is in flight (at once if none is). */
void store_when_idle(struct store *st, void (*cb)(struct store *st));

#endif
