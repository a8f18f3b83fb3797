/*
 * fuzz_rpc: the JSON-RPC envelope (src/rpc/jsonrpc.c) against a reference
 * model of the answer each line must get. A fake method table answers at
 * once, fails, echoes its params, answers with text, refuses what is over
 * the answer budget or answers later, in an order the input chooses; some
 * lines are abandoned while their calls are still pending or while paused.
 * With rpc_line_run the input also chooses an answer budget and a pace
 * callback that holds batches back, and the driver resumes (or abandons)
 * paused lines between lines. Every line that is done without a budget is
 * then replayed through rpc_line_process with the same answers, which must
 * give the same text.
 */
#include "fuzz.h"
#include "jsonrpc.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

/*
 * Input layout: four header bytes (eight with FLAG_RUN), then lines
 * separated by '\n', each one given to rpc_line_process (rpc_line_run with
 * FLAG_RUN) as it is (a CR, a NUL, anything).
 */
enum {
    HDR_FLAGS,   /* bits 0-2: max_batch (0: no limit); bit 3: rpc_error_text with no message;
                  * bit 4: FLAG_RUN; bits 5-7: unused */
    HDR_ABANDON, /* bit k: line k (mod 8) is abandoned at some point while pending */
    HDR_SEED_LO, /* seed for the order of later answers; also the rpc_error_text code */
    HDR_SEED_HI,
    HDR_LEN,
    /* Only with FLAG_RUN: */
    HDR_BUDGET_LO = HDR_LEN, /* budget_bytes = LO | (HI & 15) << 8, 0..4095 (0: none) */
    HDR_BUDGET_HI,           /* bits 0-3: budget; bit 4: no pace callback; bits 5-7: unused */
    HDR_PACE,                /* bit k: what pace answers when asked the k-th time (mod 8) */
    HDR_PAUSED,              /* bit k: line k (mod 8) may be abandoned instead of resumed */
    HDR_RUN_LEN
};
#define FLAG_NO_MESSAGE 0x08
#define FLAG_RUN 0x10 /* lines go through rpc_line_run with the bytes above */
#define BUDGET_NO_PACE 0x10

/* More lines than this in one input add nothing but time. */
#define MAX_LINES 32
/* Sizes the "text" and "big" methods accept, past any budget. */
#define MAX_SIZE 65536

/* How a handler answered, so that the replay can answer the same. */
enum answer_kind {
    ANS_RESULT,      /* rpc_call_result(value) */
    ANS_RESULT_NULL, /* rpc_call_result(NULL) */
    ANS_TEXT,        /* rpc_call_result_text(text) */
    ANS_TEXT_NULL,   /* rpc_call_result_text(NULL) */
    ANS_ERROR,       /* rpc_call_error(code, text, value) */
    ANS_TOO_BIG,     /* rpc_call_too_big(need) */
};

struct answer {
    enum answer_kind kind;
    json_t *value; /* the result, or the error's data (may be NULL): a reference */
    char *text;    /* the text result, or the error's message (NULL: standard): malloc'd */
    int code;
    size_t need;
};

/* What the answer text of a request turned out to be (on_done). */
enum outcome {
    OUT_NORMAL,  /* what the model says, budget or not */
    OUT_REFUSED, /* -32005 without running: the budget was spent when it came */
    OUT_TOO_BIG, /* -32005 for a result that would have gone past the budget */
};

/* What one request of a line must be answered. */
struct slot {
    size_t index;     /* in the line */
    bool respond;     /* an answer is written (not a notification) */
    bool request;     /* a valid request: a budget may refuse it */
    json_t *id;       /* borrowed from the line's doc; NULL: the answer's id is null */
    char *idt;        /* the id as the answer must write it (malloc'd) when respond */
    const char *name; /* the method name (borrowed from the doc) */
    const struct rpc_method *method; /* the handler that must run, NULL: none */
    json_t *params;                  /* the params it must see: new reference */
    bool known;                      /* the answer below is set */
    bool is_error;
    json_t *result;    /* new reference */
    char *result_text; /* a result the method gave as text, written as is (malloc'd) */
    int code;
    char *message;       /* malloc'd; NULL: any text */
    bool message_prefix; /* message is only how the text starts */
    json_t *data;        /* new reference; NULL: no "data" member */

    /* What happened, in the order of fuzz.clock. */
    bool ran, answered;
    struct answer ans;
    unsigned long ran_at, ret_at, answered_at;
    size_t dispatched_at_answer; /* the line's dispatched when it was answered */
    bool budget_seen;            /* "big" asked rpc_call_budget: */
    size_t budget_left;          /* what it said */

    /* What the answer holds (on_done). */
    size_t len; /* the response's text length */
    enum outcome out;
    size_t left; /* OUT_TOO_BIG: the budget_bytes its data gives */
};

struct fuzz;

/* One input line, from rpc_line_process to its done (or abandon). */
struct line_rec {
    struct fuzz *f;
    size_t index;
    char peer; /* its address is the peer given for this line */
    const uint8_t *buf;
    size_t len;
    json_t *doc;
    bool batch;
    struct slot *slots;
    size_t nslots;
    size_t *handlers; /* the slots whose handler runs, in request order */
    size_t nhandlers, next_handler;
    struct rpc_line *line; /* pending: returned, done not called yet */
    bool returned, abandoned, to_abandon;
    bool paused; /* run or resume returned it paused; not resumed since */
    int n_done;
    /* Calls known to have been dispatched to the end (their handler returned
     * or their answer written), for bounds on what was answered before what. */
    size_t dispatched;
    size_t pace_true; /* times pace let a call start: the calls started after the first */
    unsigned pace_false_run;
    bool pace_last_false;
    char *out; /* what done was given (copy), for the replay */
    size_t replay_next;
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
    bool run;      /* rpc_line_run (FLAG_RUN), not rpc_line_process */
    size_t budget; /* budget_bytes of every line, 0: none */
    bool pace_on;  /* a pace callback is given */
    uint8_t pace_bits, abandon_paused;
    unsigned pace_asks;
    unsigned long clock; /* ticks at every event a handler or pace sees */
    bool in_handler;
    struct line_rec lines[MAX_LINES];
    size_t nlines;
    struct line_rec *cur; /* the line inside rpc_line_run or rpc_line_resume */
    struct deferred *deferred;
    size_t ndeferred, deferred_cap;
    int seq;
    /* The replay of one line through rpc_line_process. */
    struct line_rec *replay;
    char replay_peer;
    int replay_n_done;
    char *replay_out;
};

