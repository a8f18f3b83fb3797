/*
 * wavemeterctl: the command-line client of wavemeterd, for people at a terminal and for
 * scripts. It owns the command table (short names, positional arguments with their units,
 * how each answer is shown), one connection and the exit codes. It checks no value the
 * daemon checks and keeps no state: the daemon and docs/PROTOCOL.md are the reference.
 */
#define _GNU_SOURCE /* getaddrinfo, MSG_NOSIGNAL and open_memstream under -std=c11 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Long enough for any read the daemon does (its own reads time out sooner). */
#define DEFAULT_TIMEOUT_MS 10000
/* The protocol's methods take at most four params (laser.set_setpoint). */
#define MAX_ARGS 4
/* Enough for any table the daemon answers with (status has eight columns). */
#define MAX_COLUMNS 32
/* A real as text: sign, 17 digits, point, "e-308" and the NUL, with room to spare. */
#define REAL_TEXT_MAX 32

/* The exit codes, as --help and wavemeterctl(1) list them. */
enum ctl_exit {
    CTL_OK = 0,      /* the daemon answered with a result */
    CTL_ANSWER = 1,  /* the daemon answered with an error (or with no result) */
    CTL_USAGE = 2,   /* the command line is wrong, or a token file given cannot be read */
    CTL_CONNECT = 3, /* no connection, or no answer on it within the timeout */
};

/* ---- numbers and JSON text ---- */

/*
 * x as the shortest of %.15g, %.16g and %.17g that reads back as x, spelled as jansson
 * and the daemon spell reals (".0" on what would read as an integer, no '+' and no
 * leading zeros in an exponent). The daemon writes 15 significant digits, which a double
 * keeps exactly, so this is the text that came over the wire: 0.05, never
 * 0.050000000000000003. buf has REAL_TEXT_MAX bytes.
 */
static void real_text(char *buf, double x) {
    char *e;

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, REAL_TEXT_MAX, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    if ((e = strchr(buf, 'e')) != NULL) {
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            from++, to++;
        while (*from == '0' && from[1] != '\0')
            from++;
        memmove(to, from, strlen(from) + 1);
    } else if (strchr(buf, '.') == NULL && strchr(buf, 'n') == NULL) {
        strcat(buf, ".0"); /* not "inf" or "nan": JSON has neither, and we never print them */
    }
}

/* A number's text as received: integers as they are, reals by real_text(). */
static void number_text(char *buf, json_t *v) {
    if (json_is_integer(v))
        snprintf(buf, REAL_TEXT_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        real_text(buf, json_real_value(v));
}

static void put_json_string(FILE *f, const char *s, size_t n) {
    putc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            putc(c, f);
    }
    putc('"', f);
}

/*
 * v (borrowed) as JSON text: compact with indent 0, else jansson's indented layout with
 * indent spaces a level. Reals keep their wire text (real_text), which json_dumps
 * would not. depth is the level v is at.
 */
static void put_json(FILE *f, json_t *v, int indent, int depth) {
    char num[REAL_TEXT_MAX];
    const char *sep = indent ? ": " : ":";
    bool first = true;

    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *m;
        if (json_object_size(v) == 0) {
            fputs("{}", f);
            return;
        }
        putc('{', f);
        json_object_foreach(v, key, m) {
            fputs(first ? "" : ",", f);
            if (indent)
                fprintf(f, "\n%*s", indent * (depth + 1), "");
            put_json_string(f, key, strlen(key));
            fputs(sep, f);
            put_json(f, m, indent, depth + 1);
            first = false;
        }
        if (indent)
            fprintf(f, "\n%*s", indent * depth, "");
        putc('}', f);
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *m;
        if (json_array_size(v) == 0) {
            fputs("[]", f);
            return;
        }
        putc('[', f);
        json_array_foreach(v, i, m) {
            fputs(i ? "," : "", f);
            if (indent)
                fprintf(f, "\n%*s", indent * (depth + 1), "");
            put_json(f, m, indent, depth + 1);
        }
        if (indent)
            fprintf(f, "\n%*s", indent * depth, "");
        putc(']', f);
        return;
    }
    case JSON_STRING:
        put_json_string(f, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
    case JSON_REAL:
        number_text(num, v);
        fputs(num, f);
        return;
    case JSON_TRUE:
        fputs("true", f);
        return;
    case JSON_FALSE:
        fputs("false", f);
        return;
    case JSON_NULL:
        fputs("null", f);
        return;
    }
}

/* ---- human output: units, labels, cells, tables ---- */

/* Units by the suffix of a member's name (docs/PROTOCOL.md puts them there). */
static const struct unit {
    const char *suffix, *unit;
} units[] = {
    {"_thz", "THz"},
    {"_nm", "nm"},
    {"_mhz", "MHz"},
    {"_mhz_per_s", "MHz/s"},
    {"_mhz_per_v", "MHz/V"},
    {"_v_per_mhz", "V/MHz"},
    {"_v_per_mhz_s", "V/(MHz s)"},
    {"_v_s_per_mhz", "V s/MHz"},
    {"_v_per_s", "V/s"},
    {"_v", "V"},
    {"_s", "s"},
    {"_ms", "ms"},
    {"_ns", "ns"},
    {"_bytes", "bytes"},
};

/* The unit of a member named key (the longest suffix that matches), or NULL. */
static const struct unit *unit_of(const char *key) {
    const struct unit *best = NULL;
    size_t n = strlen(key);

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t k = strlen(units[i].suffix);
        if (k < n && strcmp(key + n - k, units[i].suffix) == 0 &&
            (best == NULL || k > strlen(best->suffix)))
            best = &units[i];
    }
    return best;
}

/* key without its unit suffix, '_' read as a space ("output_min_v" -> "output min"). */
static void put_label(FILE *f, const char *key, bool upper) {
    const struct unit *u = unit_of(key);
    size_t n = strlen(key) - (u ? strlen(u->suffix) : 0);

    for (size_t i = 0; i < n; i++) {
        char c = key[i] == '_' ? ' ' : key[i];
        putc(upper ? toupper((unsigned char)c) : c, f);
    }
}

