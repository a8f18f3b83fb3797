/*
 * fuzz_rpc: the JSON-RPC envelope (src/rpc/jsonrpc.c) against a reference
 * model of the answer each line must get. A fake method table answers at
 * once, fails, echoes its params or answers later, in an order the input
 * chooses; some lines are abandoned while their calls are still pending.
 */
#include "fuzz.h"
#include "jsonrpc.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

/*
 * Input layout: four header bytes, then lines separated by '\n', each one
 * given to rpc_line_process as it is (a CR, a NUL, anything).
 */
enum {
    HDR_FLAGS,   /* bits 0-2: max_batch (0: no limit); bit 3: rpc_error_text with no message */
    HDR_ABANDON, /* bit k: line k (mod 8) is abandoned at some point while pending */
    HDR_SEED_LO, /* seed for the order of later answers; also the rpc_error_text code */
    HDR_SEED_HI,
    HDR_LEN
};

/* More lines than this in one input add nothing but time. */
#define MAX_LINES 32

/* What one request of a line must be answered. */
struct slot {
    bool respond; /* an answer is written (not a notification) */
    json_t *id;   /* borrowed from the line's doc; NULL: the answer's id is null */
    const struct rpc_method *method; /* the handler that must run, NULL: none */
    json_t *params;                  /* the params it must see: new reference */
    bool known;                      /* the answer below is set */
    bool is_error;
    json_t *result; /* new reference */
    int code;
    char *message;       /* malloc'd; NULL: any text */
    bool message_prefix; /* message is only how the text starts */
    json_t *data;        /* new reference; NULL: no "data" member */
};

/* One input line, from rpc_line_process to its done (or abandon). */
struct line_rec {
    char peer; /* its address is the peer given for this line */
    json_t *doc;
    bool batch;
    struct slot *slots;
    size_t nslots;
    size_t *handlers; /* the slots whose handler runs, in request order */
    size_t nhandlers, next_handler;
    struct rpc_line *line; /* pending: rpc_line_process returned it, done not called yet */
    bool returned, abandoned, to_abandon;
    int n_done;
};

/* A call the "later" method keeps to answer after rpc_line_process. */
struct deferred {
    struct rpc_call *call;
    struct line_rec *rec;
    struct slot *slot;
    json_t *params; /* borrowed: valid until the call is answered */
};

struct fuzz {
    struct rpc_server srv;
    uint32_t rng;
    struct line_rec lines[MAX_LINES];
    size_t nlines;
    struct line_rec *cur; /* the line inside rpc_line_process */
    struct deferred *deferred;
    size_t ndeferred, deferred_cap;
    int seq;
};

static void m_ok(struct rpc_call *call, json_t *params, void *ctx);
static void m_fail(struct rpc_call *call, json_t *params, void *ctx);
static void m_echo(struct rpc_call *call, json_t *params, void *ctx);
static void m_null(struct rpc_call *call, json_t *params, void *ctx);
static void m_later(struct rpc_call *call, json_t *params, void *ctx);
static void m_flush(struct rpc_call *call, json_t *params, void *ctx);
static void m_drop(struct rpc_call *call, json_t *params, void *ctx);
static void m_shadowed(struct rpc_call *call, json_t *params, void *ctx);

static const char *const fail_params[] = {"code", "message", "data", NULL};
static const char *const echo_params[] = {"a", "b", "c", NULL};
static const char *const later_params[] = {"tag", NULL};

static const struct rpc_method methods[] = {
    {"ok", m_ok, NULL},
    {"fail", m_fail, fail_params},
    {"echo", m_echo, echo_params},
    {"null", m_null, NULL},
    {"later", m_later, later_params},
    {"flush", m_flush, NULL},
    {"drop", m_drop, NULL},
    {"nofn", NULL, NULL},
};