static void m_ok(struct rpc_call *call, json_t *params, void *ctx);
static void m_fail(struct rpc_call *call, json_t *params, void *ctx);
static void m_echo(struct rpc_call *call, json_t *params, void *ctx);
static void m_null(struct rpc_call *call, json_t *params, void *ctx);
static void m_later(struct rpc_call *call, json_t *params, void *ctx);
static void m_flush(struct rpc_call *call, json_t *params, void *ctx);
static void m_drop(struct rpc_call *call, json_t *params, void *ctx);
static void m_text(struct rpc_call *call, json_t *params, void *ctx);
static void m_big(struct rpc_call *call, json_t *params, void *ctx);
static void m_shadowed(struct rpc_call *call, json_t *params, void *ctx);

static const char *const fail_params[] = {"code", "message", "data", NULL};
static const char *const echo_params[] = {"a", "b", "c", NULL};
static const char *const later_params[] = {"tag", NULL};
static const char *const text_params[] = {"value", "size", NULL};
static const char *const big_params[] = {"size", NULL};

static const struct rpc_method methods[] = {
    {"ok", m_ok, NULL, false},
    {"fail", m_fail, fail_params, false},
    {"echo", m_echo, echo_params, false},
    {"null", m_null, NULL, false},
    {"later", m_later, later_params, false},
    {"flush", m_flush, NULL, false},
    {"drop", m_drop, NULL, false},
    {"nofn", NULL, NULL, false},
    {"text", m_text, text_params, false},
    {"big", m_big, big_params, false},
};