/* Columns in characters, not bytes: a reason may carry UTF-8. */
static size_t text_width(const char *s) {
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* Unix seconds as local time to the millisecond. */
static void put_time(FILE *f, double unix_s) {
    time_t t = (time_t)unix_s;
    int ms = (int)((unix_s - (double)t) * 1000.0);
    struct tm tm;
    char buf[64];

    if (localtime_r(&t, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        fprintf(f, "%.3f", unix_s);
        return;
    }
    fprintf(f, "%s.%03d", buf, ms < 0 ? 0 : ms);
}

static bool is_time_key(const char *key) {
    return strcmp(key, "time") == 0 || strcmp(key, "since") == 0;
}

/*
 * One value for people: strings bare, numbers as on the wire followed by unit (if not
 * NULL), true/false as yes/no, null as "-", "time" and "since" as local time, arrays of
 * scalars joined by commas, small objects as "key value, key value" with their units.
 */
static void put_human(FILE *f, json_t *v, const char *key, const char *unit) {
    char num[REAL_TEXT_MAX];

    switch (json_typeof(v)) {
    case JSON_STRING:
        /* Control characters would move a terminal's cursor: a reason quoting a device's
         * garbage must not redraw the screen. */
        for (const char *p = json_string_value(v); *p; p++)
            putc((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p, f);
        return;
    case JSON_INTEGER:
    case JSON_REAL:
        if (key && is_time_key(key)) {
            put_time(f, json_number_value(v));
            return;
        }
        number_text(num, v);
        fputs(num, f);
        if (unit)
            fprintf(f, " %s", unit);
        return;
    case JSON_TRUE:
        fputs("yes", f);
        return;
    case JSON_FALSE:
        fputs("no", f);
        return;
    case JSON_NULL:
        putc('-', f);
        return;
    case JSON_ARRAY: {
        size_t i;
        json_t *m;
        if (json_array_size(v) == 0)
            fputs("none", f);
        json_array_foreach(v, i, m) {
            fputs(i ? ", " : "", f);
            put_human(f, m, NULL, unit);
        }
        return;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *m;
        bool first = true;
        json_object_foreach(v, k, m) {
            const struct unit *u = unit_of(k);
            fputs(first ? "" : ", ", f);
            put_label(f, k, false);
            putc(' ', f);
            put_human(f, m, k, u ? u->unit : unit);
            first = false;
        }
        return;
    }
    }
}

/* New reference: put_human() of v as a JSON string, for a table cell. */
static json_t *human_cell(json_t *v, const char *key, const char *unit) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    json_t *cell;

    if (f == NULL)
        return json_string("?");
    put_human(f, v, key, unit);
    fclose(f);
    cell = json_stringn_nocheck(text, len);
    free(text);
    return cell;
}

/* A column of a table: a member of each row ("a.b": member b of member a). */
struct column {
    const char *path;
    const char *head; /* NULL: the path's label in capitals, with its unit */
    bool optional;    /* shown only when a row has it (not null, not false) */
};

/* Borrowed: the member of o at path, or NULL. */
static json_t *member_at(json_t *o, const char *path) {
    char part[128];
    const char *dot;

    while ((dot = strchr(path, '.')) != NULL) {
        size_t n = (size_t)(dot - path);
        if (n >= sizeof(part))
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        o = json_object_get(o, part);
        path = dot + 1;
    }
    return json_object_get(o, path);
}

/* The unit of the last part of path that has one ("revisit_ms.mean": ms). */
static const char *path_unit(const char *path) {
    char part[128];
    const struct unit *u = unit_of(path);
    const char *last = strrchr(path, '.');
    size_t n;

    if (last == NULL)
        return u ? u->unit : NULL;
    if ((u = unit_of(last + 1)) != NULL)
        return u->unit;
    n = (size_t)(last - path);
    if (n >= sizeof(part))
        return NULL;
    memcpy(part, path, n);
    part[n] = '\0';
    return path_unit(part);
}

/* New reference: a column's heading, "FREQUENCY (THz)". */
static json_t *column_head(const struct column *c) {
    char *text = NULL, part[128];
    size_t len = 0;
    const char *p = c->path, *unit = path_unit(c->path);
    FILE *f;
    json_t *head;

    if (c->head)
        return json_string(c->head);
    if ((f = open_memstream(&text, &len)) == NULL)
        return json_string(c->path);
    while (*p) {
        size_t n = strcspn(p, ".");
        snprintf(part, sizeof(part), "%.*s", (int)n, p);
        fputs(p == c->path ? "" : " ", f);
        put_label(f, part, true);
        p += n + (p[n] == '.');
    }
    if (unit)
        fprintf(f, " (%s)", unit);
    fclose(f);
    head = json_stringn_nocheck(text, len);
    free(text);
    return head;
}

/*
 * Widens a column (*int_w characters before the decimal point, *frac_w from it on) to hold
 * cell s: a number column lines its cells up on the point, a heading (head) or a text
 * cell only needs its whole width. Measure the heading after the cells.
 */
static void widen_column(const char *s, bool numeric, bool head, size_t *int_w, size_t *frac_w) {
    size_t before = numeric && !head ? strcspn(s, ".") : text_width(s);
    size_t after = numeric && !head ? strlen(s) - before : 0;

    if (head) {
        if (before > *int_w + *frac_w)
            *int_w = before - *frac_w;
        return;
    }
    *int_w = before > *int_w ? before : *int_w;
    *frac_w = after > *frac_w ? after : *frac_w;
}

/*
 * One line of a table (line, borrowed: n strings) to f, without its newline: two spaces
 * between columns as widen_column() measured them, numbers aligned on their decimal
 * points, a number column's heading (head) to the right, text to the left, no trailing
 * blanks.
 */
static void put_table_line(FILE *f, json_t *line, size_t n, const size_t *int_w,
                           const size_t *frac_w, const bool *numeric, bool head) {
    for (size_t c = 0; c < n; c++) {
        const char *s = json_string_value(json_array_get(line, c));
        size_t w = text_width(s), width = int_w[c] + frac_w[c];
        bool last = c + 1 == n;
        int left = 0, right = 0;

        if (numeric[c] && !head) {
            size_t before = strcspn(s, ".");
            left = (int)(width - frac_w[c] - before);
            right = (int)(frac_w[c] - (strlen(s) - before));
        } else if (numeric[c]) {
            left = (int)(width > w ? width - w : 0);
        } else {
            right = (int)(width > w ? width - w : 0);
        }
        fprintf(f, "%s%*s%s%*s", c ? "  " : "", left, "", s, last ? 0 : right, "");
    }
}

/*
 * rows (borrowed: an array of objects, or one object) as a table with a heading, at
 * indent spaces: two spaces between columns, numbers aligned on their decimal points, no
 * trailing blanks.
 * Units go in the heading, so the cells hold numbers as they came.
 */
static void print_table(json_t *rows, const struct column *cols, size_t ncols, int indent) {
    json_t *lines = json_array(), *one = NULL, *row, *line;
    const struct column *shown[MAX_COLUMNS];
    size_t int_w[MAX_COLUMNS], frac_w[MAX_COLUMNS], n = 0, i;
    bool numeric[MAX_COLUMNS];

    if (json_is_object(rows)) {
        one = json_pack("[O]", rows);
        rows = one;
    }
    for (size_t c = 0; c < ncols && n < MAX_COLUMNS; c++) {
        bool present = !cols[c].optional;
        json_array_foreach(rows, i, row) {
            json_t *v = member_at(row, cols[c].path);
            present = present || (v && !json_is_null(v) && !json_is_false(v));
        }
        if (present)
            shown[n++] = &cols[c];
    }
    line = json_array();
    for (size_t c = 0; c < n; c++) {
        json_array_append_new(line, column_head(shown[c]));
        numeric[c] = json_array_size(rows) > 0;
    }
    json_array_append_new(lines, line);
    json_array_foreach(rows, i, row) {
        line = json_array();
        for (size_t c = 0; c < n; c++) {
            json_t *v = member_at(row, shown[c]->path);
            const char *key = strrchr(shown[c]->path, '.');
            key = key ? key + 1 : shown[c]->path;
            if (v == NULL)
                v = json_null();
            else
                json_incref(v);
            numeric[c] =
                numeric[c] && (json_is_null(v) || (json_is_number(v) && !is_time_key(key)));
            json_array_append_new(line, human_cell(v, key, NULL));
            json_decref(v);
        }
        json_array_append_new(lines, line);
    }
    /* A number column lines its cells up on the decimal point: int_w the widest part
     * before it, frac_w the widest from it on. */
    for (size_t c = 0; c < n; c++) {
        int_w[c] = frac_w[c] = 0;
        json_array_foreach(lines, i, line) {
            if (i > 0)
                widen_column(json_string_value(json_array_get(line, c)), numeric[c], false,
                             &int_w[c], &frac_w[c]);
        }
        widen_column(json_string_value(json_array_get(json_array_get(lines, 0), c)), numeric[c],
                     true, &int_w[c], &frac_w[c]);
    }
    json_array_foreach(lines, i, line) {
        printf("%*s", indent, "");
        put_table_line(stdout, line, n, int_w, frac_w, numeric, i == 0);
        putchar('\n');
    }
    json_decref(lines);
    json_decref(one);
}

/* rows (borrowed, an array of objects) as a table of every member any row has, a
 * member's small object spread over columns ("revisit_ms.mean"). */
static void print_rows(json_t *rows, int indent) {
    json_t *paths = json_array(), *seen = json_object(), *row, *m, *p;
    struct column cols[MAX_COLUMNS];
    const char *key, *sub;
    size_t i, n = 0;
    char path[256];

    json_array_foreach(rows, i, row) {
        json_object_foreach(row, key, m) {
            json_t *s;
            bool spread = json_is_object(m) && json_object_size(m) > 0;
            if (spread) {
                json_object_foreach(m, sub, s) {
                    spread = spread && !json_is_object(s) && !json_is_array(s);
                }
            }
            if (!spread) {
                if (json_object_get(seen, key) == NULL)
                    json_array_append_new(paths, json_string(key));
                json_object_set_new(seen, key, json_true());
                continue;
            }
            json_object_foreach(m, sub, s) {
                snprintf(path, sizeof(path), "%s.%s", key, sub);
                if (json_object_get(seen, path) == NULL)
                    json_array_append_new(paths, json_string(path));
                json_object_set_new(seen, path, json_true());
            }
        }
    }
    json_array_foreach(paths, i, p) {
        if (n < MAX_COLUMNS)
            cols[n++] = (struct column){.path = json_string_value(p)};
    }
    print_table(rows, cols, n, indent);
    json_decref(paths);
    json_decref(seen);
}

static bool is_rows(json_t *v) {
    size_t i;
    json_t *m;

    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    json_array_foreach(v, i, m) {
        if (!json_is_object(m))
            return false;
    }
    return true;
}

/* A member shown on one line: a scalar, an array of scalars, a small flat object. */
static bool is_line(json_t *v) {
    const char *k;
    size_t i;
    json_t *m;

    if (json_is_array(v)) {
        json_array_foreach(v, i, m) {
            if (json_is_object(m) || json_is_array(m))
                return false;
        }
        return true;
    }
    if (!json_is_object(v))
        return true;
    if (json_object_size(v) > 3)
        return false;
    json_object_foreach(v, k, m) {
        if (json_is_object(m) || json_is_array(m))
            return false;
    }
    return true;
}

/*
 * o (borrowed) as "label: value unit" lines at indent spaces, the values aligned; a
 * bigger object as an indented block under its label, an array of objects as a table.
 * unit is the enclosing member's, for members without one of their own.
 */
static void print_object(json_t *o, const char *unit, int indent) {
    const char *key;
    json_t *m;
    size_t width = 0;

    json_object_foreach(o, key, m) {
        const struct unit *u = unit_of(key);
        size_t w = strlen(key) - (u ? strlen(u->suffix) : 0);
        if (is_line(m) && !is_rows(m) && w > width)
            width = w;
    }
    json_object_foreach(o, key, m) {
        const struct unit *u = unit_of(key);
        const char *mine = u ? u->unit : unit;
        size_t w = strlen(key) - (u ? strlen(u->suffix) : 0);

        printf("%*s", indent, "");
        put_label(stdout, key, false);
        if (is_rows(m)) {
            printf(":\n");
            print_rows(m, indent + 2);
        } else if (!is_line(m)) {
            printf(":\n");
            if (json_is_object(m))
                print_object(m, mine, indent + 2);
            else
                printf("%*s%s\n", indent + 2, "", "(not shown: use --json)");
        } else {
            printf(":%*s ", (int)(width - w), "");
            put_human(stdout, m, key, mine);
            putchar('\n');
        }
    }
}

/* Any result: a table for an array of objects, lines for an object, else the value. */
static void show_generic(json_t *result) {
    size_t i;
    json_t *m;

    if (is_rows(result)) {
        print_rows(result, 0);
    } else if (json_is_object(result)) {
        print_object(result, NULL, 0);
    } else if (json_is_array(result)) {
        json_array_foreach(result, i, m) {
            put_human(stdout, m, NULL, NULL);
            putchar('\n');
        }
    } else if (json_is_true(result)) {
        puts("ok");
    } else {
        put_human(stdout, result, NULL, NULL);
        putchar('\n');
    }
}

static void show_readings(json_t *result) {
    static const struct column cols[] = {
        {.path = "laser"},
        {.path = "channel"},
        {.path = "status"},
        {.path = "frequency_thz"},
        {.path = "wavelength_nm"},
        {.path = "age_ms"},
        {.path = "straddled", .optional = true},
        {.path = "detail", .optional = true},
    };

    if (!json_is_array(result) && !json_is_object(result))
        show_generic(result);
    else
        print_table(result, cols, sizeof(cols) / sizeof(cols[0]), 0);
}

static void show_lasers(json_t *result) {
    static const struct column cols[] = {
        {.path = "name", .head = "LASER"},
        {.path = "channel"},
        {.path = "state"},
        {.path = "setpoint_thz"},
        {.path = "reading.frequency_thz", .head = "FREQUENCY (THz)"},
        {.path = "error_mhz"},
        {.path = "output_v"},
        {.path = "reason"},
    };

    if (!json_is_array(result))
        show_generic(result);
    else
        print_table(result, cols, sizeof(cols) / sizeof(cols[0]), 0);
}

static void show_history(json_t *result) {
    static const struct column cols[] = {
        {.path = "time"},      {.path = "seq"},      {.path = "status"}, {.path = "frequency_thz"},
        {.path = "error_mhz"}, {.path = "output_v"}, {.path = "state"},
    };
    json_t *samples = json_object_get(result, "samples");
    json_t *stats = json_object_get(result, "error_mhz");
    json_t *laser = json_object_get(result, "laser"), *m;
    const char *key;
    bool first = true;

    if (!json_is_array(samples) || !json_is_object(stats)) {
        show_generic(result);
        return;
    }
    printf("laser ");
    put_human(stdout, laser ? laser : json_null(), NULL, NULL);
    printf(", channel ");
    put_human(stdout, json_object_get(result, "channel"), NULL, NULL);
    printf(": %zu readings\n", json_array_size(samples));
    if (json_array_size(samples) > 0)
        print_table(samples, cols, sizeof(cols) / sizeof(cols[0]), 0);
    printf("error over ");
    put_human(stdout, json_object_get(stats, "n"), NULL, NULL);
    printf(" readings:");
    json_object_foreach(stats, key, m) {
        if (strcmp(key, "n") == 0)
            continue;
        printf("%s %s ", first ? "" : ",", key);
        put_human(stdout, m, key, json_is_number(m) ? "MHz" : NULL);
        first = false;
    }
    putchar('\n');
}

static void show_version(json_t *result) {
    json_t *name = json_object_get(result, "name"), *version = json_object_get(result, "version");
    json_t *protocol = json_object_get(result, "protocol");

    if (!json_is_string(name) || !json_is_string(version) || !json_is_object(protocol)) {
        show_generic(result);
        return;
    }
    printf("%s %s, protocol %" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT "\n",
           json_string_value(name), json_string_value(version),
           json_integer_value(json_object_get(protocol, "major")),
           json_integer_value(json_object_get(protocol, "minor")));
}

/* ---- the connection ---- */

/* One connection to the daemon and the lines received on it. */
struct session {
    int fd;
    int timeout_ms;         /* for each answer */
    json_int_t next_id;     /* of the next request */
    char *buf;              /* received bytes; the line last returned starts it */
    size_t have, cap, used; /* used: the bytes of that line and its newline */
    bool closed;            /* the daemon closed the connection */
};

static int dial(const char *hostport, int timeout_ms, int *fd_out) {
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    size_t hlen;
    int fd = -1, rc, err = 0;

    if (colon == NULL || (hlen = (size_t)(colon - hostport)) == 0 || hlen >= sizeof(host) ||
        colon[1] == '\0') {
        fprintf(stderr, "wavemeterctl: --connect \"%s\": expected HOST:PORT\n", hostport);
        return CTL_USAGE;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    if ((rc = getaddrinfo(host, colon + 1, &hints, &res)) != 0) {
        fprintf(stderr, "wavemeterctl: cannot connect to %s: %s\n", hostport, gai_strerror(rc));
        return CTL_CONNECT;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        /* A connect to a host that drops packets would otherwise wait minutes. */
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "wavemeterctl: cannot connect to %s: %s\n", hostport, strerror(err));
        return CTL_CONNECT;
    }
    *fd_out = fd;
    return CTL_OK;
}

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends one request; *id gets its id. 0 or CTL_CONNECT (said why). */
static int session_send(struct session *s, const char *method, json_t *params, json_int_t *id) {
    json_t *req =
        json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", s->next_id, "method", method);
    char *text = NULL;
    size_t len = 0, off = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL) {
        json_decref(req);
        fprintf(stderr, "wavemeterctl: out of memory\n");
        return CTL_CONNECT;
    }
    if (params)
        json_object_set(req, "params", params);
    put_json(f, req, 0, 0);
    putc('\n', f);
    fclose(f);
    json_decref(req);
    *id = s->next_id++;
    while (off < len) {
        ssize_t n = send(s->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "wavemeterctl: send: %s\n", strerror(errno));
            free(text);
            return CTL_CONNECT;
        }
        off += (size_t)n;
    }
    free(text);
    return CTL_OK;
}