/* The second lookup. "ok" is also in the table, which must win. */
static const struct rpc_method extra_methods[] = {
    {"x.later", m_later, NULL},
    {"x.echo", m_echo, NULL},
    {"x.nofn", NULL, NULL},
    {"ok", m_shadowed, NULL},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const struct rpc_method *lookup_extra(const char *name) {
    for (size_t i = 0; i < COUNT(extra_methods); i++)
        if (strcmp(extra_methods[i].name, name) == 0)
            return &extra_methods[i];
    return NULL;
}

static const struct rpc_method *find_extra(void *ctx, const char *name) {
    FUZZ_CHECK(ctx != NULL);
    return lookup_extra(name);
}

/* ---- The reference model ---- */

/* The method a name runs: the table first, then the second lookup; NULL
 * when there is none or it has no handler. */
static const struct rpc_method *ref_lookup(const char *name) {
    const struct rpc_method *m = NULL;
    for (size_t i = 0; i < COUNT(methods) && !m; i++)
        if (strcmp(methods[i].name, name) == 0)
            m = &methods[i];
    if (!m)
        m = lookup_extra(name);
    return m && m->fn ? m : NULL;
}

static bool ref_is_request(json_t *req) {
    json_t *v;
    const char *key;
    if (!json_is_object(req))
        return false;
    v = json_object_get(req, "jsonrpc");
    if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0)
        return false;
    if (!json_is_string(json_object_get(req, "method")))
        return false;
    v = json_object_get(req, "params");
    if (v && !json_is_object(v) && !json_is_array(v))
        return false;
    v = json_object_get(req, "id");
    if (v && !json_is_string(v) && !json_is_number(v) && !json_is_null(v))
        return false;
    json_object_foreach(req, key, v) {
        if (strcmp(key, "jsonrpc") != 0 && strcmp(key, "method") != 0 &&
            strcmp(key, "params") != 0 && strcmp(key, "id") != 0)
            return false;
    }
    return true;
}

/* The params object the handler must see (new reference), or NULL when
 * they must be refused with -32602. */
static json_t *ref_named_params(const struct rpc_method *m, json_t *params) {
    if (!params)
        return json_object();
    if (json_is_object(params))
        return json_incref(params);
    size_t n = json_array_size(params), nnames = 0;
    while (m->params && m->params[nnames])
        nnames++;
    if (n > nnames)
        return NULL;
    json_t *obj = json_object();
    FUZZ_CHECK(obj != NULL);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(json_object_set(obj, m->params[i], json_array_get(params, i)) == 0);
    return obj;
}

static char *dup_text(const char *s) {
    char *d = malloc(strlen(s) + 1);
    FUZZ_CHECK(d != NULL);
    return strcpy(d, s);
}

/* result: steals. */
static void expect_result(struct slot *s, json_t *result) {
    FUZZ_CHECK(!s->known);
    s->known = true;
    s->result = result;
}

/* message: copied; NULL for any text. data: steals. */
static void expect_error(struct slot *s, int code, const char *message, bool prefix, json_t *data) {
    FUZZ_CHECK(!s->known);
    s->known = true;
    s->is_error = true;
    s->code = code;
    s->message = message ? dup_text(message) : NULL;
    s->message_prefix = prefix;
    s->data = data;
}

/* The text a NULL message stands for; NULL where we do not insist. */
static const char *ref_default_message(int code) {
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
        return NULL;
    }
}

static void expect_request(struct line_rec *r, size_t i, json_t *req) {
    struct slot *s = &r->slots[i];
    if (!ref_is_request(req)) {
        /* Not a request, so not a notification: answered, with id null. */
        s->respond = true;
        expect_error(s, RPC_INVALID_REQUEST, "Invalid Request", true, NULL);
        return;
    }
    s->id = json_object_get(req, "id");
    s->respond = s->id != NULL;
    const struct rpc_method *m = ref_lookup(json_string_value(json_object_get(req, "method")));
    if (!m) {
        expect_error(s, RPC_METHOD_NOT_FOUND, "Method not found", true, NULL);
        return;
    }
    json_t *params = ref_named_params(m, json_object_get(req, "params"));
    if (!params) {
        expect_error(s, RPC_INVALID_PARAMS, "Invalid params", true, NULL);
        return;
    }
    s->method = m;
    s->params = params;
    r->handlers[r->nhandlers++] = i;
}