/* The second lookup. "ok" is also in the table, which must win. */
static const struct rpc_method extra_methods[] = {
    {"x.later", m_later, NULL, false},
    {"x.echo", m_echo, NULL, false},
    {"x.nofn", NULL, NULL, false},
    {"ok", m_shadowed, NULL, false},
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

static char *dup_text(const char *s) {
    char *d = malloc(strlen(s) + 1);
    FUZZ_CHECK(d != NULL);
    return strcpy(d, s);
}

static char *dup_span(const char *s, size_t n) {
    char *d = malloc(n + 1);
    FUZZ_CHECK(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static size_t sub0(size_t a, size_t b) {
    return a > b ? a - b : 0;
}

/* ---- Reading JSON text that is known to be valid, for where things are ---- */

static size_t skip_ws(const char *t, size_t len, size_t i) {
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* t[i] is a string's opening quote: the index past its closing one. */
static size_t skip_string(const char *t, size_t len, size_t i) {
    FUZZ_CHECK(i < len && t[i] == '"');
    for (i++; i < len && t[i] != '"'; i++)
        if (t[i] == '\\')
            i++;
    FUZZ_CHECK(i < len);
    return i + 1;
}

/* The index past the value that starts at t[i]. */
static size_t skip_value(const char *t, size_t len, size_t i) {
    FUZZ_CHECK(i < len);
    if (t[i] == '"')
        return skip_string(t, len, i);
    if (t[i] == '{' || t[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = t[i];
            if (c == '"') {
                i = skip_string(t, len, i);
                continue;
            }
            i++;
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i;
        }
        fuzz_fail(__FILE__, __LINE__, "unterminated container");
    }
    while (i < len && t[i] != ',' && t[i] != ']' && t[i] != '}' && t[i] != ' ' && t[i] != '\t' &&
           t[i] != '\n' && t[i] != '\r')
        i++;
    return i;
}

/* Where the value of member key is in the object at t[i], when the object
 * has that key written as is (no escapes). */
static bool member_span(const char *t, size_t len, size_t i, const char *key, size_t *vs,
                        size_t *ve) {
    size_t klen = strlen(key);
    FUZZ_CHECK(i < len && t[i] == '{');
    i = skip_ws(t, len, i + 1);
    FUZZ_CHECK(i < len);
    if (t[i] == '}')
        return false;
    for (;;) {
        size_t ks = i, ke = skip_string(t, len, i);
        i = skip_ws(t, len, ke);
        FUZZ_CHECK(i < len && t[i] == ':');
        i = skip_ws(t, len, i + 1);
        size_t s = i, e = skip_value(t, len, i);
        if (ke - ks == klen + 2 && memcmp(t + ks + 1, key, klen) == 0) {
            *vs = s;
            *ve = e;
            return true;
        }
        i = skip_ws(t, len, e);
        FUZZ_CHECK(i < len);
        if (t[i] == '}')
            return false;
        FUZZ_CHECK(t[i] == ',');
        i = skip_ws(t, len, i + 1);
    }
}

/* A number "id" of the object at t[i] as the client wrote it (malloc'd),
 * or NULL: not an object, no such member written as "id", not a number. */
static char *raw_number_id(const char *t, size_t len, size_t i) {
    size_t vs, ve;
    if (t[i] != '{' || !member_span(t, len, i, "id", &vs, &ve))
        return NULL;
    if (t[vs] != '-' && (t[vs] < '0' || t[vs] > '9'))
        return NULL;
    return dup_span(t + vs, ve - vs);
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

/* result: steals. */
static void expect_result(struct slot *s, json_t *result) {
    FUZZ_CHECK(!s->known);
    s->known = true;
    s->result = result;
}

/* A result given as text: written exactly so. text: copied. */
static void expect_result_text(struct slot *s, const char *text) {
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    /* The harness's own text: valid JSON, one line. */
    FUZZ_CHECK(v != NULL && strchr(text, '\n') == NULL);
    expect_result(s, v);
    s->result_text = dup_text(text);
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

/* An answer with id null (the request's shape is wrong, or no request). */
static void expect_null_id(struct slot *s, size_t index) {
    s->index = index;
    s->respond = true;
    s->idt = dup_text("null");
}

/* raw: the number id as written (malloc'd, taken) or NULL. */
static void expect_request(struct line_rec *r, size_t i, json_t *req, char *raw) {
    struct slot *s = &r->slots[i];
    if (!ref_is_request(req)) {
        /* Not a request, so not a notification: answered, with id null. */
        expect_null_id(s, i);
        expect_error(s, RPC_INVALID_REQUEST, "Invalid Request", true, NULL);
        free(raw);
        return;
    }
    s->index = i;
    s->request = true;
    s->id = json_object_get(req, "id");
    s->respond = s->id != NULL;
    /* A number id exactly as the client wrote it, anything else as jansson
     * writes it. */
    if (s->id && raw && json_is_number(s->id)) {
        s->idt = raw;
        raw = NULL;
    } else if (s->id) {
        s->idt = json_dumps(s->id, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(s->idt != NULL);
    }
    free(raw);
    s->name = json_string_value(json_object_get(req, "method"));
    const struct rpc_method *m = ref_lookup(s->name);
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
        expect_null_id(&r->slots[0], 0);
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
        /* Each element, and where it is written, for its id's text. */
        size_t i = skip_ws(buf, len, 0);
        FUZZ_CHECK(i < len && buf[i] == '[');
        i = skip_ws(buf, len, i + 1);
        for (size_t k = 0; k < n; k++) {
            size_t e = skip_value(buf, len, i);
            expect_request(r, k, json_array_get(doc, k), raw_number_id(buf, len, i));
            i = skip_ws(buf, len, e);
            FUZZ_CHECK(i < len && buf[i] == (k + 1 < n ? ',' : ']'));
            i = skip_ws(buf, len, i + 1);
        }
    } else if (json_is_array(doc)) {
        /* Empty, or more requests than max_batch. */
        expect_null_id(&r->slots[0], 0);
        expect_error(&r->slots[0], RPC_INVALID_REQUEST, "Invalid Request", true, NULL);
    } else {
        expect_request(r, 0, doc, raw_number_id(buf, len, skip_ws(buf, len, 0)));
    }
}

/* ---- Checking what jsonrpc wrote ---- */

/* A result as the envelope writes it: 15 significant digits, or 17 when 15
 * would round a number near DBL_MAX past it (the text then holds "e308"). */
static char *value_text(json_t *v) {
    const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
    char *text = json_dumps(v, flags | JSON_REAL_PRECISION(15));
    FUZZ_CHECK(text != NULL);
    if (strstr(text, "e308")) {
        free(text);
        text = json_dumps(v, flags);
        FUZZ_CHECK(text != NULL);
    }
    return text;
}

/* What the client reads: want as it reads back from the text it is written as. */
static bool same_value(json_t *want, json_t *got) {
    char *text = value_text(want);
    json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);
    bool same = back && json_equal(back, got);
    json_decref(back);
    return same;
}

/* The length of the result answer s expects: compact
 * {"jsonrpc":"2.0","id":..,"result":..} is 33 bytes and the two values. */
static size_t result_len(const struct slot *s) {
    FUZZ_CHECK(s->known && !s->is_error && s->idt != NULL);
    if (s->result_text)
        return 33 + strlen(s->idt) + strlen(s->result_text);
    char *vt = value_text(s->result);
    size_t n = 33 + strlen(s->idt) + strlen(vt);
    free(vt);
    return n;
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
        /* Text is written as it is, every digit. */
        FUZZ_CHECK(s->result_text ? json_equal(s->result, v) : same_value(s->result, v));
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

/* got must be a -32005 for the budget: need_bytes need, budget_bytes left. */
static void check_busy(json_t *got, size_t need, size_t left) {
    FUZZ_CHECK(json_is_object(got) && json_object_size(got) == 3);
    json_t *v = json_object_get(got, "jsonrpc");
    FUZZ_CHECK(json_is_string(v) && strcmp(json_string_value(v), "2.0") == 0);
    json_t *err = json_object_get(got, "error");
    FUZZ_CHECK(json_is_object(err) && json_object_size(err) == 3);
    v = json_object_get(err, "code");
    FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == RPC_BUSY);
    v = json_object_get(err, "message");
    FUZZ_CHECK(json_is_string(v) && strncmp(json_string_value(v), "Server busy", 11) == 0);
    json_t *data = json_object_get(err, "data");
    FUZZ_CHECK(json_is_object(data) && json_object_size(data) == 2);
    v = json_object_get(data, "need_bytes");
    FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == (json_int_t)need);
    v = json_object_get(data, "budget_bytes");
    FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == (json_int_t)left);
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

/* The answer of slot s: got, written as raw (rawlen bytes). */
static void check_slot(const struct fuzz *f, struct slot *s, json_t *got, const char *raw,
                       size_t rawlen) {
    FUZZ_CHECK(s->respond && s->idt != NULL);
    s->len = rawlen;
    /* Every id as the request wrote it: a number to the character. */
    size_t vs, ve;
    FUZZ_CHECK(member_span(raw, rawlen, 0, "id", &vs, &ve));
    if (ve - vs != strlen(s->idt) || memcmp(raw + vs, s->idt, ve - vs) != 0) {
        fprintf(stderr, "id written %.*s, the request wrote %s\n", (int)(ve - vs), raw + vs,
                s->idt);
        fuzz_fail(__FILE__, __LINE__, "id not echoed as written");
    }

    json_t *err = json_object_get(got, "error");
    json_t *code = json_object_get(err, "code");
    if (f->budget && s->request && !s->ran && json_integer_value(code) == RPC_BUSY) {
        /* Refused when it came, the budget spent: never run, and told that
         * the answers already fill it (nothing left). */
        check_busy(got, 0, 0);
        s->out = OUT_REFUSED;
        return;
    }
    /* Without a budget every handler runs; with one, a call not run is refused. */
    FUZZ_CHECK(!s->method || s->ran);
    if (f->budget && s->ran && !s->is_error && err) {
        /* A result built and then found too big: the need is its length. */
        json_int_t left =
            json_integer_value(json_object_get(json_object_get(err, "data"), "budget_bytes"));
        size_t need = result_len(s);
        FUZZ_CHECK(left >= 0 && (size_t)left < need);
        check_busy(got, need, (size_t)left);
        s->out = OUT_TOO_BIG;
        s->left = (size_t)left;
        return;
    }
    check_response(got, s);
    if (!s->is_error) {
        FUZZ_CHECK(rawlen == result_len(s));
        if (s->result_text) {
            FUZZ_CHECK(member_span(raw, rawlen, 0, "result", &vs, &ve));
            FUZZ_CHECK(ve - vs == strlen(s->result_text) &&
                       memcmp(raw + vs, s->result_text, ve - vs) == 0);
        }
    }
}

/* Answer bytes of line r surely made by time t, when the calls before idx
 * were dispatched by then: the envelope's own answers of those calls and
 * the handlers' answers given before t. */
static size_t made_before(const struct line_rec *r, size_t idx, unsigned long t) {
    size_t sum = 0;
    for (size_t j = 0; j < r->nslots; j++) {
        const struct slot *s = &r->slots[j];
        if (!s->respond)
            continue;
        if (s->ran ? s->answered_at < t : j < idx)
            sum += s->len;
    }
    return sum;
}

/* Answer bytes of line r that may have been made by time t, when the calls
 * from idx on were not dispatched yet; skip's own answer left out. */
static size_t made_until(const struct line_rec *r, size_t idx, unsigned long t,
                         const struct slot *skip) {
    size_t sum = 0;
    for (size_t j = 0; j < r->nslots && j < idx; j++) {
        const struct slot *s = &r->slots[j];
        if (s->respond && s != skip && !(s->ran && s->answered_at > t))
            sum += s->len;
    }
    return sum;
}

/* The budget, over the answers of line r (all classified by check_slot). */
static void check_budget(const struct fuzz *f, const struct line_rec *r) {
    const size_t budget = f->budget;

    /* Once a call comes with the budget spent, every later one is refused
     * too: nothing is made smaller again. c: the first refused. */
    size_t c = r->nslots;
    for (size_t i = 0; i < r->nslots && c == r->nslots; i++) {
        const struct slot *s = &r->slots[i];
        if (s->request && (s->out == OUT_REFUSED || (s->method && !s->ran)))
            c = i;
    }
    for (size_t i = c; i < r->nslots; i++) {
        const struct slot *s = &r->slots[i];
        if (s->request) {
            FUZZ_CHECK(!s->ran);
            FUZZ_CHECK(!s->respond || s->out == OUT_REFUSED);
        }
    }
    /* Refused: what was made before it (no more than all the answers
     * before it) filled the budget. */
    if (c < r->nslots)
        FUZZ_CHECK(made_until(r, c, (unsigned long)-1, NULL) >= budget);
    /* Not refused: what was surely made before it did not. (A notification
     * the envelope answers itself leaves no trace either way.) */
    for (size_t i = 0; i < c; i++) {
        const struct slot *s = &r->slots[i];
        if (!s->request || (!s->ran && !s->respond))
            continue;
        unsigned long t = 0;
        if (s->ran) {
            t = s->ran_at;
        } else {
            /* Dispatched after the handlers of the calls before it returned. */
            for (size_t j = 0; j < i; j++)
                if (r->slots[j].ran && r->slots[j].ret_at > t)
                    t = r->slots[j].ret_at;
        }
        FUZZ_CHECK(made_before(r, i, t) < budget);
    }

    for (size_t i = 0; i < r->nslots; i++) {
        const struct slot *s = &r->slots[i];
        if (s->ran && s->respond && s->out == OUT_NORMAL && !s->is_error) {
            /* No result pushes the line's answers past the budget. */
            size_t before = made_before(r, s->dispatched_at_answer, s->answered_at);
            if (before + s->len > budget) {
                fprintf(stderr, "slot %zu: a result of %zu bytes after %zu, budget %zu\n", i,
                        s->len, before, budget);
                fuzz_fail(__FILE__, __LINE__, "a result past the budget");
            }
        }
        if (s->out == OUT_TOO_BIG) {
            /* What it says was left is what was left then. */
            FUZZ_CHECK(s->left <=
                       sub0(budget, made_before(r, s->dispatched_at_answer, s->answered_at)));
            FUZZ_CHECK(s->left >= sub0(budget, made_until(r, r->nslots, s->answered_at, s)));
        }
        if (s->budget_seen) {
            /* rpc_call_budget: what was left when the call started. */
            FUZZ_CHECK(s->budget_left <= sub0(budget, made_before(r, i, s->ran_at)));
            FUZZ_CHECK(s->budget_left >= sub0(budget, made_until(r, i, s->ran_at, s)));
        }
    }
}

/* Everything line r's answer (out) must be. */
static void check_answer(const struct fuzz *f, struct line_rec *r, const char *out) {
    size_t want = 0;
    for (size_t i = 0; i < r->nslots; i++)
        want += r->slots[i].respond;
    if (want == 0) {
        /* Notifications only: nothing at all, not even []. */
        FUZZ_CHECK(out == NULL);
    } else {
        FUZZ_CHECK(out != NULL);
        json_t *got = load_answer(out);
        size_t len = strlen(out);
        if (r->batch) {
            /* In request order, whatever order the calls were answered in. */
            FUZZ_CHECK(json_is_array(got) && json_array_size(got) == want);
            size_t at = skip_ws(out, len, 0), k = 0;
            FUZZ_CHECK(at < len && out[at] == '[');
            at = skip_ws(out, len, at + 1);
            for (size_t i = 0; i < r->nslots; i++) {
                if (!r->slots[i].respond)
                    continue;
                size_t e = skip_value(out, len, at);
                check_slot(f, &r->slots[i], json_array_get(got, k++), out + at, e - at);
                at = skip_ws(out, len, e);
                FUZZ_CHECK(at < len && out[at] == (k < want ? ',' : ']'));
                at = skip_ws(out, len, at + 1);
            }
        } else {
            check_slot(f, &r->slots[0], got, out, len);
        }
        json_decref(got);
    }
    if (f->budget)
        check_budget(f, r);
}

static void on_done(void *owner, struct rpc_line *line, char *out) {
    struct line_rec *r = owner;

    FUZZ_CHECK(r != NULL && line != NULL);
    struct fuzz *f = r->f;
    FUZZ_CHECK(!r->abandoned);
    FUZZ_CHECK(++r->n_done == 1);
    /* A paused line is done only once resumed to its end. */
    FUZZ_CHECK(!r->paused);
    if (r->returned)
        FUZZ_CHECK(line == r->line);
    r->line = NULL;
    /* Every call started (pace let each one after the first through) and
     * answered. */
    FUZZ_CHECK(r->pace_true == (f->pace_on && r->batch ? r->nslots - 1 : 0));
    if (f->budget)
        FUZZ_CHECK(r->next_handler <= r->nhandlers);
    else
        FUZZ_CHECK(r->next_handler == r->nhandlers);
    for (size_t i = 0; i < r->nslots; i++)
        FUZZ_CHECK(!r->slots[i].ran || r->slots[i].answered);
    r->dispatched = r->nslots;
    r->out = out ? dup_text(out) : NULL;
    check_answer(f, r, out);
    free(out);
}

/* ---- The fake methods ---- */

/* Answers call as a says. */
static void perform(struct rpc_call *call, const struct answer *a) {
    switch (a->kind) {
    case ANS_RESULT:
        rpc_call_result(call, json_incref(a->value));
        break;
    case ANS_RESULT_NULL:
        rpc_call_result(call, NULL);
        break;
    case ANS_TEXT:
        rpc_call_result_text(call, dup_text(a->text));
        break;
    case ANS_TEXT_NULL:
        rpc_call_result_text(call, NULL);
        break;
    case ANS_ERROR:
        rpc_call_error(call, a->code, a->text, json_incref(a->value));
        break;
    case ANS_TOO_BIG:
        rpc_call_too_big(call, a->need);
        break;
    }
}

/* Answers call, of slot s of line r, as a says (taken), noting when. The
 * slot's expectation first: done may run inside the answer. */
static void answer(struct fuzz *f, struct line_rec *r, struct slot *s, struct rpc_call *call,
                   struct answer a) {
    FUZZ_CHECK(s->ran && !s->answered && s->known);
    s->answered = true;
    s->ans = a;
    s->answered_at = ++f->clock;
    s->dispatched_at_answer = r->dispatched;
    perform(call, &s->ans);
}

/* A handler in the replay: the next one the line ran, answering the same. */
static void replay_call(struct fuzz *f, struct rpc_call *call, json_t *params, rpc_handler fn) {
    struct line_rec *r = f->replay;
    FUZZ_CHECK(r->replay_next < r->nhandlers);
    struct slot *s = &r->slots[r->handlers[r->replay_next++]];
    FUZZ_CHECK(s->method->fn == fn && s->ran && s->answered);
    FUZZ_CHECK(json_is_object(params) && json_equal(params, s->params));
    FUZZ_CHECK(rpc_call_peer(call) == &f->replay_peer);
    perform(call, &s->ans);
}

/* The slot of the handler that runs now: the next one the model expects,
 * with the params and peer it expects. NULL in the replay (answered). */
static struct slot *begin(struct fuzz *f, struct rpc_call *call, json_t *params, rpc_handler fn) {
    if (f->replay) {
        replay_call(f, call, params, fn);
        return NULL;
    }
    struct line_rec *r = f->cur;
    FUZZ_CHECK(r != NULL);
    /* Not inside another handler; not for a line gone, paused or done. */
    FUZZ_CHECK(!f->in_handler);
    FUZZ_CHECK(!r->abandoned && !r->paused && r->n_done == 0);
    FUZZ_CHECK(r->next_handler < r->nhandlers);
    struct slot *s = &r->slots[r->handlers[r->next_handler++]];
    FUZZ_CHECK(s->method->fn == fn);
    FUZZ_CHECK(json_is_object(params));
    FUZZ_CHECK(json_equal(params, s->params));
    FUZZ_CHECK(rpc_call_peer(call) == &r->peer);
    FUZZ_CHECK(strcmp(rpc_call_method(call), s->name) == 0);
    /* With pacing, the call is the one pace let through last. */
    FUZZ_CHECK(s->index == (f->pace_on && r->batch ? r->pace_true : s->index));
    FUZZ_CHECK(r->batch || s->index == 0);
    s->ran = true;
    s->ran_at = ++f->clock;
    if (r->dispatched < s->index)
        r->dispatched = s->index;
    f->in_handler = true;
    return s;
}

/* The handler of s returns. */
static void end(struct fuzz *f, struct slot *s) {
    struct line_rec *r = f->cur;
    f->in_handler = false;
    s->ret_at = ++f->clock;
    if (r->dispatched < s->index + 1)
        r->dispatched = s->index + 1;
}

static void m_ok(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_ok);
    if (!s)
        return;
    json_int_t n = (json_int_t)json_object_size(params);
    expect_result(s, json_integer(n));
    answer(f, f->cur, s, call, (struct answer){.kind = ANS_RESULT, .value = json_integer(n)});
    end(f, s);
}

/* Fails with the code, message and data it is given. */
static void m_fail(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_fail);
    if (!s)
        return;
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
    answer(f, f->cur, s, call,
           (struct answer){.kind = ANS_ERROR,
                           .code = code,
                           .text = message ? dup_text(message) : NULL,
                           .value = json_incref(data)});
    end(f, s);
}

static void m_echo(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_echo);
    if (!s)
        return;
    expect_result(s, json_incref(s->params));
    answer(f, f->cur, s, call, (struct answer){.kind = ANS_RESULT, .value = json_incref(params)});
    end(f, s);
}

/* A failed json_pack passed straight through. */
static void m_null(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_null);
    if (!s)
        return;
    expect_error(s, RPC_INTERNAL_ERROR, "Internal error", true, NULL);
    answer(f, f->cur, s, call, (struct answer){.kind = ANS_RESULT_NULL});
    end(f, s);
}