/*
 * The next line received, NUL-terminated in s->buf and valid until the next call, waiting
 * at most wait_ms (negative: no limit); *line is NULL when none came in that time or a
 * signal cut the wait short. 0, or CTL_CONNECT: s->closed when the daemon closed the
 * connection (not said: the caller knows what it was waiting for), else said why.
 */
static int session_wait_line(struct session *s, int wait_ms, char **line) {
    int64_t deadline = now_ms() + wait_ms;
    char *nl;

    *line = NULL;
    if (s->used > 0) {
        s->have -= s->used;
        memmove(s->buf, s->buf + s->used, s->have);
        s->used = 0;
    }
    while (s->have == 0 || (nl = memchr(s->buf, '\n', s->have)) == NULL) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        int left = wait_ms < 0 ? -1 : (int)(deadline - now_ms()), ready;
        ssize_t n;

        if (s->have + 4096 > s->cap) {
            /* Answers grow with the history depth: no fixed limit here. */
            size_t want = s->cap ? s->cap * 2 : 65536;
            char *bigger = realloc(s->buf, want);
            if (bigger == NULL) {
                fprintf(stderr, "wavemeterctl: out of memory for the answer\n");
                return CTL_CONNECT;
            }
            s->buf = bigger;
            s->cap = want;
        }
        ready = poll(&p, 1, wait_ms < 0 ? -1 : left < 0 ? 0 : left);
        if (ready == 0 || (ready < 0 && errno == EINTR))
            return CTL_OK;
        if (ready < 0) {
            fprintf(stderr, "wavemeterctl: poll: %s\n", strerror(errno));
            return CTL_CONNECT;
        }
        n = read(s->fd, s->buf + s->have, s->cap - s->have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "wavemeterctl: read: %s\n", strerror(errno));
            return CTL_CONNECT;
        }
        if (n == 0) {
            s->closed = true;
            return CTL_CONNECT;
        }
        s->have += (size_t)n;
    }
    *nl = '\0';
    if (nl > s->buf && nl[-1] == '\r')
        nl[-1] = '\0';
    s->used = (size_t)(nl - s->buf) + 1;
    *line = s->buf;
    return CTL_OK;
}

/*
 * The next line received, as session_wait_line() gives it, within timeout_ms (negative: no
 * limit); a signal does not cut this wait short. 0 or CTL_CONNECT (said why).
 */
static int session_line(struct session *s, int timeout_ms, char **line) {
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        int left = (int)(deadline - now_ms()), rc;

        if (timeout_ms < 0)
            left = -1;
        else if (left < 0)
            left = 0;
        if ((rc = session_wait_line(s, left, line)) != CTL_OK) {
            if (s->closed)
                fprintf(stderr, "wavemeterctl: connection closed before an answer\n");
            return rc;
        }
        if (*line)
            return CTL_OK;
        if (timeout_ms >= 0 && now_ms() >= deadline) {
            fprintf(stderr, "wavemeterctl: no answer within %d ms\n", timeout_ms);
            return CTL_CONNECT;
        }
    }
}

