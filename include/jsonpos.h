/*
 * jsonpos: where a key path sits in raw JSON text, as line and column, so a
 * config error can name the spot in the file. jansson parses but keeps no
 * positions; this is a small scanner over the same text. It does not validate
 * JSON (parse it with jansson first) and never allocates.
 */
#ifndef WMD_JSONPOS_H
#define WMD_JSONPOS_H

#include <stddef.h>

/* One step of a path: an object member (key != NULL) or an array element. */
struct jsonpos_step {
    const char *key; /* member name, decoded (no JSON escapes); NULL for an index */
    size_t index;    /* 0-based element index when key is NULL */
};

/* A place in the text. line and column are 1-based; the column counts UTF-8
 * characters, not bytes, the way jansson's json_error_t does. */
struct jsonpos {
    size_t offset; /* byte offset into the text */
    int line;
    int column;
};

/* Longest path jsonpos_find_path accepts, in steps. */
#define JSONPOS_MAX_DEPTH 32

/*
 * Find the path given as nsteps steps in text[0..len) (not NUL-terminated).
 * The position reported is that of the member's key (its opening quote) for
 * an object member, and of the element's first character for an array
 * element; the empty path (nsteps 0) is the first character of the document.
 * With duplicate keys the first one wins.
 * Returns 0 when found. Returns -ENOENT when the path is not there, or
 * -EINVAL when the text is not JSON where it was scanned; in both cases *pos
 * is the deepest step that was found (the document start at worst), which is
 * a good place to point at for a missing key.
 */
int jsonpos_find(const char *text, size_t len, const struct jsonpos_step *steps, size_t nsteps,
                 struct jsonpos *pos);

/*
 * The same with the path as a string: "lasers[1].sim.noise_mhz", "" for the
 * document. Keys end at '.' or '[', so keys containing those cannot be named
 * this way (use jsonpos_find). Returns -EINVAL also for a malformed path or
 * one deeper than JSONPOS_MAX_DEPTH or longer than 511 bytes.
 */
int jsonpos_find_path(const char *text, size_t len, const char *path, struct jsonpos *pos);

#endif
