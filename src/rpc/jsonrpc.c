/*
 * jsonrpc: the JSON-RPC 2.0 envelope. Owns parsing one line, checking each
 * request, naming positional params, dispatching to the method table and
 * assembling the one answer line, in request order, once every call is
 * answered; and each connection's access state (the session), with the
 * decisions made on it. It never sees a socket and never knows what a
 * method does; the facts access rests on come from struct rpc_access.
 */
#include "jsonrpc.h"

#include <assert.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* How every answer is written: one line of compact JSON, members in the
 * order they were added (a method's result reads as it was built), UTF-8 as
 * is. Real numbers keep jansson's default of 17 significant digits, which
 * round-trips every double (1 kHz at 800 THz needs 10). */
#define RPC_DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)
/* Results and errors: 15 significant digits (DBL_DIG: any 15-digit decimal
 * reads back and prints the same) keep 1 Hz at 800 THz (the
 * wavemeter resolves ~1 MHz) and print 79.966 as 79.966, not the
 * 79.965999999999994 that %.17g makes of the same double. */
#define RPC_VALUE_FLAGS (RPC_DUMP_FLAGS | JSON_REAL_PRECISION(15))

/* Written when even an error answer cannot be built (out of memory). */
#define RPC_FALLBACK_ERROR "{\"code\":-32603,\"message\":\"Internal error\"}"
#define RPC_FALLBACK_ERROR_LINE "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":" RPC_FALLBACK_ERROR "}"

/* Wrong tokens in a row before a connection is ended (docs/PROTOCOL.md):
 * five is more than a user mistypes, and the address-wide limit in the
 * access policy bounds what reconnecting buys. */
#define SESSION_MAX_FAILED_LOGINS 5

struct rpc_session {
    const struct rpc_server *srv;
    struct peers *peers; /* borrowed, for the access policy's login hooks */
    struct sockaddr_storage addr;
    char name[64];
    rpc_end_cb end;
    void *owner;
    unsigned failed_logins; /* wrong tokens in a row */
    bool logged_in;         /* gave the write token (access.token_ok) */
    double write_tokens;    /* the write rate's bucket */
    uint64_t write_at_ns;   /* when it was last filled; 0 = never (full) */
    struct rpc_sink sink;   /* conn NULL: no notifications */
    void *push;             /* the notifications' state (push.c) */
};

/* One request of a line (a single request is a batch of one). */
struct rpc_call {
    struct rpc_line *line;
    json_t *id;                 /* new reference; NULL for a notification */
    char *id_raw;               /* a number id as the client wrote it (malloc'd), or NULL */
    char *idt;                  /* the id as answers write it (malloc'd), while running */
    json_t *method;             /* the method name string, new reference, while running */
    json_t *params;             /* new reference, while running */
    char *out;                  /* the answer, NULL when there is nothing to write */
    bool running;               /* handed to a handler and not answered yet */
    bool counted;               /* out is in line->out_bytes */
    const struct rpc_method *m; /* while running */
};

struct rpc_line {
    const struct rpc_server *srv;
    struct rpc_owner o;
    json_t *doc; /* the parsed batch, new reference, while calls remain to start */
    bool batch;
    bool abandoned;
    bool paused;      /* the owner's pace callback held back the rest */
    size_t next;      /* first call of the batch not started yet */
    size_t out_bytes; /* answer text made so far, for o.budget_bytes */
    /* Calls not answered yet, plus one held while calls remain to start, so
     * a handler answering at once cannot finish the line under the loop
     * that is still starting the others. */
    size_t pending;
    size_t ncalls;
    struct rpc_call calls[];
};

static char *vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *vformat(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static char *format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* A JSON string for a message that may not be valid UTF-8 (jansson cuts its
 * error text at a fixed length, possibly inside a character): non-ASCII
 * bytes become '?' rather than the message being lost. New reference. */
static json_t *message_value(const char *s) {
    json_t *v = json_string(s);
    if (v)
        return v;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

static const char *default_message(int code) {
    switch (code) {
    case RPC_PARSE_ERROR:
        return "Parse error";
    case RPC_INVALID_REQUEST:
        return "Invalid Request";
    case RPC_METHOD_NOT_FOUND:
        return "Method not found";
    case RPC_INVALID_PARAMS:
        return "Invalid params";
    case RPC_INTERNAL_ERROR:
        return "Internal error";
    default:
        return "Server error";
    }
}

/* {"code":..,"message":..,"data":..}: new reference, NULL when out of
 * memory. data: steals, may be NULL. message NULL: the standard text. */
static json_t *error_value(int code, const char *message, json_t *data) {
    json_t *err = json_object();
    /* json_object_set_new steals its value even when it fails. */
    if (err && json_object_set_new(err, "code", json_integer(code)) == 0 &&
        json_object_set_new(err, "message",
                            message_value(message ? message : default_message(code))) == 0) {
        if (!data || json_object_set_new(err, "data", data) == 0)
            return err;
        json_decref(err);
        return NULL;
    }
    json_decref(err);
    json_decref(data);
    return NULL;
}

/* An id as answers write it: a number exactly as the client wrote it
 * (raw, when the scanner found it: 1e-400 stays 1e-400 and -0 stays -0, where
 * a parsed double would come back as 0.0 and 0), anything else as jansson
 * writes it. id is not NULL. New malloc'd text, NULL when out of memory. */
static char *id_text(const json_t *id, const char *raw) {
    if (raw && json_is_number(id))
        return strdup(raw);
    return json_dumps(id, RPC_DUMP_FLAGS);
}

/* One response object as text: {"jsonrpc":"2.0","id":..,"result"|"error":..}.
 * Written by hand around dumped parts so the id keeps the client's own
 * spelling. idt: the id's text, NULL for null. value: steals; NULL means it
 * could not be built. Returns malloc'd text, or NULL when out of memory. */
static char *response_raw(const char *idt, const char *member, char *vt) {
    if (!vt) {
        /* Nothing a method builds fails to dump except by exhaustion;
         * still answer, so the client is not left waiting. */
        member = "error";
        vt = strdup(RPC_FALLBACK_ERROR);
    }
    if (!vt)
        return NULL;
    /* Copied, not printf'd: a history answer is hundreds of kilobytes. */
    char *head = format("{\"jsonrpc\":\"2.0\",\"id\":%s,\"%s\":", idt ? idt : "null", member);
    size_t nh = head ? strlen(head) : 0, nv = strlen(vt);
    char *out = head ? malloc(nh + nv + 2) : NULL;
    if (out) {
        memcpy(out, head, nh);
        memcpy(out + nh, vt, nv);
        memcpy(out + nh + nv, "}", 2);
    }
    free(head);
    free(vt);
    return out;
}

static char *response_text(const char *idt, const char *member, json_t *value) {
    char *vt = value ? json_dumps(value, RPC_VALUE_FLAGS) : NULL;
    /* 15 digits round a double near DBL_MAX up past it (1.79769313486232e308
     * reads back as an overflow): such an answer is written with the 17
     * digits that always read back. Only "e308" can be one. */
    if (vt && strstr(vt, "e308")) {
        free(vt);
        vt = json_dumps(value, RPC_DUMP_FLAGS);
    }
    json_decref(value);
    return response_raw(idt, member, vt);
}

static char *error_text(const char *idt, int code, const char *message, json_t *data) {
    return response_text(idt, "error", error_value(code, message, data));
}

char *rpc_error_text(int code, const char *message) {
    return error_text(NULL, code, message, NULL);
}

/* Where each request's "id" number is written in the line, so answers can
 * give it back as written. One pass over text that jansson has already
 * accepted: for a batch (batch true) the members of the objects that are
 * elements of the top-level array, else those of the top-level object. An
 * "id" key written with escapes is not recognised; its id is then written
 * the way jansson writes it. */
static void find_raw_ids(const char *t, size_t len, bool batch, struct rpc_call *calls,
                         size_t ncalls) {
    size_t depth = 0, elem = 0, target = batch ? 2 : 1;
    bool obj = false, want_key = false;

    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && t[j] != '"')
                j += t[j] == '\\' ? 2 : 1;
            if (j >= len)
                return;
            if (depth == target && obj && want_key) {
                want_key = false;
                if (j - i - 1 == 2 && t[i + 1] == 'i' && t[i + 2] == 'd') {
                    size_t k = j + 1;
                    while (k < len && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' ||
                                       t[k] == '\r' || t[k] == ':'))
                        k++;
                    size_t e = k;
                    while (e < len && strchr("0123456789+-.eE", t[e]) && t[e] != '\0')
                        e++;
                    size_t idx = batch ? elem : 0;
                    if (e > k && idx < ncalls && calls[idx].id_raw == NULL)
                        calls[idx].id_raw = strndup(t + k, e - k);
                }
            }
            i = j;
        } else if (c == '{' || c == '[') {
            if (++depth == target) {
                obj = c == '{';
                want_key = obj;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',') {
            if (depth == target && obj)
                want_key = true;
            else if (depth == 1 && batch)
                elem++;
        }
    }
}