/* What rpc_line_process must make of buf, as far as it is known before any
 * handler runs. */
static void expect_line(const struct fuzz *f, struct line_rec *r, const char *buf, size_t len) {
    json_error_t err;
    json_t *doc = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    size_t n = json_is_array(doc) ? json_array_size(doc) : 0;

    r->doc = doc;
    r->batch = n > 0 && (f->srv.max_batch == 0 || n <= f->srv.max_batch);
    r->nslots = r->batch ? n : 1;
    r->slots = calloc(r->nslots, sizeof r->slots[0]);
    r->handlers = calloc(r->nslots, sizeof r->handlers[0]);
    FUZZ_CHECK(r->slots != NULL && r->handlers != NULL);

    if (!doc) {
        /* Well-formed JSON that jansson cannot hold is an invalid request,
         * anything else a parse error. */
        r->slots[0].respond = true;
        switch (json_error_code(&err)) {
        case json_error_numeric_overflow:
        case json_error_null_character:
        case json_error_null_byte_in_key:
        case json_error_stack_overflow:
        case json_error_duplicate_key:
            expect_error(&r->slots[0], RPC_INVALID_REQUEST, "Invalid Request", true, NULL);
            break;
        case json_error_out_of_memory:
            expect_error(&r->slots[0], RPC_INTERNAL_ERROR, "Internal error", true, NULL);
            break;
        default:
            expect_error(&r->slots[0], RPC_PARSE_ERROR, "Parse error", true, NULL);
            break;
        }
    } else if (r->batch) {
        for (size_t i = 0; i < n; i++)
            expect_request(r, i, json_array_get(doc, i));
    } else if (json_is_array(doc)) {
        /* Empty, or more requests than max_batch. */
        r->slots[0].respond = true;
        expect_error(&r->slots[0], RPC_INVALID_REQUEST, "Invalid Request", true, NULL);
    } else {
        expect_request(r, 0, doc);
    }
}

/* ---- Checking what jsonrpc wrote ---- */

/* Results and error data are written with 15 significant digits, or 17
 * when 15 would round a number near DBL_MAX past it (the text then holds
 * "e308"): what the client reads is want as it reads back from that text. */
static bool same_value(json_t *want, json_t *got) {
    char *text = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    FUZZ_CHECK(text != NULL);
    if (strstr(text, "e308")) {
        free(text);
        text = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(text != NULL);
    }
    json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);
    bool same = back && json_equal(back, got);
    json_decref(back);
    return same;
}

/* got must be {"jsonrpc":"2.0","id":..,"result"|"error":..}, the answer s
 * describes. */
static void check_response(json_t *got, const struct slot *s) {
    FUZZ_CHECK(s->respond && s->known);
    FUZZ_CHECK(json_is_object(got));
    FUZZ_CHECK(json_object_size(got) == 3);
    json_t *v = json_object_get(got, "jsonrpc");
    FUZZ_CHECK(json_is_string(v) && strcmp(json_string_value(v), "2.0") == 0);
    v = json_object_get(got, "id");
    FUZZ_CHECK(v != NULL);
    FUZZ_CHECK(s->id ? json_equal(v, s->id) : json_is_null(v));

    if (!s->is_error) {
        v = json_object_get(got, "result");
        FUZZ_CHECK(v != NULL);
        FUZZ_CHECK(same_value(s->result, v));
        return;
    }
    json_t *err = json_object_get(got, "error");
    FUZZ_CHECK(json_is_object(err));
    FUZZ_CHECK(json_object_size(err) == (s->data ? 3u : 2u));
    v = json_object_get(err, "code");
    FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == s->code);
    v = json_object_get(err, "message");
    FUZZ_CHECK(json_is_string(v));
    if (s->message && s->message_prefix)
        FUZZ_CHECK(strncmp(json_string_value(v), s->message, strlen(s->message)) == 0);
    else if (s->message)
        FUZZ_CHECK(strcmp(json_string_value(v), s->message) == 0);
    if (s->data) {
        v = json_object_get(err, "data");
        FUZZ_CHECK(v != NULL);
        FUZZ_CHECK(same_value(s->data, v));
    }
}