/*
 * Calls method with params (borrowed, may be NULL) and waits for its answer; lines that
 * answer something else (notifications) are passed over. *answer gets a new reference
 * (NULL if the line is not JSON) and *line the line as received, valid until the next
 * call. 0 or CTL_CONNECT (said why).
 */
static int session_call(struct session *s, const char *method, json_t *params, json_t **answer,
                        char **line) {
    json_int_t id;
    int rc;

    *answer = NULL;
    if ((rc = session_send(s, method, params, &id)) != CTL_OK)
        return rc;
    for (;;) {
        json_t *a, *aid;
        if ((rc = session_line(s, s->timeout_ms, line)) != CTL_OK)
            return rc;
        a = json_loads(*line, 0, NULL);
        aid = json_object_get(a, "id");
        /* A line that is no JSON, or an error with id null (the daemon could not read
         * our request), is ours: nothing else will come. */
        if (a == NULL || (json_is_integer(aid) && json_integer_value(aid) == id) ||
            (json_is_null(aid) && json_object_get(a, "error"))) {
            *answer = a;
            return CTL_OK;
        }
        json_decref(a);
    }
}

/* ---- the write token ---- */

/* A malloc'd token from the first line of path, NULL if none; *err = errno if unreadable. */
static char *token_from(const char *path, int *err) {
    char buf[300];
    FILE *f = fopen(path, "re");

    if (f == NULL) {
        *err = errno;
        return NULL;
    }
    if (fgets(buf, sizeof(buf), f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, " \t\r\n")] = '\0';
    *err = 0;
    return buf[0] ? strdup(buf) : NULL;
}

/*
 * The write token: from file if one is given (unreadable is a usage error), else the
 * daemon's cookie where it keeps it ($STATE_DIRECTORY, as systemd and scripts/run set it
 * for the daemon, then the packaged and the built-in state directories), if this user
 * may read it. Returns CTL_OK with *token malloc'd or NULL, or CTL_USAGE (said why).
 */
static int find_token(const char *file, char **token) {
    static const char *const cookies[] = {"/var/lib/wavemeterd/cookie", "build/state/cookie"};
    const char *state = getenv("STATE_DIRECTORY");
    char path[4096];
    int err;

    *token = NULL;
    if (file) {
        if ((*token = token_from(file, &err)) == NULL && err != 0) {
            fprintf(stderr, "wavemeterctl: token file %s: %s\n", file, strerror(err));
            return CTL_USAGE;
        }
        return CTL_OK;
    }
    if (state && *state) {
        /* The daemon keeps its state in the first directory of the list. */
        snprintf(path, sizeof(path), "%.*s/cookie", (int)strcspn(state, ":"), state);
        if ((*token = token_from(path, &err)) != NULL)
            return CTL_OK;
    }
    for (size_t i = 0; i < sizeof(cookies) / sizeof(cookies[0]) && *token == NULL; i++)
        *token = token_from(cookies[i], &err);
    return CTL_OK;
}

/* ---- commands ---- */

enum arg_kind {
    ARG_LASER,    /* a laser's name, sent as a string */
    ARG_TARGET,   /* a laser's name, or the number of a channel when no laser has that name */
    ARG_NUMBER,   /* a number, optionally followed by the unit (attached or next) */
    ARG_SETPOINT, /* a number then THz (frequency_thz, also without unit) or nm (wavelength_nm) */
    ARG_STRING,   /* sent as typed */
    ARG_LASERS,   /* this and every further positional argument: an array of laser names */
};

/* A positional argument: the param it fills, in the protocol's order. */
struct arg {
    const char *param;
    enum arg_kind kind;
    const char *unit; /* ARG_NUMBER: the unit it may carry, or NULL */
};

struct command;

/* What a command needs once it runs: the connection and how to print. */
struct ctl {
    struct session s;
    bool raw;   /* print the answer line as it came */
    bool human; /* print the result for people; else as JSON */
    bool json;  /* --json was asked for (not only a pipe's default) */
    long count; /* watch: stop after this many pushes; 0: until interrupted */
};

/*
 * One command. A command is one call (run NULL) whose answer show prints for people, or
 * runs by itself: `watch` subscribes, then prints the notifications it receives until
 * interrupted.
 */
struct command {
    const char *name;     /* what people type (the method's name works as well) */
    const char *method;   /* the JSON-RPC method */
    const char *synopsis; /* its arguments, for --help */
    const char *help;
    struct arg args[MAX_ARGS];
    bool writes;                  /* a write method: log in first when a token is found */
    void (*show)(json_t *result); /* the result for people; NULL: show_generic() */
    int (*run)(struct ctl *ctl, const struct command *cmd, json_t *params);
};

static int run_watch(struct ctl *ctl, const struct command *cmd, json_t *params);

static const struct command commands[] = {
    {.name = "ping", .method = "ping", .synopsis = "", .help = "check that the daemon answers"},
    {.name = "version",
     .method = "version",
     .synopsis = "",
     .help = "the daemon's version and protocol",
     .show = show_version},
    {.name = "status",
     .method = "status",
     .synopsis = "",
     .help = "the daemon, wavemeter, actuators, clients"},
    {.name = "channels",
     .method = "channels",
     .synopsis = "",
     .help = "every channel: laser, exposure, settle"},
    {.name = "read",
     .method = "read",
     .synopsis = "[LASER|CHANNEL]",
     .help = "latest reading of every channel or one",
     .args = {{.param = "laser", .kind = ARG_TARGET}},
     .show = show_readings},
    {.name = "lasers",
     .method = "lasers",
     .synopsis = "",
     .help = "every laser: state, setpoint, error",
     .show = show_lasers},
    {.name = "get",
     .method = "laser.get",
     .synopsis = "LASER",
     .help = "one laser in full",
     .args = {{.param = "laser", .kind = ARG_LASER}}},
    {.name = "setpoint",
     .method = "laser.set_setpoint",
     .synopsis = "LASER VALUE{THz|nm} [RAMP]",
     .help = "move the setpoint (RAMP in MHz/s)",
     .args = {{.param = "laser", .kind = ARG_LASER},
              {.param = "frequency_thz", .kind = ARG_SETPOINT},
              {.param = "ramp_mhz_per_s", .kind = ARG_NUMBER, .unit = "MHz/s"}},
     .writes = true},
    {.name = "lock",
     .method = "laser.lock",
     .synopsis = "LASER",
     .help = "lock, bumpless from the present output",
     .args = {{.param = "laser", .kind = ARG_LASER}},
     .writes = true},
    {.name = "unlock",
     .method = "laser.unlock",
     .synopsis = "LASER",
     .help = "stop the lock; the output stays",
     .args = {{.param = "laser", .kind = ARG_LASER}},
     .writes = true},
    {.name = "gains",
     .method = "laser.set_gains",
     .synopsis = "LASER [KP [KI [KD]]]",
     .help = "set gains: V/MHz, V/(MHz s), V s/MHz",
     .args = {{.param = "laser", .kind = ARG_LASER},
              {.param = "kp", .kind = ARG_NUMBER},
              {.param = "ki", .kind = ARG_NUMBER},
              {.param = "kd", .kind = ARG_NUMBER}},
     .writes = true},
    {.name = "output",
     .method = "laser.set_output",
     .synopsis = "LASER VOLTS",
     .help = "set an unlocked laser's output",
     .args = {{.param = "laser", .kind = ARG_LASER},
              {.param = "output_v", .kind = ARG_NUMBER, .unit = "V"}},
     .writes = true},
    {.name = "autotune",
     .method = "laser.autotune",
     .synopsis = "LASER [STEP_V] [apply=true]",
     .help = "measure S, lag, noise, drift; propose gains",
     .args = {{.param = "laser", .kind = ARG_LASER},
              {.param = "step_v", .kind = ARG_NUMBER, .unit = "V"}},
     .writes = true},
    {.name = "history",
     .method = "history",
     .synopsis = "LASER|CHANNEL [SECONDS]",
     .help = "readings of the last SECONDS, statistics",
     .args = {{.param = "laser", .kind = ARG_TARGET},
              {.param = "seconds", .kind = ARG_NUMBER, .unit = "s"}},
     .show = show_history},
    {.name = "watch",
     .method = "subscribe",
     .synopsis = "[LASER...]",
     .help = "live table of readings and locks (--count N)",
     .args = {{.param = "lasers", .kind = ARG_LASERS}},
     .run = run_watch},
    {.name = "auth",
     .method = "auth",
     .synopsis = "TOKEN",
     .help = "log in (writes do it by themselves)",
     .args = {{.param = "token", .kind = ARG_STRING}}},
    {.name = "sim.fault",
     .method = "sim.fault",
     .synopsis = "LASER|CHANNEL FAULT",
     .help = "simulator: none, no_signal, ...",
     .args = {{.param = "laser", .kind = ARG_TARGET}, {.param = "fault", .kind = ARG_STRING}},
     .writes = true},
    {.name = "sim.mode_hop",
     .method = "sim.mode_hop",
     .synopsis = "LASER|CHANNEL MHZ",
     .help = "simulator: the laser jumps by MHZ",
     .args = {{.param = "laser", .kind = ARG_TARGET},
              {.param = "jump_mhz", .kind = ARG_NUMBER, .unit = "MHz"}},
     .writes = true},
    {.name = "sim.disconnect",
     .method = "sim.disconnect",
     .synopsis = "",
     .help = "simulator: every read fails",
     .writes = true},
    {.name = "sim.connect",
     .method = "sim.connect",
     .synopsis = "",
     .help = "simulator: reads work again",
     .writes = true},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0 || strcmp(commands[i].method, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: wavemeterctl [OPTIONS] COMMAND [ARGS...] [KEY=VALUE...]\n"
               "       wavemeterctl [OPTIONS] METHOD [KEY=VALUE... | JSON]\n"
               "Options (--json, --human, --raw and --count also after the command):\n"
               "  -c, --connect HOST:PORT  the daemon (default $WAVEMETERD_ADDR, 127.0.0.1:7420)\n"
               "  -H, --human              print the result for people: tables, units (the\n"
               "                           default when the output is a terminal)\n"
               "  -j, --json               print the result as JSON, numbers as received (the\n"
               "                           default when the output is a pipe or file)\n"
               "  -r, --raw                print the answer line as received\n"
               "  -t, --timeout MS         wait at most MS ms for each answer (default 10000)\n"
               "  -k, --token-file FILE    log in for writes with this token (default\n"
               "                           $WAVEMETERD_TOKEN_FILE, else the daemon's cookie in\n"
               "                           $STATE_DIRECTORY, /var/lib/wavemeterd or "
               "build/state)\n"
               "      --count N            watch: stop after N pushes\n"
               "  -h, --help               this text\n"
               "Commands (each also by its method's name):\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char head[64];
        snprintf(head, sizeof(head), "%s %s", commands[i].name, commands[i].synopsis);
        fprintf(f, "  %-36s %s\n", head, commands[i].help);
    }
    fprintf(f, "A LASER|CHANNEL number is a channel unless a laser has that name. Units may\n"
               "follow a number, attached or not: 751.52686THz, 398.911 nm, 1.5V, 60s, 20MHz/s.\n"
               "KEY=VALUE names a param (VALUE is JSON, else a string); one JSON object or array\n"
               "is the params as they are; any other METHOD is sent as typed.\n"
               "watch redraws its table in place on a terminal until Ctrl-C; into a pipe it\n"
               "prints a line per push (--json or --raw: each push as received).\n"
               "Exit status: 0 ok, 1 the daemon answered with an error, 2 usage (or an\n"
               "unreadable token file), 3 cannot connect (or no answer in time, or the\n"
               "connection closed: how watch ends when the daemon stops).\n"
               "Examples: wavemeterctl read\n"
               "          wavemeterctl setpoint 399 751.52686THz\n"
               "          wavemeterctl setpoint 399 398.911nm 20\n"
               "          wavemeterctl --json laser.get 397\n"
               "          wavemeterctl watch 399 397\n"
               "Docs: wavemeterctl(1), docs/PROTOCOL.md\n");
}