static void m_later(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_later);
    if (!s)
        return;
    if (f->ndeferred == f->deferred_cap) {
        size_t cap = f->deferred_cap ? 2 * f->deferred_cap : 16;
        struct deferred *d = realloc(f->deferred, cap * sizeof *d);
        FUZZ_CHECK(d != NULL);
        f->deferred = d;
        f->deferred_cap = cap;
    }
    f->deferred[f->ndeferred++] = (struct deferred){call, f->cur, s, params};
    end(f, s);
}

/* Answers deferred call i, in one of the ways a method can. */
static void answer_deferred(struct fuzz *f, size_t i) {
    struct deferred d = f->deferred[i];
    f->deferred[i] = f->deferred[--f->ndeferred];

    FUZZ_CHECK(rpc_call_peer(d.call) == (d.rec->abandoned ? NULL : &d.rec->peer));
    int seq = ++f->seq;
    struct answer a = {.kind = ANS_RESULT};
    switch (fuzz_rand(&f->rng) % 5) {
    case 0:
        expect_result(d.slot, json_integer(seq));
        a.value = json_integer(seq);
        break;
    case 1:
        expect_error(d.slot, RPC_INTERNAL_ERROR, "Internal error", true, NULL);
        a.kind = ANS_RESULT_NULL;
        break;
    case 2:
        expect_error(d.slot, RPC_TIMEOUT, "timed out", false, json_integer(seq));
        a = (struct answer){.kind = ANS_ERROR,
                            .code = RPC_TIMEOUT,
                            .text = dup_text("timed out"),
                            .value = json_integer(seq)};
        break;
    case 3:
        expect_error(d.slot, RPC_BUSY, NULL, false, NULL);
        a = (struct answer){.kind = ANS_ERROR, .code = RPC_BUSY};
        break;
    default:
        expect_result(d.slot, json_incref(d.slot->params));
        a.value = json_incref(d.params);
        break;
    }
    answer(f, d.rec, d.slot, d.call, a);
}