/* One line on the wire: no newline, valid JSON, an object or a non-empty
 * array. New reference to what it says. */
static json_t *load_answer(const char *out) {
    FUZZ_CHECK(strchr(out, '\n') == NULL);
    json_error_t err;
    json_t *got = json_loads(out, JSON_REJECT_DUPLICATES, &err);
    if (!got) {
        fprintf(stderr, "answer is not JSON (%s at %d): %s\n", err.text, err.position, out);
        fuzz_fail(__FILE__, __LINE__, "json_loads(out) != NULL");
    }
    FUZZ_CHECK(json_is_object(got) || json_array_size(got) > 0);
    return got;
}

static void on_done(void *owner, struct rpc_line *line, char *out) {
    struct line_rec *r = owner;

    FUZZ_CHECK(r != NULL && line != NULL);
    FUZZ_CHECK(!r->abandoned);
    FUZZ_CHECK(++r->n_done == 1);
    if (r->returned)
        FUZZ_CHECK(line == r->line);
    r->line = NULL;
    /* Every call answered; none is left to be started. */
    FUZZ_CHECK(r->next_handler == r->nhandlers);

    size_t want = 0;
    for (size_t i = 0; i < r->nslots; i++)
        want += r->slots[i].respond;
    if (want == 0) {
        /* Notifications only: nothing at all, not even []. */
        FUZZ_CHECK(out == NULL);
        return;
    }
    FUZZ_CHECK(out != NULL);
    json_t *got = load_answer(out);
    if (r->batch) {
        /* In request order, whatever order the calls were answered in. */
        FUZZ_CHECK(json_is_array(got) && json_array_size(got) == want);
        size_t k = 0;
        for (size_t i = 0; i < r->nslots; i++)
            if (r->slots[i].respond)
                check_response(json_array_get(got, k++), &r->slots[i]);
    } else {
        check_response(got, &r->slots[0]);
    }
    json_decref(got);
    free(out);
}

/* ---- The fake methods ---- */

/* The slot of the handler that runs now: the next one the model expects,
 * with the params and peer it expects. */
static struct slot *take_slot(struct fuzz *f, struct rpc_call *call, json_t *params,
                              rpc_handler fn) {
    struct line_rec *r = f->cur;
    FUZZ_CHECK(r != NULL);
    FUZZ_CHECK(r->next_handler < r->nhandlers);
    struct slot *s = &r->slots[r->handlers[r->next_handler++]];
    FUZZ_CHECK(s->method->fn == fn);
    FUZZ_CHECK(json_is_object(params));
    FUZZ_CHECK(json_equal(params, s->params));
    FUZZ_CHECK(rpc_call_peer(call) == &r->peer);
    return s;
}

static void m_ok(struct rpc_call *call, json_t *params, void *ctx) {
    struct slot *s = take_slot(ctx, call, params, m_ok);
    json_int_t n = (json_int_t)json_object_size(params);
    expect_result(s, json_integer(n));
    rpc_call_result(call, json_integer(n));
}

/* Fails with the code, message and data it is given. */
static void m_fail(struct rpc_call *call, json_t *params, void *ctx) {
    struct slot *s = take_slot(ctx, call, params, m_fail);
    json_t *v = json_object_get(params, "code");
    int code = -32000;
    if (json_is_integer(v) && json_integer_value(v) >= INT_MIN && json_integer_value(v) <= INT_MAX)
        code = (int)json_integer_value(v);
    const char *message = json_string_value(json_object_get(params, "message"));
    json_t *data = json_object_get(params, "data");
    if (message)
        expect_error(s, code, message, false, json_incref(data));
    else
        expect_error(s, code, ref_default_message(code), false, json_incref(data));
    rpc_call_error(call, code, message, json_incref(data));
}

static void m_echo(struct rpc_call *call, json_t *params, void *ctx) {
    struct slot *s = take_slot(ctx, call, params, m_echo);
    expect_result(s, json_incref(s->params));
    rpc_call_result(call, json_incref(params));
}