/* Answer for a line that jansson would not load. Some of its failures are
 * valid JSON that we cannot represent (an integer beyond 64 bits, a \u0000
 * in a string, nesting past jansson's depth limit) or will not guess at (a
 * duplicated member: which "id" or "method" did the client mean?): those are
 * -32600, not -32700, because the text itself is well-formed. */
static char *load_error_text(const json_error_t *err) {
    int code = RPC_PARSE_ERROR;
    char *msg;
    /* Our own words, not the parser's: they name the byte (so a client can
     * find its mistake) and never echo the client's bytes back. */
    switch (json_error_code(err)) {
    case json_error_numeric_overflow:
        code = RPC_INVALID_REQUEST;
        msg = format("Invalid Request: a number too large to carry exactly, near column %d",
                     err->column);
        break;
    case json_error_null_character:
    case json_error_null_byte_in_key:
        code = RPC_INVALID_REQUEST;
        msg = format("Invalid Request: \\u0000 in a string, near column %d", err->column);
        break;
    case json_error_stack_overflow:
        code = RPC_INVALID_REQUEST;
        msg = format("Invalid Request: nested deeper than %d levels", JSON_PARSER_MAX_DEPTH);
        break;
    case json_error_duplicate_key:
        code = RPC_INVALID_REQUEST;
        msg = format("Invalid Request: a member appears twice in one object, near column %d",
                     err->column);
        break;
    case json_error_out_of_memory:
        code = RPC_INTERNAL_ERROR;
        msg = strdup("Internal error: out of memory");
        break;
    case json_error_invalid_utf8:
        msg = format("Parse error: invalid UTF-8 near column %d", err->column);
        break;
    case json_error_premature_end_of_input:
        msg = strdup("Parse error: the JSON text ends before it is complete");
        break;
    case json_error_end_of_input_expected:
        msg = format("Parse error: more text after the JSON value, near column %d (one request "
                     "or one batch per line)",
                     err->column);
        break;
    default:
        msg = format("Parse error: invalid JSON near column %d", err->column);
        break;
    }
    char *out = error_text(NULL, code, msg ? msg : "Parse error", NULL);
    free(msg);
    return out;
}