static void answer_all(struct fuzz *f) {
    while (f->ndeferred > 0)
        answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
}

/* Answers every deferred call, of any line (this one's included), from
 * inside a handler; the result is how many. */
static void m_flush(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_flush);
    if (!s)
        return;
    json_int_t n = (json_int_t)f->ndeferred;
    answer_all(f);
    expect_result(s, json_integer(n));
    answer(f, f->cur, s, call, (struct answer){.kind = ANS_RESULT, .value = json_integer(n)});
    end(f, s);
}

static void abandon(struct line_rec *r) {
    FUZZ_CHECK(r->returned && r->line && !r->abandoned && r->n_done == 0);
    rpc_line_abandon(r->line);
    r->abandoned = true;
    r->paused = false;
    r->line = NULL;
}

/* Every other client goes away, from inside a handler; with "self", its
 * own too when it is known (a resumed line): then the calls of its batch
 * not started yet never start. */
static void m_drop(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_drop);
    if (!s)
        return;
    struct line_rec *self = f->cur;
    bool also_self = json_is_true(json_object_get(params, "self"));
    json_int_t n = 0;
    for (size_t i = 0; i < f->nlines; i++) {
        if (f->lines[i].line && (&f->lines[i] != self || also_self)) {
            abandon(&f->lines[i]);
            n++;
        }
    }
    expect_result(s, json_integer(n));
    answer(f, self, s, call, (struct answer){.kind = ANS_RESULT, .value = json_integer(n)});
    end(f, s);
}