/* A failed json_pack passed straight through. */
static void m_null(struct rpc_call *call, json_t *params, void *ctx) {
    struct slot *s = take_slot(ctx, call, params, m_null);
    expect_error(s, RPC_INTERNAL_ERROR, "Internal error", true, NULL);
    rpc_call_result(call, NULL);
}

static void m_later(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = take_slot(f, call, params, m_later);
    if (f->ndeferred == f->deferred_cap) {
        size_t cap = f->deferred_cap ? 2 * f->deferred_cap : 16;
        struct deferred *d = realloc(f->deferred, cap * sizeof *d);
        FUZZ_CHECK(d != NULL);
        f->deferred = d;
        f->deferred_cap = cap;
    }
    f->deferred[f->ndeferred++] = (struct deferred){call, f->cur, s, params};
}

/* Answers deferred call i, in one of the ways a method can. */
static void answer_deferred(struct fuzz *f, size_t i) {
    struct deferred d = f->deferred[i];
    f->deferred[i] = f->deferred[--f->ndeferred];

    FUZZ_CHECK(rpc_call_peer(d.call) == (d.rec->abandoned ? NULL : &d.rec->peer));
    int seq = ++f->seq;
    /* The slot first: done may run inside the answer. */
    switch (fuzz_rand(&f->rng) % 5) {
    case 0:
        expect_result(d.slot, json_integer(seq));
        rpc_call_result(d.call, json_integer(seq));
        break;
    case 1:
        expect_error(d.slot, RPC_INTERNAL_ERROR, "Internal error", true, NULL);
        rpc_call_result(d.call, NULL);
        break;
    case 2:
        expect_error(d.slot, RPC_TIMEOUT, "timed out", false, json_integer(seq));
        rpc_call_error(d.call, RPC_TIMEOUT, "timed out", json_integer(seq));
        break;
    case 3:
        expect_error(d.slot, RPC_BUSY, NULL, false, NULL);
        rpc_call_error(d.call, RPC_BUSY, NULL, NULL);
        break;
    default:
        expect_result(d.slot, json_incref(d.slot->params));
        rpc_call_result(d.call, json_incref(d.params));
        break;
    }
}

static void answer_all(struct fuzz *f) {
    while (f->ndeferred > 0)
        answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
}

/* Answers every deferred call, of any line (this one's included), from
 * inside a handler; the result is how many. */
static void m_flush(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = take_slot(f, call, params, m_flush);
    json_int_t n = (json_int_t)f->ndeferred;
    answer_all(f);
    expect_result(s, json_integer(n));
    rpc_call_result(call, json_integer(n));
}

static void abandon(struct line_rec *r) {
    FUZZ_CHECK(r->returned && r->line && !r->abandoned && r->n_done == 0);
    rpc_line_abandon(r->line);
    r->abandoned = true;
    r->line = NULL;
}

/* Every other client goes away, from inside a handler. */
static void m_drop(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = take_slot(f, call, params, m_drop);
    json_int_t n = 0;
    for (size_t i = 0; i < f->nlines; i++) {
        if (f->lines[i].line) {
            abandon(&f->lines[i]);
            n++;
        }
    }
    expect_result(s, json_integer(n));
    rpc_call_result(call, json_integer(n));
}

static void m_shadowed(struct rpc_call *call, json_t *params, void *ctx) {
    (void)call, (void)params, (void)ctx;
    fuzz_fail(__FILE__, __LINE__, "the second lookup was asked before the table");
}

/* ---- The driver ---- */