/* Case-insensitive: does text equal unit? */
static bool is_unit(const char *text, const char *unit) {
    return unit && strcasecmp(text, unit) == 0;
}

/*
 * The number at the start of text (JSON's syntax, a leading '+' allowed): a new
 * reference, integers as integers, and *rest where it ends. NULL if text does not start
 * with a finite number.
 */
static json_t *scan_number(const char *text, const char **rest) {
    const char *p = text;
    bool real = false, digits = false;
    char *end;

    if (*p == '-' || *p == '+')
        p++;
    for (; isdigit((unsigned char)*p); p++)
        digits = true;
    if (*p == '.') {
        real = true;
        for (p++; isdigit((unsigned char)*p); p++)
            digits = true;
    }
    if (!digits)
        return NULL;
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        if (*q == '-' || *q == '+')
            q++;
        if (isdigit((unsigned char)*q)) {
            real = true;
            for (p = q; isdigit((unsigned char)*p); p++)
                ;
        }
    }
    *rest = p;
    if (!real) {
        errno = 0;
        long long i = strtoll(text, &end, 10);
        if (errno == 0 && end == p)
            return json_integer(i);
    }
    double x = strtod(text, &end);
    if (end != p || !isfinite(x))
        return NULL;
    return json_real(x);
}

static bool all_digits(const char *s) {
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/*
 * Fills params (borrowed) from one positional argument argv[*i] for a, consuming a unit
 * given as the next argument too. CTL_OK or CTL_USAGE (said why).
 */
static int put_arg(json_t *params, const struct command *cmd, const struct arg *a, char **argv,
                   int argc, int *i) {
    const char *text = argv[*i], *rest = NULL, *param = a->param;
    json_t *v;

    switch (a->kind) {
    case ARG_LASER:
    case ARG_TARGET:
    case ARG_STRING:
        json_object_set_new(params, param, json_string(text));
        return CTL_OK;
    case ARG_LASERS: {
        json_t *list = json_object_get(params, param);
        if (!json_is_array(list)) {
            list = json_array();
            json_object_set_new(params, param, list);
        }
        json_array_append_new(list, json_string(text));
        return CTL_OK;
    }
    case ARG_NUMBER:
    case ARG_SETPOINT:
        break;
    }
    if ((v = scan_number(text, &rest)) == NULL) {
        fprintf(stderr, "wavemeterctl: %s: \"%s\": expected a number for %s\n", cmd->name, text,
                param);
        return CTL_USAGE;
    }
    if (*rest == '\0' && *i + 1 < argc &&
        (a->kind == ARG_SETPOINT ? is_unit(argv[*i + 1], "THz") || is_unit(argv[*i + 1], "nm")
                                 : is_unit(argv[*i + 1], a->unit)))
        rest = argv[++*i];
    while (*rest == ' ')
        rest++;
    if (a->kind == ARG_SETPOINT && is_unit(rest, "nm")) {
        param = "wavelength_nm";
    } else if (*rest != '\0' &&
               !(a->kind == ARG_SETPOINT ? is_unit(rest, "THz") : is_unit(rest, a->unit))) {
        fprintf(stderr, "wavemeterctl: %s: \"%s\": %s takes %s\n", cmd->name, text, param,
                a->kind == ARG_SETPOINT ? "THz or nm"
                : a->unit               ? a->unit
                                        : "a plain number");
        json_decref(v);
        return CTL_USAGE;
    }
    json_object_set_new(params, param, v);
    return CTL_OK;
}

/*
 * New reference: the params of cmd (NULL for an unknown method) from args[0..n): one JSON
 * object or array as it is; else positional arguments in cmd's order and KEY=VALUE
 * pairs. *params is NULL without arguments. CTL_OK or CTL_USAGE (said why).
 */
static int build_params(const struct command *cmd, const char *name, char **args, int n,
                        json_t **params) {
    json_error_t jerr;
    int pos = 0;

    *params = NULL;
    if (n == 0)
        return CTL_OK;
    if (n == 1 && (args[0][0] == '{' || args[0][0] == '[')) {
        if ((*params = json_loads(args[0], 0, &jerr)) == NULL) {
            fprintf(stderr, "wavemeterctl: params: %s\n", jerr.text);
            return CTL_USAGE;
        }
        return CTL_OK;
    }
    *params = json_object();
    for (int i = 0; i < n; i++) {
        char *eq = strchr(args[i], '=');
        json_t *v;

        if (eq && eq != args[i]) {
            *eq = '\0';
            if ((v = json_loads(eq + 1, JSON_DECODE_ANY, NULL)) == NULL)
                v = json_string(eq + 1);
            json_object_set_new(*params, args[i], v);
            *eq = '=';
            continue;
        }
        if (cmd == NULL) {
            fprintf(stderr, "wavemeterctl: %s: \"%s\": expected KEY=VALUE\n", name, args[i]);
            goto fail;
        }
        if (pos >= MAX_ARGS || cmd->args[pos].param == NULL) {
            fprintf(stderr, "wavemeterctl: %s: \"%s\": too many arguments (%s %s)\n", cmd->name,
                    args[i], cmd->name, cmd->synopsis);
            goto fail;
        }
        if (put_arg(*params, cmd, &cmd->args[pos], args, n, &i) != CTL_OK)
            goto fail;
        if (cmd->args[pos].kind != ARG_LASERS)
            pos++;
    }
    return CTL_OK;
fail:
    json_decref(*params);
    *params = NULL;
    return CTL_USAGE;
}

/*
 * A LASER|CHANNEL argument that is a number ("399") names a laser if one has that name,
 * else a channel: ask the daemon which (channels lists both). Changes params (borrowed).
 * CTL_OK or CTL_CONNECT.
 */
static int resolve_target(struct session *s, const struct command *cmd, json_t *params) {
    json_t *laser = json_object_get(params, "laser"), *ans, *ch;
    const char *name = json_string_value(laser);
    bool is_laser = false;
    char *line;
    size_t i;
    int rc;

    if (cmd == NULL || cmd->args[0].kind != ARG_TARGET || name == NULL || !all_digits(name))
        return CTL_OK;
    if ((rc = session_call(s, "channels", NULL, &ans, &line)) != CTL_OK)
        return rc;
    json_array_foreach(json_object_get(ans, "result"), i, ch) {
        const char *l = json_string_value(json_object_get(ch, "laser"));
        is_laser = is_laser || (l && strcmp(l, name) == 0);
    }
    /* Without an answer, let the daemon say what it makes of the name. */
    if (!is_laser && json_is_array(json_object_get(ans, "result"))) {
        json_object_set_new(params, "channel", json_integer(strtoll(name, NULL, 10)));
        json_object_del(params, "laser");
    }
    json_decref(ans);
    return CTL_OK;
}

/*
 * An error answer named a laser or a channel that is not there: say which there are,
 * from a second call on the same connection.
 */
static void suggest_names(struct session *s, const char *message) {
    bool laser = strstr(message, "no laser \"") != NULL;
    json_t *ans, *m;
    char *line;
    size_t i;

    if (!laser && strstr(message, "no channel ") == NULL)
        return;
    if (session_call(s, laser ? "lasers" : "channels", NULL, &ans, &line) != CTL_OK)
        return;
    if (json_array_size(json_object_get(ans, "result")) > 0) {
        fprintf(stderr, "wavemeterctl: %s here: ", laser ? "lasers" : "channels");
        json_array_foreach(json_object_get(ans, "result"), i, m) {
            if (laser)
                fprintf(stderr, "%s%s", i ? ", " : "",
                        json_string_value(json_object_get(m, "name")));
            else
                fprintf(stderr, "%s%" JSON_INTEGER_FORMAT " (%s)", i ? ", " : "",
                        json_integer_value(json_object_get(m, "channel")),
                        json_string_value(json_object_get(m, "laser")));
        }
        fputc('\n', stderr);
    }
    json_decref(ans);
}

/* An error answer for people, on stderr: "METHOD: MESSAGE (CODE)", then its data. */
static void print_error(const char *method, json_t *error) {
    json_t *data = json_object_get(error, "data");
    const char *message = json_string_value(json_object_get(error, "message"));

    fprintf(stderr, "wavemeterctl: %s: %s (%" JSON_INTEGER_FORMAT ")\n", method,
            message ? message : "error", json_integer_value(json_object_get(error, "code")));
    if (data) {
        fputs("  data: ", stderr);
        put_json(stderr, data, 0, 0);
        fputc('\n', stderr);
    }
}

/* The one call most commands are: call, print the answer, say how it went. */
static int run_call(struct ctl *ctl, const struct command *cmd, const char *method,
                    json_t *params) {
    json_t *ans, *result, *error;
    char *line;
    int rc;

    if ((rc = session_call(&ctl->s, method, params, &ans, &line)) != CTL_OK)
        return rc;
    result = json_object_get(ans, "result");
    error = json_object_get(ans, "error");
    rc = result ? CTL_OK : CTL_ANSWER;
    if (ctl->raw || ans == NULL) {
        puts(line);
    } else if (!ctl->human) {
        put_json(stdout, result ? result : error ? error : ans, 2, 0);
        putchar('\n');
    } else if (result) {
        (cmd && cmd->show ? cmd->show : show_generic)(result);
    } else if (error) {
        print_error(method, error);
    } else {
        fprintf(stderr, "wavemeterctl: %s: an answer without result or error: %s\n", method, line);
    }
    if (json_is_string(json_object_get(error, "message")))
        suggest_names(&ctl->s, json_string_value(json_object_get(error, "message")));
    json_decref(ans);
    return rc;
}

/* Logs this connection in; a refusal is said and the call goes on (and fails -32001). */
static int login(struct session *s, const char *token) {
    json_t *params = json_pack("{s:s}", "token", token), *ans;
    char *line;
    int rc = session_call(s, "auth", params, &ans, &line);

    json_decref(params);
    if (rc == CTL_OK && json_object_get(ans, "error"))
        print_error("auth refused", json_object_get(ans, "error"));
    json_decref(ans);
    return rc;
}

/* ---- watch: a live table from subscribe ---- */

/*
 * A terminal's table is drawn again at least every WATCH_TICK_MS, so the ages grow in
 * front of the reader (5 times a second: smooth enough, and cheap), and at most every
 * WATCH_REDRAW_MS while pushes pour in (16 lasers at 50 readings a second would otherwise
 * redraw 800 times a second).
 */
#define WATCH_TICK_MS 200
#define WATCH_REDRAW_MS 50
/* A ping after a minute without a line: the daemon closes a connection that has been idle
 * for limits.idle_timeout_s (15 minutes by default), as it is while its wavemeter is
 * unplugged and no reading comes. */
#define WATCH_KEEPALIVE_MS 60000
/* Error and output change with every controller step, and a `lock` push comes only when
 * the state changes: the table asks `lasers` for them once a second. */
#define WATCH_LOCKS_MS 1000

/* The columns: what a row holds under these names, age_ms computed as it is drawn. */
static const struct column watch_cols[] = {
    {.path = "laser"},         {.path = "channel"},       {.path = "status"},
    {.path = "frequency_thz"}, {.path = "wavelength_nm"}, {.path = "error_mhz"},
    {.path = "state"},         {.path = "output_v"},      {.path = "age_ms"},
};
#define WATCH_NCOLS (sizeof(watch_cols) / sizeof(watch_cols[0]))

/* One laser of the table. */
struct watch_row {
    json_t *cells;  /* owned: the members above as received (age_ms as the reading came) */
    json_int_t seq; /* the reading's own per-channel seq, so an older one never replaces it */
    int64_t got_ms; /* when that reading came, on our monotonic clock */
};

struct watch {
    struct watch_row *rows; /* owned, nrows of them, in the subscription's order */
    size_t nrows;
    size_t int_w[WATCH_NCOLS], frac_w[WATCH_NCOLS]; /* only ever widen: the table stays put */
    bool numeric[WATCH_NCOLS];
    bool tty;          /* redraw in place; else a line per push */
    int drawn;         /* lines of the frame last drawn on the terminal */
    json_int_t missed; /* pushes the daemon dropped for us, in all */
    json_int_t sub;    /* our subscription's number */
};

/* Set by SIGINT and SIGTERM, read by the watch loop: a signal handler can reach no other
 * state, hence this one global. */
static volatile sig_atomic_t watch_stop;

static void watch_on_signal(int sig) {
    (void)sig;
    watch_stop = 1;
}

/* The row of laser name, or NULL. */
static struct watch_row *watch_row(struct watch *w, const char *name) {
    for (size_t i = 0; name && i < w->nrows; i++)
        if (strcmp(json_string_value(json_object_get(w->rows[i].cells, "laser")), name) == 0)
            return &w->rows[i];
    return NULL;
}

/* r takes reading (borrowed) unless it has a newer one: status, frequency, wavelength,
 * age. */
static void watch_take_reading(struct watch_row *r, json_t *reading) {
    static const char *const keys[] = {"status", "frequency_thz", "wavelength_nm", "age_ms"};
    json_t *seq = json_object_get(reading, "seq");

    if (json_integer_value(seq) < r->seq)
        return;
    r->seq = json_integer_value(seq);
    r->got_ms = now_ms();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(reading, keys[i]);
        json_object_set(r->cells, keys[i], v ? v : json_null());
    }
}