/* A JSON string of n 'x's: n + 2 bytes. */
static char *x_string(size_t n) {
    char *t = malloc(n + 3);
    FUZZ_CHECK(t != NULL);
    t[0] = '"';
    memset(t + 1, 'x', n);
    t[n + 1] = '"';
    t[n + 2] = '\0';
    return t;
}

/* The "size" param, within 0..MAX_SIZE; negative stays -1. */
static json_int_t size_param(json_t *params) {
    json_int_t size = json_integer_value(json_object_get(params, "size"));
    return size < 0 ? -1 : size > MAX_SIZE ? MAX_SIZE : size;
}

/* Answers with text it writes itself (rpc_call_result_text): "value" as
 * jansson writes it (17 digits), else a string of "size" x's; a negative
 * size is a text that could not be made (NULL). */
static void m_text(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_text);
    if (!s)
        return;
    json_t *value = json_object_get(params, "value");
    json_int_t size = size_param(params);
    char *text = NULL;
    if (value) {
        text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(text != NULL);
    } else if (size >= 0) {
        text = x_string((size_t)size);
    }
    if (text) {
        expect_result_text(s, text);
        answer(f, f->cur, s, call, (struct answer){.kind = ANS_TEXT, .text = text});
    } else {
        expect_error(s, RPC_INTERNAL_ERROR, "Internal error", true, NULL);
        answer(f, f->cur, s, call, (struct answer){.kind = ANS_TEXT_NULL});
    }
    end(f, s);
}

/* A method that knows its answer's size ("size") before building it: over
 * rpc_call_budget it refuses with rpc_call_too_big, else it answers a text
 * of that many bytes (which with the envelope around it may still be too
 * big). */