/* rpc_error_text with the first bytes of the input as its message. */
static void check_error_text(const uint8_t *data, size_t size) {
    char msg[101];
    size_t n = 0;
    while (n < size && n < sizeof msg - 1 && data[HDR_LEN + n] != '\n' && data[HDR_LEN + n] != '\0')
        n++;
    memcpy(msg, data + HDR_LEN, n);
    msg[n] = '\0';
    int code = (int16_t)(data[HDR_SEED_LO] | data[HDR_SEED_HI] << 8);
    bool no_message = data[HDR_FLAGS] & 8;

    struct slot s = {.respond = true};
    if (no_message) {
        expect_error(&s, code, ref_default_message(code), false, NULL);
    } else {
        /* Text that is not UTF-8 is still written, non-ASCII bytes masked. */
        char masked[sizeof msg];
        memcpy(masked, msg, n + 1);
        json_t *str = json_string(msg);
        if (!str)
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)masked[i] >= 0x80)
                    masked[i] = '?';
        json_decref(str);
        expect_error(&s, code, masked, false, NULL);
    }
    char *out = rpc_error_text(code, no_message ? NULL : msg);
    FUZZ_CHECK(out != NULL);
    json_t *got = load_answer(out);
    check_response(got, &s);
    json_decref(got);
    free(out);
    free(s.message);
}

/* Lines marked to be abandoned go away at a moment the input chooses. */
static void maybe_abandon(struct fuzz *f) {
    for (size_t i = 0; i < f->nlines; i++)
        if (f->lines[i].to_abandon && f->lines[i].line && fuzz_rand(&f->rng) % 2)
            abandon(&f->lines[i]);
}

static void run_line(struct fuzz *f, struct line_rec *r, const uint8_t *buf, size_t len) {
    expect_line(f, r, (const char *)buf, len);
    /* A block of its own size, so that ASan sees a read past the line. */
    char *copy = malloc(len ? len : 1);
    FUZZ_CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, buf, len);

    f->cur = r;
    struct rpc_line *line = rpc_line_process(&f->srv, copy, len, on_done, r, &r->peer);
    f->cur = NULL;
    free(copy);
    r->returned = true;

    /* Every handler the model expects ran, in order. */
    FUZZ_CHECK(r->next_handler == r->nhandlers);
    /* NULL exactly when done has run already. */
    if (line) {
        FUZZ_CHECK(r->n_done == 0);
        r->line = line;
    } else {
        FUZZ_CHECK(r->n_done == 1);
    }
}

static void free_line(struct line_rec *r) {
    for (size_t i = 0; i < r->nslots; i++) {
        json_decref(r->slots[i].params);
        json_decref(r->slots[i].result);
        json_decref(r->slots[i].data);
        free(r->slots[i].message);
    }
    free(r->slots);
    free(r->handlers);
    json_decref(r->doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < HDR_LEN)
        return 0;
    check_error_text(data, size - HDR_LEN);

    struct fuzz *f = calloc(1, sizeof *f);
    FUZZ_CHECK(f != NULL);
    /* Designated: members the server struct gains later start at 0. */
    f->srv = (struct rpc_server){
        .methods = methods,
        .nmethods = COUNT(methods),
        .ctx = f,
        .max_batch = data[HDR_FLAGS] & 7,
        .find = find_extra,
    };
    f->rng = (uint32_t)data[HDR_SEED_LO] << 8 | data[HDR_SEED_HI] | 0x10000;

    size_t off = HDR_LEN;
    while (off < size && f->nlines < MAX_LINES) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t len = nl ? (size_t)(nl - (data + off)) : size - off;
        struct line_rec *r = &f->lines[f->nlines];
        r->to_abandon = data[HDR_ABANDON] >> (f->nlines % 8) & 1;
        f->nlines++;
        run_line(f, r, data + off, len);
        /* Some answers, some clients gone, before the next line. */
        for (unsigned k = fuzz_rand(&f->rng) % 4; k > 0 && f->ndeferred > 0; k--)
            answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
        maybe_abandon(f);
        off += len + 1;
    }
    while (f->ndeferred > 0) {
        maybe_abandon(f);
        answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
    }

    /* Every line answered exactly once, or abandoned and never answered. */
    for (size_t i = 0; i < f->nlines; i++) {
        struct line_rec *r = &f->lines[i];
        FUZZ_CHECK(r->line == NULL);
        FUZZ_CHECK(r->n_done == (r->abandoned ? 0 : 1));
        free_line(r);
    }
    free(f->deferred);
    free(f);
    return 0;
}