/* The -32005 error for an answer of need bytes (0: not known yet, the
 * batch has filled its budget) that does not fit in what the line may still
 * produce; estimate says need is a bound, not a size. New reference. */
static json_t *busy_error(const struct rpc_line *line, size_t need, bool estimate) {
    size_t left =
        line->o.budget_bytes > line->out_bytes ? line->o.budget_bytes - line->out_bytes : 0;
    char *msg =
        need ? format("Server busy: the answer would be %s%zu bytes, more than the %zu "
                      "bytes this connection may still have outstanding "
                      "(limits.write_queue_max_bytes, answer_memory_max_bytes); ask for less",
                      estimate ? "about " : "", need, left)
             : format("Server busy: the answers to this batch already fill the %zu "
                      "bytes this connection may have outstanding "
                      "(limits.write_queue_max_bytes, answer_memory_max_bytes); send fewer calls "
                      "per batch",
                      line->o.budget_bytes);
    json_t *data =
        json_pack("{s:I, s:I}", "need_bytes", (json_int_t)need, "budget_bytes", (json_int_t)left);
    json_t *err = error_value(RPC_BUSY, msg ? msg : "Server busy", data);
    free(msg);
    return err;
}

static char *too_big_text(const char *idt, const struct rpc_line *line, size_t need) {
    return response_text(idt, "error", busy_error(line, need, false));
}