static void m_big(struct rpc_call *call, json_t *params, void *ctx) {
    struct fuzz *f = ctx;
    struct slot *s = begin(f, call, params, m_big);
    if (!s)
        return;
    json_int_t size = size_param(params);
    size_t need = size < 0 ? 0 : (size_t)size;
    size_t left = rpc_call_budget(call);
    FUZZ_CHECK(f->budget ? left <= f->budget : left == SIZE_MAX);
    s->budget_seen = true;
    s->budget_left = left;
    if (need > left) {
        char msg[80];
        snprintf(msg, sizeof msg, "Server busy: the answer would be about %zu bytes", need);
        expect_error(s, RPC_BUSY, msg, true,
                     json_pack("{s:I, s:I}", "need_bytes", (json_int_t)need, "budget_bytes",
                               (json_int_t)left));
        answer(f, f->cur, s, call, (struct answer){.kind = ANS_TOO_BIG, .need = need});
    } else {
        char *text = need >= 2 ? x_string(need - 2) : dup_text("0");
        expect_result_text(s, text);
        answer(f, f->cur, s, call, (struct answer){.kind = ANS_TEXT, .text = text});
    }
    end(f, s);
}

static void m_shadowed(struct rpc_call *call, json_t *params, void *ctx) {
    (void)call, (void)params, (void)ctx;
    fuzz_fail(__FILE__, __LINE__, "the second lookup was asked before the table");
}

/* ---- Pacing ---- */

/* The handlers of the first `started` calls of r have run, none after
 * (with a budget, some of those may have been refused instead). */
static void check_started(const struct fuzz *f, const struct line_rec *r, size_t started) {
    size_t k = 0;
    while (k < r->nhandlers && r->handlers[k] < started)
        k++;
    if (f->budget)
        FUZZ_CHECK(r->next_handler <= k);
    else
        FUZZ_CHECK(r->next_handler == k);
    /* The first call always runs: nothing is spent yet. */
    if (r->nhandlers > 0 && r->handlers[0] == 0 && started > 0)
        FUZZ_CHECK(r->next_handler > 0);
}

/* Answers from HDR_PACE, in turn; after two refusals in a row for a line,
 * yes, so that every line gets to its end. */
static bool on_pace(void *owner) {
    struct line_rec *r = owner;
    FUZZ_CHECK(r != NULL);
    struct fuzz *f = r->f;
    FUZZ_CHECK(f->pace_on && !f->replay && f->cur == r && !f->in_handler);
    /* Only between the calls of a batch: never before its first, never
     * after its last, never once its owner has gone. */
    FUZZ_CHECK(r->batch && !r->abandoned && !r->paused && r->n_done == 0);
    size_t started = r->pace_true + 1;
    FUZZ_CHECK(started < r->nslots);
    check_started(f, r, started);
    if (r->dispatched < started)
        r->dispatched = started;

    bool go = f->pace_bits >> (f->pace_asks++ % 8) & 1;
    if (r->pace_false_run >= 2)
        go = true;
    f->clock++;
    r->pace_last_false = !go;
    if (go) {
        r->pace_true++;
        r->pace_false_run = 0;
    } else {
        r->pace_false_run++;
    }
    return go;
}

/* ---- The driver ---- */

/* rpc_error_text with the first bytes of the text (size bytes) as its message. */
static void check_error_text(const uint8_t *data, const uint8_t *text, size_t size) {
    char msg[101];
    size_t n = 0;
    while (n < size && n < sizeof msg - 1 && text[n] != '\n' && text[n] != '\0')
        n++;
    memcpy(msg, text, n);
    msg[n] = '\0';
    int code = (int16_t)(data[HDR_SEED_LO] | data[HDR_SEED_HI] << 8);
    bool no_message = data[HDR_FLAGS] & FLAG_NO_MESSAGE;

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

/* What rpc_line_run (rpc_line_process) or rpc_line_resume returned for r. */
static void after_dispatch(struct fuzz *f, struct line_rec *r, struct rpc_line *line) {
    if (r->abandoned)
        return; /* by its own handler (drop self): line is not ours to look at */
    /* NULL exactly when done has run already. */
    if (!line) {
        FUZZ_CHECK(r->n_done == 1);
        return;
    }
    FUZZ_CHECK(r->n_done == 0);
    if (r->line)
        FUZZ_CHECK(line == r->line);
    r->line = line;
    r->paused = rpc_line_paused(line);
    size_t started = r->nslots;
    if (r->paused) {
        /* Only pace holds a batch back, and only when it said so last. */
        FUZZ_CHECK(f->pace_on && r->batch && r->pace_last_false);
        started = r->pace_true + 1;
        FUZZ_CHECK(started < r->nslots);
    } else {
        FUZZ_CHECK(r->pace_true == (f->pace_on && r->batch ? r->nslots - 1 : 0));
    }
    if (r->dispatched < started)
        r->dispatched = started;
    check_started(f, r, started);
}

static void run_line(struct fuzz *f, struct line_rec *r, const uint8_t *buf, size_t len) {
    r->buf = buf;
    r->len = len;
    expect_line(f, r, (const char *)buf, len);
    /* A block of its own size, so that ASan sees a read past the line. */
    char *copy = malloc(len ? len : 1);
    FUZZ_CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, buf, len);

    FUZZ_CHECK(f->cur == NULL);
    f->cur = r;
    f->clock++;
    struct rpc_line *line;
    if (f->run) {
        const struct rpc_owner o = {
            .done = on_done,
            .owner = r,
            .peer = &r->peer,
            .budget_bytes = f->budget,
            .pace = f->pace_on ? on_pace : NULL,
        };
        line = rpc_line_run(&f->srv, copy, len, &o);
    } else {
        line = rpc_line_process(&f->srv, copy, len, on_done, r, &r->peer);
    }
    f->cur = NULL;
    free(copy);
    r->returned = true;
    after_dispatch(f, r, line);
}