/* r takes lock (borrowed: a `lock` push or a laser.get answer): state, output, error. */
static void watch_take_lock(struct watch_row *r, json_t *lock) {
    static const char *const keys[] = {"state", "output_v", "error_mhz"};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(lock, keys[i]);
        json_object_set(r->cells, keys[i], v ? v : json_null());
    }
}

/* New reference: the cells of r as text, its age grown by the time since it came. */
static json_t *watch_line(const struct watch_row *r) {
    json_t *line = json_array(), *age = json_object_get(r->cells, "age_ms");

    for (size_t c = 0; c + 1 < WATCH_NCOLS; c++) {
        json_t *v = json_object_get(r->cells, watch_cols[c].path);
        json_array_append_new(line, human_cell(v ? v : json_null(), watch_cols[c].path, NULL));
    }
    /* Whole milliseconds: the age is ours, not a number from the wire, and tenths would
     * only flicker. */
    if (json_is_number(age))
        json_array_append_new(
            line, json_sprintf("%.0f", json_number_value(age) + (double)(now_ms() - r->got_ms)));
    else
        json_array_append_new(line, json_string("-"));
    return line;
}

/* New reference: the heading line. */
static json_t *watch_head(void) {
    json_t *line = json_array();

    for (size_t c = 0; c < WATCH_NCOLS; c++)
        json_array_append_new(line, column_head(&watch_cols[c]));
    return line;
}

/* Widens w's columns for lines (borrowed: rows of cells), then for head, as widen_column()
 * wants. */
static void watch_widen(struct watch *w, json_t *lines, json_t *head) {
    json_t *line;
    size_t i;

    json_array_foreach(lines, i, line) {
        for (size_t c = 0; c < WATCH_NCOLS; c++)
            widen_column(json_string_value(json_array_get(line, c)), w->numeric[c], false,
                         &w->int_w[c], &w->frac_w[c]);
    }
    for (size_t c = 0; c < WATCH_NCOLS; c++)
        widen_column(json_string_value(json_array_get(head, c)), w->numeric[c], true, &w->int_w[c],
                     &w->frac_w[c]);
}

