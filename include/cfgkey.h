/*
 * cfgkey: the rows of the config loader's key tables (name, type, where the
 * value lands, bounds, one doc line), shared by the core tables in config.c
 * and the tables each driver brings for its own settings struct. Only data
 * and row macros here; the loader that reads them is config.c.
 */
#ifndef WMD_CFGKEY_H
#define WMD_CFGKEY_H

#include <stddef.h>

enum cfg_key_type {
    CFG_INT,    /* int, JSON integer in [min, max] */
    CFG_UINT64, /* uint64_t, JSON integer >= 0 (jansson stops at INT64_MAX) */
    CFG_DOUBLE, /* double, JSON integer or real in [min, max] */
    CFG_BOOL,   /* bool */
    CFG_STRING, /* char[size], length in [min, size - 1] */
    CFG_NAME,   /* char[size], 1 to size - 1 of [A-Za-z0-9_.-] */
    CFG_ENUM,   /* char[size], one of values */
    CFG_CHOICE, /* int (or an enum), the index of the string in values */
    CFG_OBJECT, /* nested object, keys in sub, offsets relative to the same base */
    CFG_LISTEN, /* "HOST:PORT" into listen_host and listen_port */
    CFG_LASERS, /* array of laser objects, [min, max] elements */
    CFG_NETS,   /* array of "ADDR[/BITS]" strings into a struct acl */
    CFG_DRIVER, /* an object whose "driver" picks the table for the rest (config.c) */
};

/* The key must be in the file (no default). */
#define CFG_REQUIRED 1u
/* A device-level key: lasers sharing one device must give it the same value
 * (the baud rate of a port three lasers share). */
#define CFG_DEVICE 2u

struct cfg_key {
    const char *name;
    enum cfg_key_type type;
    size_t offset;             /* into the struct the table describes */
    size_t size;               /* bytes of the field */
    double min, max;           /* numbers: bounds; strings: min length; lasers: count */
    const char *const *values; /* CFG_ENUM, CFG_CHOICE: NULL-terminated */
    const struct cfg_key *sub; /* CFG_OBJECT */
    unsigned flags;
    const char *doc;
};

#define CFG_FIELD(s, f) offsetof(s, f), sizeof(((s *)0)->f)
/* One row macro per line reads as a table. */
/* clang-format off */
#define CFG_ROW_INT(n, s, f, lo, hi, d) {n, CFG_INT, CFG_FIELD(s, f), lo, hi, NULL, NULL, 0, d}
#define CFG_ROW_U64(n, s, f, d) {n, CFG_UINT64, CFG_FIELD(s, f), 0, 0, NULL, NULL, 0, d}
#define CFG_ROW_DBL(n, s, f, lo, hi, d) {n, CFG_DOUBLE, CFG_FIELD(s, f), lo, hi, NULL, NULL, 0, d}
#define CFG_ROW_BOOL(n, s, f, d) {n, CFG_BOOL, CFG_FIELD(s, f), 0, 0, NULL, NULL, 0, d}
#define CFG_ROW_STR(n, s, f, d) {n, CFG_STRING, CFG_FIELD(s, f), 1, 0, NULL, NULL, 0, d}
#define CFG_ROW_ENUM(n, s, f, v, d) {n, CFG_ENUM, CFG_FIELD(s, f), 0, 0, v, NULL, 0, d}
#define CFG_ROW_CHOICE(n, s, f, v, d) {n, CFG_CHOICE, CFG_FIELD(s, f), 0, 0, v, NULL, 0, d}
#define CFG_ROW_OBJ(n, t, d) {n, CFG_OBJECT, 0, 0, 0, 0, NULL, t, 0, d}
#define CFG_ROW_END {NULL, CFG_INT, 0, 0, 0, 0, NULL, NULL, 0, NULL}
/* clang-format on */

/*
 * What a driver brings for its part of the config: its key table (offsets
 * into its own settings struct), the struct's size (at most
 * CONFIG_SETTINGS_MAX, config.h) and a function that fills in its defaults.
 * The loader keeps the struct as bytes in a struct drv_settings; only the
 * driver reads it.
 */
struct cfg_driver {
    const char *name;
    const struct cfg_key *keys; /* NULL: the driver takes no keys of its own */
    size_t size;
    void (*defaults)(void *settings); /* NULL: all zero */
};

#endif
