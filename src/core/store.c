/*
 * store: the state file, written atomically and durably off the loop. One
 * save in flight at a time; changes that arrive meanwhile are covered by the
 * next save, so a burst of writes costs two fsyncs, not one per write.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static void store_start(struct store *st);

void store_init(struct store *st, uv_loop_t *loop, const char *dir, store_snapshot_fn fn,
                void *ctx) {
    memset(st, 0, sizeof(*st));
    st->loop = loop;
    st->snapshot = fn;
    st->ctx = ctx;
    snprintf(st->dir, sizeof(st->dir), "%s", dir);
    snprintf(st->path, sizeof(st->path), "%s/state.json", dir);
    snprintf(st->tmp, sizeof(st->tmp), "%s/state.json.tmp", dir);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Pool thread: the whole durable write of one snapshot. */
static int store_write_file(const char *path, const char *tmp, const char *dir, const char *text,
                            char *err, size_t errlen) {
    int fd, dfd, rc;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
        return rc;
    }
    if ((rc = write_all(fd, text, strlen(text))) < 0 || (rc = write_all(fd, "\n", 1)) < 0 ||
        (fsync(fd) != 0 && (rc = -errno) < 0)) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (close(fd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    /* rename() is atomic: a crash leaves the old file or the new one, never
     * a mix; the directory fsync makes the rename itself durable. */
    if (rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "rename to %s: %s", path, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: fsync: %s", dir, strerror(-rc));
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    close(dfd);
    return 0;
}

static void store_work(uv_work_t *w) {
    struct store *st = w->data;

    st->rc = store_write_file(st->path, st->tmp, st->dir, st->text, st->err, sizeof(st->err));
}

static void store_after_work(uv_work_t *w, int status) {
    struct store *st = w->data;
    struct store_waiter **pp, *wt, *done = NULL;
    int rc = status < 0 ? status : st->rc;

    st->busy = false;
    free(st->text);
    st->text = NULL;
    if (rc == 0) {
        st->saves++;
        st->gen_saved = st->gen_saving;
    } else {
        st->failures++;
        unsigned suppressed = 0;

        if (st->on_failed)
            st->on_failed(st->ctx);
        /* A full disk fails every periodic save: one line a minute is enough. */
        if (log_ratelimit_ok(&st->fail_log, uv_hrtime(), 60 * 1000000000ull, &suppressed))
            log_warnx("state: cannot save %s: %s (%u failures since the last message)", st->path,
                      status < 0 ? uv_strerror(status) : st->err, suppressed + 1);
    }
    /* Collect the waiters this save covers (or failed for), then call them:
     * a callback may ask for another save. */
    for (pp = &st->waiters; (wt = *pp) != NULL;) {
        if (wt->gen <= st->gen_saving) {
            *pp = wt->next;
            wt->next = done;
            done = wt;
        } else {
            pp = &wt->next;
        }
    }
    if (st->gen_wanted > st->gen_saving && rc == 0)
        store_start(st);
    while ((wt = done) != NULL) {
        done = wt->next;
        wt->cb(wt->arg, rc);
    }
    if (!st->busy && st->gen_wanted > st->gen_saved && st->waiters == NULL && rc != 0) {
        /* A failed periodic save with nobody waiting is retried by the next
         * periodic save; do not spin on a full disk. */
        st->gen_wanted = st->gen_saved;
    }
    if (!st->busy && st->waiters != NULL)
        store_start(st);
    if (!st->busy && st->on_idle) {
        void (*cb)(struct store *) = st->on_idle;
        st->on_idle = NULL;
        cb(st);
    }
}

static void store_start(struct store *st) {
    json_t *snap = st->snapshot(st->ctx);
    int rc;

    st->text = json_dumps(snap, JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(snap);
    st->gen_saving = st->gen_wanted;
    st->work.data = st;
    if (st->text == NULL) {
        rc = -ENOMEM;
    } else {
        rc = uv_queue_work(st->loop, &st->work, store_work, store_after_work);
        if (rc == 0) {
            st->busy = true;
            return;
        }
    }
    /* Could not even start: fail the waiters now, through the usual path. */
    st->rc = rc;
    snprintf(st->err, sizeof(st->err), "%s", rc == -ENOMEM ? "out of memory" : uv_strerror(rc));
    st->busy = true;
    store_after_work(&st->work, 0);
}

void store_save(struct store *st, struct store_waiter *w, store_done_cb cb, void *arg) {
    st->gen_wanted++;
    if (w) {
        w->gen = st->gen_wanted;
        w->cb = cb;
        w->arg = arg;
        w->next = st->waiters;
        st->waiters = w;
    }
    if (!st->busy)
        store_start(st);
}

void store_when_idle(struct store *st, void (*cb)(struct store *st)) {
    if (!st->busy) {
        cb(st);
        return;
    }
    st->on_idle = cb;
}

int store_load(struct store *st, json_t **out, char *err, size_t errlen) {
    json_error_t jerr;
    char aside[sizeof(st->path) + 48];
    struct stat sb;
    json_t *j;

    *out = NULL;
    if (stat(st->path, &sb) != 0) {
        if (errno == ENOENT)
            return -ENOENT;
        snprintf(err, errlen, "%s: %s", st->path, strerror(errno));
        return -errno;
    }
    j = json_load_file(st->path, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL && json_is_object(j)) {
        *out = j;
        return 0;
    }
    json_decref(j);
    /* Nanoseconds in the name: two corrupt files in one second both stay. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(aside, sizeof(aside), "%s.corrupt-%lld.%09ld", st->path, (long long)ts.tv_sec,
             ts.tv_nsec);
    if (rename(st->path, aside) != 0)
        snprintf(err, errlen, "%s: %d:%d: %s; could not move it aside: %s", st->path, jerr.line,
                 jerr.column, j ? "not an object" : jerr.text, strerror(errno));
    else
        snprintf(err, errlen, "%s: %d:%d: %s; kept as %s", st->path, jerr.line, jerr.column,
                 j ? "not an object" : jerr.text, aside);
    return -EINVAL;
}