/* New reference: the lines of every row. */
static json_t *watch_lines(const struct watch *w) {
    json_t *lines = json_array();

    for (size_t i = 0; i < w->nrows; i++)
        json_array_append_new(lines, watch_line(&w->rows[i]));
    return lines;
}

/*
 * The whole table on the terminal, over the one drawn before: up as many lines as that
 * had, then each line rewritten and the rest of it erased. One write, so the terminal
 * never shows half a frame; lines wider than the terminal are cut (autowrap is off),
 * so the count of lines to go up stays true.
 */
static void watch_draw(struct watch *w) {
    json_t *lines = watch_lines(w), *head = watch_head(), *line;
    char *text = NULL;
    size_t len = 0, i;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        goto out;
    watch_widen(w, lines, head);
    if (w->drawn > 0)
        fprintf(f, "\x1b[%dA", w->drawn);
    fputs("\r", f);
    put_table_line(f, head, WATCH_NCOLS, w->int_w, w->frac_w, w->numeric, true);
    fputs("\x1b[K\n", f);
    w->drawn = 1;
    json_array_foreach(lines, i, line) {
        put_table_line(f, line, WATCH_NCOLS, w->int_w, w->frac_w, w->numeric, false);
        fputs("\x1b[K\n", f);
        w->drawn++;
    }
    if (w->missed > 0) {
        fprintf(f, "missed %" JSON_INTEGER_FORMAT " push%s\x1b[K\n", w->missed,
                w->missed == 1 ? "" : "es");
        w->drawn++;
    }
    fputs("\x1b[J", f);
    fclose(f);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
out:
    json_decref(lines);
    json_decref(head);
}

/* A terminal as it was: cursor shown, autowrap on, the line under the table (where the
 * terminal echoed ^C) blank. */
static void watch_restore(void) {
    fputs("\r\x1b[K\x1b[?7h\x1b[?25h", stdout);
    fflush(stdout);
}

/* One line for r in a pipe: the same columns as the table (wider if r needs it). */
static void watch_print_row(struct watch *w, struct watch_row *r) {
    json_t *lines = json_pack("[o]", watch_line(r)), *head = watch_head();

    watch_widen(w, lines, head);
    put_table_line(stdout, json_array_get(lines, 0), WATCH_NCOLS, w->int_w, w->frac_w, w->numeric,
                   false);
    putchar('\n');
    fflush(stdout);
    json_decref(lines);
    json_decref(head);
}

/*
 * A push (borrowed, a parsed notification line). Returns whether it was one of ours:
 * a reading or a lock of our subscription, which has updated its row.
 */
static bool watch_take(struct watch *w, json_t *note, struct watch_row **row) {
    const char *method = json_string_value(json_object_get(note, "method"));
    json_t *params = json_object_get(note, "params"), *o;
    json_t *missed = json_object_get(params, "missed");

    *row = NULL;
    if (method == NULL || json_object_get(note, "id") ||
        json_integer_value(json_object_get(params, "subscription")) != w->sub)
        return false;
    if (strcmp(method, "reading") == 0 && json_is_object(o = json_object_get(params, "reading"))) {
        if ((*row = watch_row(w, json_string_value(json_object_get(o, "laser")))) != NULL)
            watch_take_reading(*row, o);
    } else if (strcmp(method, "lock") == 0 && json_is_object(o = json_object_get(params, "lock"))) {
        if ((*row = watch_row(w, json_string_value(json_object_get(o, "laser")))) != NULL)
            watch_take_lock(*row, o);
    } else {
        return false;
    }
    if (json_is_integer(missed) && json_integer_value(missed) > 0) {
        w->missed += json_integer_value(missed);
        if (!w->tty)
            printf("missed %" JSON_INTEGER_FORMAT " push%s\n", w->missed,
                   w->missed == 1 ? "" : "es");
    }
    return true;
}

/* The answer (borrowed) to watch's `lasers` poll: every row takes its lock's state,
 * error and output. */
static void watch_take_lasers(struct watch *w, json_t *ans) {
    json_t *m;
    size_t i;

    json_array_foreach(json_object_get(ans, "result"), i, m) {
        struct watch_row *r = watch_row(w, json_string_value(json_object_get(m, "name")));
        if (r != NULL)
            watch_take_lock(r, m);
    }
}

/*
 * watch asked for laser names the daemon does not have: say which, and which it has,
 * from a `lasers` call. False if it found none unknown (the error was something else).
 */
static bool watch_unknown(struct session *s, json_t *asked) {
    json_t *ans, *all, *m, *a;
    char *line;
    size_t i, j;
    bool any = false;

    if (session_call(s, "lasers", NULL, &ans, &line) != CTL_OK)
        return false;
    all = json_object_get(ans, "result");
    json_array_foreach(asked, i, a) {
        bool found = false;
        json_array_foreach(all, j, m) {
            found = found || json_equal(json_object_get(m, "name"), a);
        }
        if (!found && json_is_string(a)) {
            fprintf(stderr, "wavemeterctl: watch: no laser \"");
            put_human(stderr, a, NULL, NULL);
            fprintf(stderr, "\"\n");
            any = true;
        }
    }
    if (any) {
        fprintf(stderr, "wavemeterctl: lasers here: ");
        json_array_foreach(all, i, m) {
            fputs(i ? ", " : "", stderr);
            put_human(stderr, json_object_get(m, "name"), NULL, NULL);
        }
        fputc('\n', stderr);
    }
    json_decref(ans);
    return any;
}

/* One call of watch's: *result a borrowed member of *ans (a new reference), or the error
 * said. CTL_OK, CTL_ANSWER or CTL_CONNECT. */
static int watch_call(struct session *s, const char *method, json_t *params, json_t **ans,
                      json_t **result) {
    char *line;
    int rc = session_call(s, method, params, ans, &line);

    if (rc != CTL_OK)
        return rc;
    if ((*result = json_object_get(*ans, "result")) != NULL)
        return CTL_OK;
    if (json_object_get(*ans, "error"))
        print_error(method, json_object_get(*ans, "error"));
    else
        fprintf(stderr, "wavemeterctl: %s: an answer without result or error: %s\n", method, line);
    return CTL_ANSWER;
}

/*
 * The table's rows: the subscription's lasers (sub_lasers, borrowed), their lock from
 * `lasers` and their reading from `read`, both asked after subscribing so that no change
 * falls between the two; the pushes that came before those answers are older than them.
 */
static int watch_rows(struct watch *w, struct session *s, json_t *sub_lasers) {
    json_t *ans_l = NULL, *ans_r = NULL, *lasers, *reads, *m, *name;
    size_t i, j;
    int rc;

    if ((rc = watch_call(s, "lasers", NULL, &ans_l, &lasers)) != CTL_OK ||
        (rc = watch_call(s, "read", NULL, &ans_r, &reads)) != CTL_OK)
        goto out;
    w->rows = calloc(json_array_size(sub_lasers) + 1, sizeof(*w->rows));
    if (w->rows == NULL) {
        rc = CTL_CONNECT;
        goto out;
    }
    json_array_foreach(sub_lasers, i, name) {
        struct watch_row *r = &w->rows[w->nrows++];
        r->cells = json_pack("{s:O}", "laser", name);
        r->got_ms = now_ms();
        json_array_foreach(lasers, j, m) {
            if (json_equal(json_object_get(m, "name"), name)) {
                json_object_set(r->cells, "channel", json_object_get(m, "channel"));
                watch_take_lock(r, m);
            }
        }
        json_array_foreach(reads, j, m) {
            if (json_equal(json_object_get(m, "laser"), name))
                watch_take_reading(r, m);
        }
    }
out:
    json_decref(ans_l);
    json_decref(ans_r);
    return rc;
}

/*
 * watch: subscribe to readings and locks (of params' lasers, all without), then a table
 * from `lasers` and `read` that each push updates: redrawn in place on a terminal, a
 * line per push otherwise, each push's line as received with --json or --raw. Until
 * SIGINT or SIGTERM (CTL_OK), --count pushes (CTL_OK) or the connection's end
 * (CTL_CONNECT).
 */