/* A paused line goes on, or (when HDR_PAUSED says it may) goes away. */
static void resume_or_abandon(struct fuzz *f, struct line_rec *r) {
    FUZZ_CHECK(r->paused && r->line != NULL && rpc_line_paused(r->line));
    if ((f->abandon_paused >> (r->index % 8) & 1) && fuzz_rand(&f->rng) % 2) {
        abandon(r);
        return;
    }
    r->paused = false;
    r->pace_last_false = false;
    FUZZ_CHECK(f->cur == NULL);
    f->cur = r;
    f->clock++;
    struct rpc_line *line = rpc_line_resume(r->line);
    f->cur = NULL;
    after_dispatch(f, r, line);
}

static void maybe_resume(struct fuzz *f) {
    for (size_t i = 0; i < f->nlines; i++)
        if (f->lines[i].paused && fuzz_rand(&f->rng) % 2)
            resume_or_abandon(f, &f->lines[i]);
}

/* Every pending line is paused exactly when the driver thinks so. */
static size_t check_paused(const struct fuzz *f) {
    size_t n = 0;
    for (size_t i = 0; i < f->nlines; i++) {
        const struct line_rec *r = &f->lines[i];
        FUZZ_CHECK(!r->paused || r->line != NULL);
        if (r->line)
            FUZZ_CHECK(rpc_line_paused(r->line) == r->paused);
        n += r->paused;
    }
    return n;
}

static struct line_rec *nth_paused(struct fuzz *f, size_t k) {
    for (size_t i = 0; i < f->nlines; i++)
        if (f->lines[i].paused && k-- == 0)
            return &f->lines[i];
    fuzz_fail(__FILE__, __LINE__, "no such paused line");
}

static void replay_done(void *owner, struct rpc_line *line, char *out) {
    struct fuzz *f = owner;
    FUZZ_CHECK(line != NULL && f->replay != NULL);
    FUZZ_CHECK(++f->replay_n_done == 1);
    f->replay_out = out;
}

/* A line done without a budget, through rpc_line_process with every
 * handler answering at once what it answered: the same text, however the
 * line was paced and whenever its calls were answered. */
static void replay_line(struct fuzz *f, struct line_rec *r) {
    char *copy = malloc(r->len ? r->len : 1);
    FUZZ_CHECK(copy != NULL);
    if (r->len > 0)
        memcpy(copy, r->buf, r->len);
    f->replay = r;
    f->replay_n_done = 0;
    f->replay_out = NULL;
    r->replay_next = 0;
    struct rpc_line *line =
        rpc_line_process(&f->srv, copy, r->len, replay_done, f, &f->replay_peer);
    f->replay = NULL;
    free(copy);
    FUZZ_CHECK(line == NULL && f->replay_n_done == 1);
    FUZZ_CHECK(r->replay_next == r->nhandlers);
    bool same = r->out ? f->replay_out && strcmp(r->out, f->replay_out) == 0 : !f->replay_out;
    if (!same) {
        fprintf(stderr, "line %zu answered\n  %s\nrpc_line_process answers\n  %s\n", r->index,
                r->out ? r->out : "(nothing)", f->replay_out ? f->replay_out : "(nothing)");
        fuzz_fail(__FILE__, __LINE__, "not what rpc_line_process gives");
    }
    free(f->replay_out);
    f->replay_out = NULL;
}

static void free_line(struct line_rec *r) {
    for (size_t i = 0; i < r->nslots; i++) {
        struct slot *s = &r->slots[i];
        json_decref(s->params);
        json_decref(s->result);
        json_decref(s->data);
        json_decref(s->ans.value);
        free(s->ans.text);
        free(s->message);
        free(s->idt);
        free(s->result_text);
    }
    free(r->slots);
    free(r->handlers);
    free(r->out);
    json_decref(r->doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < HDR_LEN)
        return 0;
    bool run = data[HDR_FLAGS] & FLAG_RUN;
    size_t hdr = run ? HDR_RUN_LEN : HDR_LEN;
    if (size < hdr)
        return 0;
    check_error_text(data, data + hdr, size - hdr);

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
    f->run = run;
    if (run) {
        f->budget = (size_t)(data[HDR_BUDGET_LO] | (data[HDR_BUDGET_HI] & 15) << 8);
        f->pace_on = !(data[HDR_BUDGET_HI] & BUDGET_NO_PACE);
        f->pace_bits = data[HDR_PACE];
        f->abandon_paused = data[HDR_PAUSED];
    }

    size_t off = hdr;
    while (off < size && f->nlines < MAX_LINES) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t len = nl ? (size_t)(nl - (data + off)) : size - off;
        struct line_rec *r = &f->lines[f->nlines];
        r->f = f;
        r->index = f->nlines;
        r->to_abandon = data[HDR_ABANDON] >> (f->nlines % 8) & 1;
        f->nlines++;
        run_line(f, r, data + off, len);
        /* Some answers, some clients gone, some paused lines resumed,
         * before the next line. */
        for (unsigned k = fuzz_rand(&f->rng) % 4; k > 0 && f->ndeferred > 0; k--)
            answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
        maybe_abandon(f);
        check_paused(f);
        maybe_resume(f);
        check_paused(f);
        off += len + 1;
    }
    for (;;) {
        maybe_abandon(f);
        size_t npaused = check_paused(f);
        if (npaused > 0 && (f->ndeferred == 0 || fuzz_rand(&f->rng) % 2))
            resume_or_abandon(f, nth_paused(f, fuzz_rand(&f->rng) % npaused));
        else if (f->ndeferred > 0)
            answer_deferred(f, fuzz_rand(&f->rng) % f->ndeferred);
        else
            break;
    }

    /* Every line answered exactly once, or abandoned and never answered;
     * without a budget, as rpc_line_process answers it. */
    for (size_t i = 0; i < f->nlines; i++) {
        struct line_rec *r = &f->lines[i];
        FUZZ_CHECK(r->line == NULL && !r->paused);
        FUZZ_CHECK(r->n_done == (r->abandoned ? 0 : 1));
        if (r->n_done == 1 && f->budget == 0)
            replay_line(f, r);
    }
    for (size_t i = 0; i < f->nlines; i++)
        free_line(&f->lines[i]);
    free(f->deferred);
    free(f);
    return 0;
}