/* Whether req is a valid request object; if not, *why is the -32600 message
 * (malloc'd; NULL when out of memory). Only the four members the
 * specification defines are accepted: a request with anything else
 * ("jsonrpc" misspelt, "param" for "params", a 1.0-style "version") is more
 * likely a client bug than an extension, and silently ignoring the member
 * would run a call the client did not mean. */
static bool is_request(json_t *req, char **why) {
    const char *reason = NULL;
    json_t *v;
    if (!json_is_object(req)) {
        reason = "not an object";
    } else if (!json_is_string(v = json_object_get(req, "jsonrpc")) ||
               strcmp(json_string_value(v), "2.0") != 0) {
        reason = "\"jsonrpc\" must be \"2.0\"";
    } else if (!json_is_string(json_object_get(req, "method"))) {
        reason = "\"method\" must be a string";
    } else if ((v = json_object_get(req, "params")) && !json_is_object(v) && !json_is_array(v)) {
        reason = "\"params\" must be an array or an object";
    } else if ((v = json_object_get(req, "id")) && !json_is_string(v) && !json_is_number(v) &&
               !json_is_null(v)) {
        reason = "\"id\" must be a string, a number or null";
    } else {
        const char *key;
        json_object_foreach(req, key, v) {
            if (strcmp(key, "jsonrpc") != 0 && strcmp(key, "method") != 0 &&
                strcmp(key, "params") != 0 && strcmp(key, "id") != 0) {
                *why = format("Invalid Request: unknown member \"%s\"", key);
                return false;
            }
        }
        return true;
    }
    *why = format("Invalid Request: %s", reason);
    return false;
}

static const struct rpc_method *find_method(const struct rpc_server *srv, const char *name) {
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, name) == 0)
            return &srv->methods[i];
    return srv->find ? srv->find(srv->ctx, name) : NULL;
}

/* The params object a handler sees: new reference, or NULL with *why set
 * (malloc'd -32602 message, or NULL when out of memory). */
