/*
 * token: the shared secret that write access may require (access.require_token).
 * Either a cookie the daemon makes at each start in its state directory,
 * readable by the service's user and group, or a file the admin provides.
 * Loop thread, start-up only; comparisons take constant time.
 */
#ifndef WMD_TOKEN_H
#define WMD_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

/* 32 random bytes as 64 hex digits; a token file may hold 16 to 256 chars. */
#define TOKEN_MAX 256
#define TOKEN_MIN 16

struct token {
    char value[TOKEN_MAX + 1];
    char path[512]; /* where clients find it */
};

/*
 * Make a new random cookie and write it to dir/cookie (mode 0640, written to
 * a temporary file and renamed, so a client never reads half a token).
 * Returns 0 or a negative errno-style code with err filled.
 */
int token_make_cookie(struct token *t, const char *dir, char *err, size_t errlen);

/* Read a token from path: one line, surrounding white space ignored.
 * Returns 0 or a negative code (-EINVAL when too short or too long). */
int token_load(struct token *t, const char *path, char *err, size_t errlen);

/* True when given equals the token; the time taken does not depend on
 * where they differ. */
bool token_check(const struct token *t, const char *given, size_t len);

#endif
