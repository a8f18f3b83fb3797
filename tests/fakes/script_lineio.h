/*
 * script_lineio: a test-only fake struct lineio (lineio.h) that replays a
 * recorded transcript from tests/fixtures/, for the protocol unit tests. It
 * reports a malformed fixture or a misused call through check's asserts, so
 * it runs only inside a check test; never built into the daemon.
 */
#ifndef WMD_SCRIPT_LINEIO_H
#define WMD_SCRIPT_LINEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "lineio.h"

/*
 * A scripted lineio over a recorded transcript (gpsd test/daemon style): '#'
 * lines are the header, "> bytes" what the code must send, in order, "< bytes"
 * what the device sends after the preceding write, C-escaped (\r \n \t \\ \"
 * \xNN). Bytes from "<" lines become readable when every earlier ">" line
 * has been written; flush_input discards those already readable. When no
 * readable bytes are left, read_until returns -ETIMEDOUT at once.
 *
 * The struct is large: give it static storage, not the stack. Owned by the
 * caller; the lineio from script_lineio_io borrows it.
 */
#define SCRIPT_LINEIO_MAX_ITEMS 64
#define SCRIPT_LINEIO_ITEM_CAP 256

struct script_lineio {
    struct {
        char dir; /* '>' or '<' */
        char bytes[SCRIPT_LINEIO_ITEM_CAP];
        size_t n;
    } item[SCRIPT_LINEIO_MAX_ITEMS];
    size_t nitems, cur; /* cur: the next item not yet sent or arrived */
    char rx[SCRIPT_LINEIO_MAX_ITEMS * SCRIPT_LINEIO_ITEM_CAP]; /* arrived, not yet read */
    size_t rx_head, rx_len;
    char mismatch[512]; /* first difference between the code and the script */
};

/* Load the transcript at path into sc (all of sc is reset); a file that
 * cannot be read or is malformed fails the running test. */
void script_lineio_load(struct script_lineio *sc, const char *path);

/* A lineio over sc (borrowed: sc must outlive it). */
struct lineio script_lineio_io(struct script_lineio *sc);

/* Whether every line of the transcript was written or read. */
bool script_lineio_done(const struct script_lineio *sc);

#endif