static int run_watch(struct ctl *ctl, const struct command *cmd, json_t *params) {
    struct watch w = {.tty = ctl->human && !ctl->json && !ctl->raw && isatty(STDOUT_FILENO)};
    struct sigaction sa = {.sa_handler = watch_on_signal, .sa_flags = SA_RESTART};
    bool lines_as_received = ctl->json || ctl->raw;
    json_t *sub, *ans = NULL, *result;
    int64_t next_draw = 0, last_line = now_ms(), last_draw = 0;
    int64_t next_poll = now_ms() + WATCH_LOCKS_MS;
    json_int_t poll_id = -1; /* the `lasers` poll in flight, if any */
    long pushes = 0;
    char *line;
    int rc;

    /* The params are subscribe's: positional lasers, or KEY=VALUE such as max_rate_hz=2. */
    if (json_is_array(params))
        sub = json_pack("{s:O}", "lasers", params);
    else
        sub = json_is_object(params) ? json_copy(params) : json_object();
    if (json_object_get(sub, "topics") == NULL)
        json_object_set_new(sub, "topics", json_pack("[s, s]", "readings", "locks"));
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = session_call(&ctl->s, cmd->method, sub, &ans, &line);
    if (rc == CTL_OK && (result = json_object_get(ans, "result")) == NULL) {
        json_t *error = json_object_get(ans, "error");
        json_int_t code = json_integer_value(json_object_get(error, "code"));
        if (!(code == -32602 && watch_unknown(&ctl->s, json_object_get(sub, "lasers")))) {
            if (error)
                print_error(cmd->method, error);
            else
                fprintf(stderr, "wavemeterctl: %s: an answer without result or error: %s\n",
                        cmd->method, line);
        }
        if (code == -32601)
            fprintf(stderr, "wavemeterctl: watch needs wavemeterd 1.1's subscribe\n");
        rc = CTL_ANSWER;
    }
    json_decref(sub);
    if (rc != CTL_OK)
        goto out;
    w.sub = json_integer_value(json_object_get(result, "subscription"));
    if (!lines_as_received &&
        (rc = watch_rows(&w, &ctl->s, json_object_get(result, "lasers"))) != CTL_OK)
        goto out;
    for (size_t c = 0; c < WATCH_NCOLS; c++)
        w.numeric[c] = c != 0 && c != 2 && c != 6; /* laser, status, state: text */
    if (w.tty) {
        /* The cursor hidden, so it does not flicker at the table's end. */
        fputs("\x1b[?25l\x1b[?7l", stdout);
        watch_draw(&w);
        last_draw = now_ms();
        next_draw = last_draw + WATCH_TICK_MS;
    } else if (!lines_as_received) {
        json_t *lines = watch_lines(&w), *head = watch_head();
        watch_widen(&w, lines, head);
        put_table_line(stdout, head, WATCH_NCOLS, w.int_w, w.frac_w, w.numeric, true);
        putchar('\n');
        json_decref(lines);
        json_decref(head);
        for (size_t i = 0; i < w.nrows; i++)
            watch_print_row(&w, &w.rows[i]);
    }
    while (!watch_stop && (ctl->count == 0 || pushes < ctl->count)) {
        int64_t now = now_ms();
        int wait = WATCH_TICK_MS; /* a bounded wait: a signal just before it costs no more */
        struct watch_row *row;
        json_t *note;

        if (w.tty)
            wait = next_draw > now ? (int)(next_draw - now) : 0;
        if ((rc = session_wait_line(&ctl->s, wait, &line)) != CTL_OK)
            break;
        now = now_ms();
        if (line == NULL && now - last_line >= WATCH_KEEPALIVE_MS) {
            json_int_t id;
            if ((rc = session_send(&ctl->s, "ping", NULL, &id)) != CTL_OK)
                break;
            last_line = now;
        }
        if (!lines_as_received && poll_id < 0 && now >= next_poll) {
            if ((rc = session_send(&ctl->s, "lasers", NULL, &poll_id)) != CTL_OK)
                break;
            next_poll = now + WATCH_LOCKS_MS;
        }
        if (line != NULL) {
            json_t *id;

            last_line = now;
            note = json_loads(line, 0, NULL);
            if (poll_id >= 0 && json_is_integer(id = json_object_get(note, "id")) &&
                json_integer_value(id) == poll_id) {
                watch_take_lasers(&w, note);
                poll_id = -1;
            } else if (watch_take(&w, note, &row)) {
                pushes++;
                if (lines_as_received) {
                    puts(line);
                    fflush(stdout);
                } else if (w.tty) {
                    if (next_draw > last_draw + WATCH_REDRAW_MS)
                        next_draw = last_draw + WATCH_REDRAW_MS;
                } else if (row) {
                    watch_print_row(&w, row);
                }
            }
            json_decref(note);
        }
        if (w.tty && now_ms() >= next_draw) {
            watch_draw(&w);
            last_draw = now_ms();
            next_draw = last_draw + WATCH_TICK_MS;
        }
    }
    if (w.tty) {
        if (rc == CTL_OK)
            watch_draw(&w);
        watch_restore();
    }
    if (rc != CTL_OK && ctl->s.closed)
        fprintf(stderr, "wavemeterctl: watch: the daemon closed the connection\n");
out:
    json_decref(ans);
    for (size_t i = 0; i < w.nrows; i++)
        json_decref(w.rows[i].cells);
    free(w.rows);
    return rc;
}

/* --count's N into *count: CTL_OK or CTL_USAGE (said why). */
static int parse_count(const char *text, long *count) {
    char *end;

    errno = 0;
    *count = strtol(text, &end, 10);
    if (errno || *end || end == text || *count <= 0) {
        fprintf(stderr, "wavemeterctl: --count \"%s\": expected a number of pushes, 1 or more\n",
                text);
        return CTL_USAGE;
    }
    return CTL_OK;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"human", no_argument, NULL, 'H'},
        {"raw", no_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        {"token-file", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *addr = getenv("WAVEMETERD_ADDR");
    const char *token_file = getenv("WAVEMETERD_TOKEN_FILE");
    struct ctl ctl = {.s = {.fd = -1, .timeout_ms = DEFAULT_TIMEOUT_MS, .next_id = 1}};
    const struct command *cmd;
    const char *method;
    char *token = NULL, *end, **args;
    json_t *params = NULL;
    int opt, rc, nargs = 0, human = -1; /* -1: for people when stdout is a terminal */

    if (addr == NULL || *addr == '\0')
        addr = "127.0.0.1:7420";
    if (token_file && *token_file == '\0')
        token_file = NULL; /* WAVEMETERD_TOKEN_FILE= means none */
    /* '+': options end at the command, so "output 399 -2.5" is a number, not an option. */
    while ((opt = getopt_long(argc, argv, "+c:jHrt:k:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            addr = optarg;
            break;
        case 'j':
            human = 0;
            ctl.json = true;
            break;
        case 'H':
            human = 1;
            break;
        case 'r':
            ctl.raw = true;
            break;
        case 't': {
            errno = 0;
            long ms = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || ms <= 0 || ms > 86400000) {
                fprintf(stderr,
                        "wavemeterctl: --timeout \"%s\": expected milliseconds, 1 to "
                        "86400000\n",
                        optarg);
                return CTL_USAGE;
            }
            ctl.s.timeout_ms = (int)ms;
            break;
        }
        case 'k':
            token_file = optarg;
            break;
        case 'n':
            if ((rc = parse_count(optarg, &ctl.count)) != CTL_OK)
                return rc;
            break;
        case 'h':
            usage(stdout);
            return CTL_OK;
        default:
            fprintf(stderr, "Try 'wavemeterctl --help'.\n");
            return CTL_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: wavemeterctl [OPTIONS] COMMAND [ARGS...]\n"
                        "Try 'wavemeterctl --help' for the commands.\n");
        return CTL_USAGE;
    }
    method = argv[optind];
    cmd = find_command(method);
    if (cmd)
        method = cmd->method;
    /* --json, --human, --raw and --count may follow the command too; "--" ends them. */
    args = calloc((size_t)argc, sizeof(*args));
    if (args == NULL)
        return CTL_USAGE;
    for (int i = optind + 1, more = 1; i < argc; i++) {
        const char *count = NULL;

        if (more && strcmp(argv[i], "--json") == 0) {
            human = 0;
            ctl.json = true;
        } else if (more && strcmp(argv[i], "--human") == 0) {
            human = 1;
        } else if (more && strcmp(argv[i], "--raw") == 0) {
            ctl.raw = true;
        } else if (more && strcmp(argv[i], "--") == 0) {
            more = 0;
        } else if (more && strncmp(argv[i], "--count=", 8) == 0) {
            count = argv[i] + 8;
        } else if (more && strcmp(argv[i], "--count") == 0) {
            count = i + 1 < argc ? argv[++i] : "";
        } else {
            args[nargs++] = argv[i];
        }
        if (count && (rc = parse_count(count, &ctl.count)) != CTL_OK) {
            free(args);
            return rc;
        }
    }
    if (ctl.count > 0 && (cmd == NULL || cmd->run == NULL)) {
        fprintf(stderr, "wavemeterctl: --count is for watch\n");
        free(args);
        return CTL_USAGE;
    }
    /* A pipe gets JSON, as it always did: scripts that read it keep working. */
    ctl.human = human < 0 ? isatty(STDOUT_FILENO) : human;
    rc = build_params(cmd, argv[optind], args, nargs, &params);
    free(args);
    if (rc != CTL_OK)
        return rc;
    /* A write logs in first; so does a method this client does not know, which may be
     * one. Reads never send the token. */
    if ((cmd == NULL || cmd->writes) && (rc = find_token(token_file, &token)) != CTL_OK)
        goto out;
    if ((rc = dial(addr, ctl.s.timeout_ms, &ctl.s.fd)) != CTL_OK)
        goto out;
    if (token && (rc = login(&ctl.s, token)) != CTL_OK)
        goto out;
    if ((rc = resolve_target(&ctl.s, cmd, params)) != CTL_OK)
        goto out;
    if (cmd && cmd->run)
        rc = cmd->run(&ctl, cmd, params);
    else
        rc = run_call(&ctl, cmd, method, params);
out:
    json_decref(params);
    free(token);
    free(ctl.s.buf);
    if (ctl.s.fd >= 0)
        close(ctl.s.fd);
    return rc;
}