static json_t *named_params(const struct rpc_method *m, json_t *params, char **why) {
    *why = NULL;
    if (!params)
        return json_object();
    if (json_is_object(params))
        return json_incref(params);

    size_t n = json_array_size(params), nnames = 0;
    while (m->params && m->params[nnames])
        nnames++;
    if (n > 0 && !m->params) {
        *why = strdup("Invalid params: positional params not accepted, use an object");
        return NULL;
    }
    if (n > nnames) {
        *why = format("Invalid params: too many params (max %zu)", nnames);
        return NULL;
    }
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++) {
        if (json_object_set(obj, m->params[i], json_array_get(params, i)) < 0) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

/* Frees the line once nothing is pending; calls done first unless the owner
 * has gone. Returns the line, or NULL when it was freed. */
static struct rpc_line *line_release(struct rpc_line *line) {
    assert(line->pending > 0);
    if (--line->pending > 0)
        return line;

    if (!line->abandoned) {
        char *out = NULL;
        if (!line->batch) {
            out = line->calls[0].out;
            line->calls[0].out = NULL;
        } else {
            size_t size = 2, count = 0;
            for (size_t i = 0; i < line->ncalls; i++) {
                if (line->calls[i].out) {
                    size += strlen(line->calls[i].out) + 1;
                    count++;
                }
            }
            /* A batch of notifications gets nothing at all, not []. */
            if (count > 0 && (out = malloc(size)) != NULL) {
                char *p = out;
                *p++ = '[';
                for (size_t i = 0; i < line->ncalls; i++) {
                    const char *s = line->calls[i].out;
                    if (!s)
                        continue;
                    if (p > out + 1)
                        *p++ = ',';
                    size_t len = strlen(s);
                    memcpy(p, s, len);
                    p += len;
                }
                *p++ = ']';
                *p = '\0';
            }
        }
        line->o.done(line->o.owner, line, out);
    }
    for (size_t i = 0; i < line->ncalls; i++) {
        free(line->calls[i].out);
        free(line->calls[i].id_raw);
    }
    json_decref(line->doc);
    free(line);
    return NULL;
}

/* Check one request and start its call. Answers that need no handler are
 * written into call->out at once. */
static void dispatch(struct rpc_line *line, struct rpc_call *call, json_t *req) {
    char *why = NULL;
    if (!is_request(req, &why)) {
        /* Not a request, so not a notification either: always answered,
         * with id null as the specification asks when the request is
         * invalid. */
        call->out = error_text(NULL, RPC_INVALID_REQUEST, why, NULL);
        free(why);
        return;
    }

    json_t *id = json_object_get(req, "id");
    json_t *name = json_object_get(req, "method");
    /* A notification is never answered; a request's id text is made once. */
    char *idt = id ? id_text(id, call->id_raw) : NULL;
    if (id && !idt) {
        call->out = strdup(RPC_FALLBACK_ERROR_LINE);
        return;
    }
    if (line->o.budget_bytes && line->out_bytes >= line->o.budget_bytes) {
        /* The batch's answers already fill what the client may have
         * outstanding: the rest are refused, not run. */
        if (id)
            call->out = too_big_text(idt, line, 0);
        free(idt);
        return;
    }
    const struct rpc_method *m = find_method(line->srv, json_string_value(name));
    if (!m || !m->fn) {
        if (id) {
            char *msg = format("Method not found: %s", json_string_value(name));
            call->out = error_text(idt, RPC_METHOD_NOT_FOUND, msg, NULL);
            free(msg);
        }
        free(idt);
        return;
    }
    json_t *params = named_params(m, json_object_get(req, "params"), &why);
    if (!params) {
        if (id)
            call->out =
                why ? error_text(idt, RPC_INVALID_PARAMS, why, NULL)
                    : error_text(idt, RPC_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        free(why);
        free(idt);
        return;
    }

    call->id = json_incref(id);
    call->idt = idt;
    call->method = json_incref(name);
    call->params = params;
    call->m = m;
    call->running = true;
    line->pending++;
    m->fn(call, params, line->srv->ctx);
}

/* Start the calls of line from line->next on, until all are started or the
 * owner's pace callback says to wait; then give up the dispatch hold. */
static struct rpc_line *line_dispatch(struct rpc_line *line) {
    line->paused = false;
    /* A handler may make the owner go away (and abandon this line): the
     * calls not started by then are not started at all. */
    while (line->next < line->ncalls && !line->abandoned) {
        if (line->next > 0 && line->o.pace && !line->o.pace(line->o.owner)) {
            line->paused = true;
            return line;
        }
        size_t i = line->next++;
        struct rpc_call *call = &line->calls[i];
        dispatch(line, call, json_array_get(line->doc, i));
        if (call->out && !call->counted) { /* answered by the envelope itself */
            line->out_bytes += strlen(call->out);
            call->counted = true;
        }
    }
    json_decref(line->doc);
    line->doc = NULL;
    return line_release(line);
}

struct rpc_line *rpc_line_run(const struct rpc_server *srv, const char *buf, size_t len,
                              const struct rpc_owner *o) {
    json_error_t err;
    json_t *doc = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    size_t n = json_is_array(doc) ? json_array_size(doc) : 0;
    bool batch = n > 0 && (srv->max_batch == 0 || n <= srv->max_batch);

    struct rpc_line *line = calloc(1, sizeof *line + (batch ? n : 1) * sizeof line->calls[0]);
    if (!line) {
        json_decref(doc);
        o->done(o->owner, NULL, NULL);
        return NULL;
    }
    line->srv = srv;
    line->o = *o;
    line->batch = batch;
    line->ncalls = batch ? n : 1;
    line->pending = 1;
    for (size_t i = 0; i < line->ncalls; i++)
        line->calls[i].line = line;
    if (doc && (batch || json_is_object(doc)))
        find_raw_ids(buf, len, batch, line->calls, line->ncalls);

    if (!doc) {
        line->calls[0].out = load_error_text(&err);
    } else if (batch) {
        line->doc = doc;
        return line_dispatch(line);
    } else if (json_is_array(doc) && n == 0) {
        line->calls[0].out =
            error_text(NULL, RPC_INVALID_REQUEST, "Invalid Request: empty batch", NULL);
    } else if (json_is_array(doc)) {
        char *msg = format("Invalid Request: batch too large (%zu > %zu)", n, srv->max_batch);
        line->calls[0].out = error_text(NULL, RPC_INVALID_REQUEST, msg, NULL);
        free(msg);
    } else {
        dispatch(line, &line->calls[0], doc);
    }
    json_decref(doc);
    return line_release(line);
}

struct rpc_line *rpc_line_process(const struct rpc_server *srv, const char *buf, size_t len,
                                  rpc_done_cb done, void *owner, void *peer) {
    const struct rpc_owner o = {.done = done, .owner = owner, .peer = peer};

    return rpc_line_run(srv, buf, len, &o);
}

struct rpc_line *rpc_line_resume(struct rpc_line *line) {
    assert(line->paused && !line->abandoned);
    return line_dispatch(line);
}

bool rpc_line_paused(const struct rpc_line *line) {
    return line->paused;
}

void rpc_line_abandon(struct rpc_line *line) {
    if (!line)
        return;
    assert(!line->abandoned);
    line->abandoned = true;
    line->o.peer = NULL;
    line->o.session = NULL; /* may be freed before the calls still running end */
    /* Answers already written will never be sent. */
    for (size_t i = 0; i < line->ncalls; i++) {
        free(line->calls[i].out);
        line->calls[i].out = NULL;
    }
    /* Nobody will resume a paused line: its calls not started never start,
     * and its dispatch hold goes (freeing it unless calls still run). */
    if (line->paused) {
        line->paused = false;
        line_release(line);
    }
}

/* One audit line for a write method's answer (value: the error object for
 * an error, borrowed). */
static void call_audit(struct rpc_call *call, const char *member, json_t *value, const char *raw) {
    const struct rpc_line *line = call->line;
    char outcome[256];

    (void)raw;
    if (strcmp(member, "result") == 0) {
        snprintf(outcome, sizeof(outcome), "ok");
    } else {
        json_t *msg = json_object_get(value, "message");
        snprintf(outcome, sizeof(outcome), "error %lld: %s",
                 (long long)json_integer_value(json_object_get(value, "code")),
                 json_is_string(msg) ? json_string_value(msg) : "?");
    }
    line->srv->access.audit(line->srv->ctx, line->o.session ? line->o.session->name : "?",
                            json_string_value(call->method), call->params, outcome);
}

/* value: steals. */
/* value, or raw when value is NULL: steals. */
static void call_answer(struct rpc_call *call, const char *member, json_t *value, char *raw) {
    /* Invariant: a handler answers exactly once. (A second answer after the
     * line was freed cannot be caught here; ASan reports it.) */
    assert(call->running);
    struct rpc_line *line = call->line;
    call->running = false;
    if (call->m && call->m->write && line->srv->access.audit)
        call_audit(call, member, value, raw);
    if (call->id && !line->abandoned) {
        call->out =
            value ? response_text(call->idt, member, value) : response_raw(call->idt, member, raw);
        size_t n = call->out ? strlen(call->out) : 0;
        if (line->o.budget_bytes && line->out_bytes + n > line->o.budget_bytes &&
            strcmp(member, "result") == 0) {
            /* Built, but over what the client may have outstanding: only
             * a method that cannot tell its size in advance gets here, and
             * its answer is dropped at once. (Error answers are small and
             * always go out, so the client learns why.) */
            free(call->out);
            call->out = too_big_text(call->idt, line, n);
            n = call->out ? strlen(call->out) : 0;
        }
        line->out_bytes += n;
        call->counted = true;
    } else {
        json_decref(value);
        free(raw);
    }
    json_decref(call->id);
    free(call->idt);
    call->idt = NULL;
    json_decref(call->method);
    json_decref(call->params);
    call->id = call->method = call->params = NULL;
    line_release(line);
}

void rpc_call_result(struct rpc_call *call, json_t *result) {
    /* A handler passing json_pack(...) straight through gets NULL when
     * packing failed: that is our failure, not the client's. */
    if (!result)
        call_answer(call, "error",
                    error_value(RPC_INTERNAL_ERROR, "Internal error: no result", NULL), NULL);
    else
        call_answer(call, "result", result, NULL);
}

void rpc_call_result_text(struct rpc_call *call, char *text) {
    if (!text)
        call_answer(call, "error",
                    error_value(RPC_INTERNAL_ERROR, "Internal error: out of memory", NULL), NULL);
    else
        call_answer(call, "result", NULL, text);
}

void rpc_call_error(struct rpc_call *call, int code, const char *message, json_t *data) {
    call_answer(call, "error", error_value(code, message, data), NULL);
}

void rpc_call_errorf(struct rpc_call *call, int code, json_t *data, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    rpc_call_error(call, code, msg, data);
    free(msg);
}

void *rpc_call_peer(const struct rpc_call *call) {
    return call->line->abandoned ? NULL : call->line->o.peer;
}

size_t rpc_call_budget(const struct rpc_call *call) {
    const struct rpc_line *line = call->line;

    if (!line->o.budget_bytes)
        return SIZE_MAX;
    return line->o.budget_bytes > line->out_bytes ? line->o.budget_bytes - line->out_bytes : 0;
}

void rpc_call_too_big(struct rpc_call *call, size_t need) {
    call_answer(call, "error", busy_error(call->line, need, true), NULL);
}

const char *rpc_call_method(const struct rpc_call *call) {
    return json_string_value(call->method);
}

/* ---- sessions: a connection's access state ---- */

struct rpc_session *rpc_session_create(const struct rpc_server *srv, const struct sockaddr *addr,
                                       const char *name, struct peers *peers, rpc_end_cb end,
                                       void *owner) {
    struct rpc_session *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->srv = srv;
    s->peers = peers;
    /* Only as much as the family has: addr may be a bare sockaddr_in. */
    if (addr && addr->sa_family == AF_INET)
        memcpy(&s->addr, addr, sizeof(struct sockaddr_in));
    else if (addr && addr->sa_family == AF_INET6)
        memcpy(&s->addr, addr, sizeof(struct sockaddr_in6));
    else
        s->addr.ss_family = AF_UNSPEC;
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "?");
    s->end = end;
    s->owner = owner;
    return s;
}

void rpc_session_destroy(struct rpc_session *s) {
    if (s != NULL && s->srv->session_closed != NULL)
        s->srv->session_closed(s->srv->ctx, s);
    free(s);
}

void rpc_session_set_sink(struct rpc_session *s, const struct rpc_sink *sink) {
    s->sink = *sink;
}

const struct rpc_sink *rpc_session_sink(const struct rpc_session *s) {
    return s->sink.conn != NULL ? &s->sink : NULL;
}

void **rpc_session_push_slot(struct rpc_session *s) {
    return &s->push;
}

void rpc_session_drained(struct rpc_session *s) {
    if (s != NULL && s->push != NULL && s->srv->session_drained != NULL)
        s->srv->session_drained(s->srv->ctx, s);
}

const char *rpc_session_name(const struct rpc_session *s) {
    return s->name;
}

struct rpc_session *rpc_call_session(const struct rpc_call *call) {
    return call->line->abandoned ? NULL : call->line->o.session;
}

/* Whether s's peer address may write now: asked at every write, never
 * remembered, so a reload that takes a network out of access.write_from
 * applies to connections already open from it. */
static bool session_write_from(const struct rpc_session *s) {
    const struct rpc_access *a = &s->srv->access;

    return s->addr.ss_family != AF_UNSPEC && a->write_from != NULL &&
           a->write_from(s->srv->ctx, (const struct sockaddr *)&s->addr);
}

/*
 * The connection's write rate, a token bucket: access.write_rate_per_s on
 * average, up to access.write_burst at once. A write beyond it gets -32004
 * with the wait in data.retry_after_s, and is not done. Reads are never
 * limited here.
 */
static bool session_write_rate(struct rpc_call *call, struct rpc_session *s) {
    const struct rpc_access *a = &s->srv->access;
    uint64_t now;
    double wait_s;

    if (a->now_ns == NULL || !(a->write_rate_per_s > 0) || !(a->write_burst >= 1))
        return true;
    now = a->now_ns(s->srv->ctx);
    if (s->write_at_ns == 0) {
        s->write_tokens = a->write_burst;
    } else {
        s->write_tokens += (double)(now - s->write_at_ns) * 1e-9 * a->write_rate_per_s;
        if (s->write_tokens > a->write_burst)
            s->write_tokens = a->write_burst;
    }
    s->write_at_ns = now;
    if (s->write_tokens >= 1.0) {
        s->write_tokens -= 1.0;
        return true;
    }
    wait_s = (1.0 - s->write_tokens) / a->write_rate_per_s;
    rpc_call_errorf(call, RPC_RATE_LIMITED, json_pack("{s:f}", "retry_after_s", wait_s),
                    "Too many writes: at most %g a second from one connection (%g at once); "
                    "try again in %.2f s",
                    a->write_rate_per_s, a->write_burst, wait_s);
    return false;
}

bool rpc_call_may_write(struct rpc_call *call) {
    struct rpc_session *s = rpc_call_session(call);

    if (s == NULL || !session_write_from(s)) {
        rpc_call_errorf(call, RPC_UNAUTHORIZED, NULL,
                        "Unauthorized: %s may read but not change anything (see "
                        "access.write_from)",
                        s ? s->name : "this client");
        return false;
    }
    if (s->srv->access.token_ok && !s->logged_in) {
        rpc_call_errorf(call, RPC_UNAUTHORIZED, NULL,
                        "Unauthorized: call auth with the token from %s first",
                        s->srv->access.token_path ? s->srv->access.token_path : "the daemon");
        return false;
    }
    return session_write_rate(call, s);
}

void rpc_call_access(const struct rpc_call *call, bool *write_from, bool *token_required,
                     bool *logged_in) {
    const struct rpc_session *s = rpc_call_session(call);

    *write_from = s != NULL && session_write_from(s);
    *token_required = s != NULL && s->srv->access.token_ok != NULL;
    *logged_in = s != NULL && s->logged_in;
}

void rpc_call_login(struct rpc_call *call, const char *token, size_t len) {
    struct rpc_session *s = rpc_call_session(call);
    const struct rpc_server *srv = call->line->srv;
    const struct rpc_access *a = &srv->access;
    double wait_s = 0;

    if (a->token_ok == NULL) {
        rpc_call_result(call, json_true()); /* nothing to unlock */
        return;
    }
    if (s && a->login_blocked &&
        a->login_blocked(srv->ctx, s->peers, (const struct sockaddr *)&s->addr, &wait_s)) {
        /* Whole seconds, rounded up (by hand: the envelope links no libm). */
        double whole_s = (double)(uint64_t)wait_s;
        rpc_call_errorf(call, RPC_RATE_LIMITED, NULL,
                        "Rate limited: too many wrong tokens from this address; try again in "
                        "%.0f s",
                        whole_s < wait_s ? whole_s + 1 : whole_s);
        return;
    }
    if (a->token_ok(srv->ctx, token, len)) {
        if (s) {
            s->logged_in = true;
            s->failed_logins = 0;
        }
        rpc_call_result(call, json_true());
        return;
    }
    if (s == NULL) {
        rpc_call_error(call, RPC_UNAUTHORIZED, "Unauthorized: wrong token", NULL);
        return;
    }
    /* A wrong token is never ignored: whoever typed it is not sure of the
     * token, so the connection is read-only again until a right one. */
    bool was = s->logged_in;
    s->logged_in = false;
    if (a->login_failed)
        a->login_failed(srv->ctx, s->peers, (const struct sockaddr *)&s->addr);
    /* This is guessing, not a typo: the connection ends once the answer to
     * this call is written. */
    if (++s->failed_logins >= SESSION_MAX_FAILED_LOGINS && s->end) {
        char why[48];

        snprintf(why, sizeof(why), "%u wrong tokens", s->failed_logins);
        s->end(s->owner, why);
    }
    if (was)
        rpc_call_error(call, RPC_UNAUTHORIZED,
                       "Unauthorized: wrong token; this connection's earlier login is withdrawn",
                       NULL);
    else
        rpc_call_error(call, RPC_UNAUTHORIZED, "Unauthorized: wrong token", NULL);
}
