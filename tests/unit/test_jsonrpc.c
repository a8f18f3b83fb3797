/*
 * test_jsonrpc: the envelope against a tiny method table. Synchronous cases
 * are a table of input line and exact output line (NULL: nothing written);
 * asynchronous answers, batch ordering and abandon have their own tests, as
 * have sessions (access decisions) against a fake access policy.
 */
#include "jsonrpc.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Calls held by "later" until a test answers them. */
static struct rpc_call *held[16];
static size_t n_held;

static void m_echo(struct rpc_call *call, json_t *params, void *ctx) {
    (void)ctx;
    rpc_call_result(call, json_incref(params));
}

static void m_sum(struct rpc_call *call, json_t *params, void *ctx) {
    (void)ctx;
    json_t *a = json_object_get(params, "a"), *b = json_object_get(params, "b");
    if (!json_is_number(a) || !json_is_number(b)) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"a\" and \"b\" must be numbers",
                       NULL);
        return;
    }
    rpc_call_result(call, json_real(json_number_value(a) + json_number_value(b)));
}

static void m_fail(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    rpc_call_error(call, -32000, "failed as asked", json_pack("{s:s}", "why", "asked"));
}

static void m_failf(struct rpc_call *call, json_t *params, void *ctx) {
    (void)ctx;
    rpc_call_errorf(call, RPC_OUT_OF_RANGE, NULL, "setpoint %.3f THz out of range",
                    json_number_value(json_object_get(params, "thz")));
}

static void m_default_message(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    rpc_call_error(call, RPC_INTERNAL_ERROR, NULL, NULL);
}

static void m_null(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    rpc_call_result(call, NULL);
}

static void m_whoami(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params;
    rpc_call_result(call, json_pack("{s:s,s:s,s:s}", "method", rpc_call_method(call), "peer",
                                    (const char *)rpc_call_peer(call), "ctx", (const char *)ctx));
}

static void m_later(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    ck_assert_uint_lt(n_held, sizeof held / sizeof held[0]);
    held[n_held++] = call;
}

static const char *const sum_params[] = {"a", "b", NULL};
static const char *const later_params[] = {"tag", NULL};

static const struct rpc_method methods[] = {
    {"echo", m_echo, NULL, false},
    {"sum", m_sum, sum_params, false},
    {"fail", m_fail, NULL, false},
    {"failf", m_failf, NULL, false},
    {"default_message", m_default_message, NULL, false},
    {"null", m_null, NULL, false},
    {"whoami", m_whoami, NULL, false},
    {"later", m_later, later_params, false},
};

static void m_pong(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    rpc_call_result(call, json_string("pong"));
}

static const struct rpc_method sim_ping = {"sim.ping", m_pong, NULL, false};

static const struct rpc_method *find_sim(void *ctx, const char *name) {
    (void)ctx;
    return strcmp(name, "sim.ping") == 0 ? &sim_ping : NULL;
}

static char ctx_name[] = "server-ctx";
static char peer_name[] = "peer-1";

static const struct rpc_server server = {
    .methods = methods,
    .nmethods = sizeof methods / sizeof methods[0],
    .ctx = ctx_name,
    .max_batch = 4,
    .find = find_sim,
};

/* What done reported for one line. */
struct outcome {
    int n_done;
    struct rpc_line *line;
    char *out;
};

static void on_done(void *owner, struct rpc_line *line, char *out) {
    struct outcome *o = owner;
    o->n_done++;
    o->line = line;
    o->out = out;
    /* One line on the wire: the answer itself never holds a newline. */
    ck_assert_ptr_null(out ? strchr(out, '\n') : NULL);
}

static struct rpc_line *process(const char *in, struct outcome *o) {
    memset(o, 0, sizeof *o);
    return rpc_line_process(&server, in, strlen(in), on_done, o, peer_name);
}

#define E(code, msg)                                                                               \
    "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":" #code ",\"message\":\"" msg "\"}}"
#define INVALID(msg) E(-32600, "Invalid Request: " msg)
#define NOT_OBJECT INVALID("not an object")

struct row {
    const char *label;
    const char *in;
    const char *want; /* NULL: nothing is written */
};

static const struct row rows[] = {
    /* Plain requests and ids. */
    {"request with named params",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"x\":1},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"x\":1}}"},
    {"members in any order",
     "{\"id\":7,\"params\":{\"b\":2,\"a\":1},\"method\":\"echo\",\"jsonrpc\":\"2.0\"}",
     "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"b\":2,\"a\":1}}"},
    {"id null is a request", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":null}",
     "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}"},
    {"string id", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"a-\\u00e9\"}",
     "{\"jsonrpc\":\"2.0\",\"id\":\"a-\xc3\xa9\",\"result\":{}}"},
    {"negative integer id", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":-9223372036854775808}",
     "{\"jsonrpc\":\"2.0\",\"id\":-9223372036854775808,\"result\":{}}"},
    {"real id 1.5", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1.5}",
     "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"result\":{}}"},
    {"real id 0.1 not widened", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":0.1}",
     "{\"jsonrpc\":\"2.0\",\"id\":0.1,\"result\":{}}"},
    {"real id 1.0 stays real", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1.0}",
     "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"result\":{}}"},
    {"real id 0.30000000000000004",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":0.30000000000000004}",
     "{\"jsonrpc\":\"2.0\",\"id\":0.30000000000000004,\"result\":{}}"},
    /* Number ids come back exactly as written, not as a parsed double. */
    {"real id 1e-400 (underflows a double)",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1e-400}",
     "{\"jsonrpc\":\"2.0\",\"id\":1e-400,\"result\":{}}"},
    {"integer id -0", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":-0}",
     "{\"jsonrpc\":\"2.0\",\"id\":-0,\"result\":{}}"},
    {"real id 1.50 keeps its zero", "{\"id\" : 1.50 ,\"jsonrpc\":\"2.0\",\"method\":\"echo\"}",
     "{\"jsonrpc\":\"2.0\",\"id\":1.50,\"result\":{}}"},
    {"real id 1E2", "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":1E2}",
     "{\"jsonrpc\":\"2.0\",\"id\":1E2,\"error\":{\"code\":-32601,\"message\":\"Method not "
     "found: nope\"}}"},
    {"id in params is not the id",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"id\":2.50},\"id\":-0.0}",
     "{\"jsonrpc\":\"2.0\",\"id\":-0.0,\"result\":{\"id\":2.5}}"},
    {"batch ids as written",
     "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1e-400},1,"
     "{\"jsonrpc\":\"2.0\",\"params\":[],\"method\":\"echo\",\"id\":-0},"
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"s\"}]",
     "[{\"jsonrpc\":\"2.0\",\"id\":1e-400,\"result\":{}},"
     "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid "
     "Request: not an object\"}},"
     "{\"jsonrpc\":\"2.0\",\"id\":-0,\"result\":{}},"
     "{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"result\":{}}]"},
    {"a real near DBL_MAX reads back (17 digits, not 15 rounded past it)",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"x\":1.7976931348623157e308},"
     "\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"x\":1.7976931348623157e308}}"},
    {"missing params is an empty object", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":2}",
     "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}"},
    {"empty positional params, no names",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[],\"id\":3}",
     "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}"},

    /* Notifications: never answered, whatever happens. */
    {"notification", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"x\":1}}", NULL},
    {"notification to unknown method", "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}", NULL},
    {"notification with too many params",
     "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2,3]}", NULL},
    {"notification that fails", "{\"jsonrpc\":\"2.0\",\"method\":\"fail\"}", NULL},
    {"notification with null result", "{\"jsonrpc\":\"2.0\",\"method\":\"null\"}", NULL},

    /* Parse errors, and a good line right after one. */
    {"invalid JSON", "{\"jsonrpc\":\"2.0\",\"method\"",
     E(-32700, "Parse error: the JSON text ends before it is complete")},
    {"good line after a parse error", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":4}",
     "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}"},
    {"trailing garbage", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":4} x",
     E(-32700, "Parse error: more text after the JSON value, near column 42 (one request or "
               "one batch per line)")},
    {"two texts on one line", "{} {}",
     E(-32700, "Parse error: more text after the JSON value, near column 4 (one request or "
               "one batch per line)")},
    {"bare word", "hello", E(-32700, "Parse error: invalid JSON near column 5")},
    {"invalid UTF-8", "\"\xff\"", E(-32700, "Parse error: invalid UTF-8 near column 1")},

    /* Valid JSON that is not a request. */
    {"a string", "\"hello\"", NOT_OBJECT},
    {"a number", "1", NOT_OBJECT},
    {"null", "null", NOT_OBJECT},
    {"method not a string", "{\"method\":1}", INVALID("\\\"jsonrpc\\\" must be \\\"2.0\\\"")},
    {"method a number, jsonrpc fine", "{\"jsonrpc\":\"2.0\",\"method\":1,\"id\":1}",
     INVALID("\\\"method\\\" must be a string")},
    {"method missing", "{\"jsonrpc\":\"2.0\",\"id\":1}",
     INVALID("\\\"method\\\" must be a string")},
    {"params a number", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":5,\"id\":1}",
     INVALID("\\\"params\\\" must be an array or an object")},
    {"params a string", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":\"x\"}",
     INVALID("\\\"params\\\" must be an array or an object")},
    {"params null", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":null,\"id\":1}",
     INVALID("\\\"params\\\" must be an array or an object")},
    {"id true", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":true}",
     INVALID("\\\"id\\\" must be a string, a number or null")},
    {"id object", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":{}}",
     INVALID("\\\"id\\\" must be a string, a number or null")},
    {"id array", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":[1]}",
     INVALID("\\\"id\\\" must be a string, a number or null")},
    {"jsonrpc 1.0", "{\"jsonrpc\":\"1.0\",\"method\":\"echo\",\"id\":1}",
     INVALID("\\\"jsonrpc\\\" must be \\\"2.0\\\"")},
    {"jsonrpc a number", "{\"jsonrpc\":2.0,\"method\":\"echo\",\"id\":1}",
     INVALID("\\\"jsonrpc\\\" must be \\\"2.0\\\"")},
    {"jsonrpc missing", "{\"method\":\"echo\",\"id\":1}",
     INVALID("\\\"jsonrpc\\\" must be \\\"2.0\\\"")},
    {"jsonrpc missing, no id: still answered", "{\"method\":\"echo\"}",
     INVALID("\\\"jsonrpc\\\" must be \\\"2.0\\\"")},
    {"extra member", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1,\"param\":{}}",
     INVALID("unknown member \\\"param\\\"")},
    {"huge integer id",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":123456789012345678901234567890}",
     INVALID("a number too large to carry exactly, near column 68")},
    {"huge negative integer id",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":-123456789012345678901234567890}",
     INVALID("a number too large to carry exactly, near column 69")},
    {"real id overflow", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1e400}",
     INVALID("a number too large to carry exactly, near column 43")},
    {"\\u0000 in a string",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"s\":\"a\\u0000\"},\"id\":1}",
     INVALID("\\\\u0000 in a string, near column 56")},
    {"duplicate member", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1,\"id\":2}",
     INVALID("a member appears twice in one object, near column 44")},

    /* Batches. */
    {"empty batch", "[]", INVALID("empty batch")},
    {"batch of one non-request", "[1]", "[" NOT_OBJECT "]"},
    {"batch of three non-requests", "[1,2,3]", "[" NOT_OBJECT "," NOT_OBJECT "," NOT_OBJECT "]"},
    {"nested empty batch", "[[]]", "[" NOT_OBJECT "]"},
    {"batch of notifications",
     "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}]", NULL},
    {"mixed batch",
     "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"a\":1},\"id\":\"1\"},"
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},"
     "{\"foo\":\"boo\"},"
     "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":\"5\"}]",
     "[{\"jsonrpc\":\"2.0\",\"id\":\"1\",\"result\":{\"a\":1}}," INVALID(
         "\\\"jsonrpc\\\" must be \\\"2.0\\\"") ","
                                                "{\"jsonrpc\":\"2.0\",\"id\":\"5\",\"error\":{"
                                                "\"code\":-32601,\"message\":\"Method not found: "
                                                "nope\"}}]"},
    {"batch at max_batch",
     "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2],\"id\":1},1,2,3]",
     "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":3.0}," NOT_OBJECT "," NOT_OBJECT "," NOT_OBJECT
     "]"},
    {"batch with id null and a notification",
     "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},{\"jsonrpc\":\"2.0\",\"method\":\"fail\",\"id\":"
     "null}]",
     "[{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"failed as "
     "asked\",\"data\":{\"why\":\"asked\"}}}]"},
    {"batch over max_batch", "[1,2,3,4,5]", INVALID("batch too large (5 > 4)")},
    {"parse error in a batch", "[1,",
     E(-32700, "Parse error: the JSON text ends before it is complete")},

    /* Method lookup and params. */
    {"unknown method", "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"Method not found: "
     "nope\"}}"},
    {"method names are case-sensitive", "{\"jsonrpc\":\"2.0\",\"method\":\"Echo\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"Method not found: "
     "Echo\"}}"},
    {"empty method name", "{\"jsonrpc\":\"2.0\",\"method\":\"\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"Method not found: "
     "\"}}"},
    {"second lookup", "{\"jsonrpc\":\"2.0\",\"method\":\"sim.ping\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"pong\"}"},
    {"second lookup misses", "{\"jsonrpc\":\"2.0\",\"method\":\"sim.pong\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"Method not found: "
     "sim.pong\"}}"},
    {"positional params named",
     "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2.5],\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":3.5}"},
    {"fewer positional params", "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32602,\"message\":\"Invalid params: "
     "\\\"a\\\" and \\\"b\\\" must be numbers\"}}"},
    {"too many positional params",
     "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2,3],\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32602,\"message\":\"Invalid params: too "
     "many params (max 2)\"}}"},
    {"positional params without names",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[1],\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32602,\"message\":\"Invalid params: "
     "positional params not accepted, use an object\"}}"},
    {"named params passed as they are",
     "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":{\"b\":1,\"a\":2},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":3.0}"},

    /* What handlers answer. */
    {"error with data", "{\"jsonrpc\":\"2.0\",\"method\":\"fail\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,\"message\":\"failed as "
     "asked\",\"data\":{\"why\":\"asked\"}}}"},
    {"printf-style error",
     "{\"jsonrpc\":\"2.0\",\"method\":\"failf\",\"params\":{\"thz\":812.5},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32013,\"message\":\"setpoint 812.500 THz "
     "out of range\"}}"},
    {"error with the standard message",
     "{\"jsonrpc\":\"2.0\",\"method\":\"default_message\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"Internal error\"}}"},
    {"NULL result is an internal error", "{\"jsonrpc\":\"2.0\",\"method\":\"null\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"Internal error: no "
     "result\"}}"},
    {"method, peer and ctx", "{\"jsonrpc\":\"2.0\",\"method\":\"whoami\",\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"method\":\"whoami\",\"peer\":\"peer-1\",\"ctx\":"
     "\"server-ctx\"}}"},
    {"unicode preserved",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"s\":\"h\xc3\xa9llo \xe2\x9c\x93 "
     "\xf0\x9d\x84\x9e\",\"\xc3\xa9\":\"\\u00e9\\ud834\\udd1e\"},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"s\":\"h\xc3\xa9llo \xe2\x9c\x93 "
     "\xf0\x9d\x84\x9e\",\"\xc3\xa9\":\"\xc3\xa9\xf0\x9d\x84\x9e\"}}"},
    {"newline in a string stays escaped",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"s\":\"a\\nb\\u2028\"},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"s\":\"a\\nb\xe2\x80\xa8\"}}"},
    /* 15 significant digits: 1 kHz at 800 THz survives, and no noise digits. */
    {"1 kHz at 800 THz survives",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"thz\":800.000000001},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"thz\":800.000000001}}"},
    {"no noise digits",
     "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"ms\":79.966},\"id\":1}",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"ms\":79.966}}"},
};

START_TEST(test_rows) {
    const struct row *r = &rows[_i];
    struct outcome o;
    struct rpc_line *line = process(r->in, &o);
    /* Every method here answers at once: done has run, the line is gone. */
    ck_assert_msg(line == NULL, "%s: line still pending", r->label);
    ck_assert_msg(o.n_done == 1, "%s: done called %d times", r->label, o.n_done);
    ck_assert_msg(o.line != NULL, "%s: done without its line", r->label);
    ck_assert_msg(r->want ? o.out && strcmp(o.out, r->want) == 0 : o.out == NULL,
                  "%s:\n  in   %s\n  got  %s\n  want %s", r->label, r->in,
                  o.out ? o.out : "(nothing)", r->want ? r->want : "(nothing)");
    free(o.out);
}
END_TEST

START_TEST(test_nul_byte_in_line) {
    /* A raw NUL is not JSON: a parse error, not a truncated request. */
    static const char in[] = "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}\0x";
    struct outcome o;
    memset(&o, 0, sizeof o);
    ck_assert_ptr_null(rpc_line_process(&server, in, sizeof in - 1, on_done, &o, NULL));
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_str_eq(o.out,
                     E(-32700, "Parse error: more text after the JSON value, near column 41 (one "
                               "request or one batch per line)"));
    free(o.out);
}
END_TEST

START_TEST(test_error_text) {
    char *s = rpc_error_text(RPC_INVALID_REQUEST, "Invalid Request: line longer than 65536 bytes");
    ck_assert_str_eq(s, INVALID("line longer than 65536 bytes"));
    free(s);
    s = rpc_error_text(RPC_BUSY, NULL);
    ck_assert_str_eq(s, E(-32005, "Server error"));
    free(s);
    s = rpc_error_text(RPC_INVALID_REQUEST, NULL);
    ck_assert_str_eq(s, E(-32600, "Invalid Request"));
    free(s);
    /* Text cut inside a character is still written, with the bytes masked. */
    s = rpc_error_text(RPC_PARSE_ERROR, "Parse error: near 'ab\xc3'");
    ck_assert_str_eq(s, E(-32700, "Parse error: near 'ab?'"));
    free(s);
}
END_TEST

START_TEST(test_deep_nesting) {
    /* Valid JSON nested past jansson's depth limit: not a request we can
     * read, so -32600, not a parse error. */
    enum { DEPTH = 3000 };
    char *in = malloc(2 * DEPTH);
    ck_assert_ptr_nonnull(in);
    memset(in, '[', DEPTH);
    memset(in + DEPTH, ']', DEPTH);
    struct outcome o;
    memset(&o, 0, sizeof o);
    ck_assert_ptr_null(rpc_line_process(&server, in, 2 * DEPTH, on_done, &o, NULL));
    free(in);
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_str_eq(o.out, INVALID("nested deeper than 2048 levels"));
    free(o.out);
}
END_TEST

static void answer_later(size_t i, int value) {
    char tag[16];
    snprintf(tag, sizeof tag, "r%d", value);
    rpc_call_result(held[i], json_string(tag));
    held[i] = NULL;
}

START_TEST(test_async_single) {
    struct outcome o;
    n_held = 0;
    struct rpc_line *line =
        process("{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"params\":[\"x\"],\"id\":9}", &o);
    ck_assert_ptr_nonnull(line);
    ck_assert_int_eq(o.n_done, 0);
    ck_assert_uint_eq(n_held, 1);
    ck_assert_str_eq(rpc_call_method(held[0]), "later");
    ck_assert_str_eq(rpc_call_peer(held[0]), "peer-1");
    answer_later(0, 1);
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_ptr_eq(o.line, line);
    ck_assert_str_eq(o.out, "{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":\"r1\"}");
    free(o.out);
}
END_TEST

START_TEST(test_async_notification) {
    /* A notification handled later still holds the line, and its answer is
     * dropped: done reports nothing to write. */
    struct outcome o;
    n_held = 0;
    struct rpc_line *line = process("{\"jsonrpc\":\"2.0\",\"method\":\"later\"}", &o);
    ck_assert_ptr_nonnull(line);
    ck_assert_int_eq(o.n_done, 0);
    rpc_call_error(held[0], RPC_TIMEOUT, "timed out", json_integer(5));
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_ptr_null(o.out);
}
END_TEST

START_TEST(test_async_batch_order) {
    /* Answers come back 4, 2, 1; the batch still answers in request order,
     * and only once the last call is answered. */
    struct outcome o;
    n_held = 0;
    struct rpc_line *line = process("[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":2},"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":3},"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":4}]",
                                    &o);
    ck_assert_ptr_nonnull(line);
    ck_assert_uint_eq(n_held, 3);
    answer_later(2, 4);
    ck_assert_int_eq(o.n_done, 0);
    answer_later(1, 2);
    ck_assert_int_eq(o.n_done, 0);
    answer_later(0, 1);
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_ptr_eq(o.line, line);
    ck_assert_str_eq(o.out, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"r1\"},"
                            "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":\"r2\"},"
                            "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}},"
                            "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":\"r4\"}]");
    free(o.out);
}
END_TEST

START_TEST(test_async_batch_notification_last) {
    /* The last call to finish is a notification: the line waits for it,
     * then writes the other answers without a gap. */
    struct outcome o;
    n_held = 0;
    struct rpc_line *line = process("[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"later\"},"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":3}]",
                                    &o);
    ck_assert_ptr_nonnull(line);
    answer_later(2, 3);
    answer_later(0, 1);
    ck_assert_int_eq(o.n_done, 0);
    answer_later(1, 2);
    ck_assert_int_eq(o.n_done, 1);
    ck_assert_str_eq(o.out, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"r1\"},"
                            "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":\"r3\"}]");
    free(o.out);
}
END_TEST

START_TEST(test_abandon) {
    /* The owner goes away with calls in flight: they still complete, their
     * answers are freed quietly (ASan/valgrind check), done never runs. */
    struct outcome o;
    n_held = 0;
    struct rpc_line *line =
        process("[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
                "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":2},"
                "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"params\":{\"k\":[1,2]},\"id\":3}]",
                &o);
    ck_assert_ptr_nonnull(line);
    answer_later(0, 1);
    rpc_line_abandon(line);
    ck_assert_ptr_null(rpc_call_peer(held[1]));
    ck_assert_str_eq(rpc_call_method(held[1]), "later");
    rpc_call_error(held[1], RPC_TIMEOUT, "timed out", json_pack("{s:i}", "after_ms", 5));
    ck_assert_int_eq(o.n_done, 0);
}
END_TEST

START_TEST(test_abandon_before_any_answer) {
    struct outcome o;
    n_held = 0;
    struct rpc_line *line =
        process("{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"params\":[\"x\"],\"id\":1}", &o);
    ck_assert_ptr_nonnull(line);
    rpc_line_abandon(line);
    rpc_line_abandon(NULL);
    answer_later(0, 1);
    ck_assert_int_eq(o.n_done, 0);
}
END_TEST

#ifndef NDEBUG
START_TEST(test_double_answer_asserts) {
    /* The line is still alive (the second call is pending), so a second
     * answer to the first call is caught by the invariant check. */
    struct outcome o;
    n_held = 0;
    process("[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
            "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":2}]",
            &o);
    struct rpc_call *call = held[0];
    rpc_call_result(call, json_true());
    rpc_call_result(call, json_true());
}
END_TEST
#endif

/* ---- answer budget and pacing (what bounds one client's cost) ---- */

static bool pace_allow; /* what the pace callback answers */
static int pace_asked;

static bool pace(void *owner) {
    (void)owner;
    pace_asked++;
    return pace_allow;
}

static struct rpc_line *run(const char *in, struct outcome *o, size_t budget) {
    const struct rpc_owner ow = {
        .done = on_done, .owner = o, .peer = peer_name, .budget_bytes = budget, .pace = pace};
    memset(o, 0, sizeof *o);
    return rpc_line_run(&server, in, strlen(in), &ow);
}

#define ECHO_X(id)                                                                                 \
    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"x\":\"xxxxxxxxxx\"},\"id\":" #id "}"

START_TEST(test_budget_refuses_rest_of_batch) {
    /* Each echo answer is 54 bytes: a budget of 100 takes two, the rest
     * of the batch is refused (-32005) without running. */
    struct outcome o;
    pace_allow = true;
    ck_assert_ptr_null(run("[" ECHO_X(1) "," ECHO_X(2) "," ECHO_X(3) "," ECHO_X(4) "]", &o, 100));
    ck_assert_int_eq(o.n_done, 1);
    json_t *a = json_loads(o.out, 0, NULL);
    ck_assert_uint_eq(json_array_size(a), 4);
    ck_assert_ptr_nonnull(json_object_get(json_array_get(a, 0), "result"));
    for (size_t i = 2; i < 4; i++) {
        json_t *e = json_object_get(json_array_get(a, i), "error");
        ck_assert_int_eq(json_integer_value(json_object_get(e, "code")), RPC_BUSY);
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e, "message")),
                                     "limits.write_queue_max_bytes"));
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(a, i), "id")),
                         (json_int_t)i + 1);
    }
    json_decref(a);
    free(o.out);
}
END_TEST

static void m_big(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    /* A method that can tell its size refuses before building. */
    if (rpc_call_budget(call) < 1000) {
        rpc_call_too_big(call, 1000);
        return;
    }
    rpc_call_result(call, json_string("big enough"));
}

static void m_huge(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    char buf[300];
    memset(buf, 'h', sizeof buf - 1);
    buf[sizeof buf - 1] = '\0';
    rpc_call_result(call, json_string(buf)); /* cannot tell in advance */
}

static const struct rpc_method big_methods[] = {{"big", m_big, NULL, false},
                                                {"huge", m_huge, NULL, false}};
static const struct rpc_server big_server = {
    .methods = big_methods, .nmethods = 2, .max_batch = 10};

START_TEST(test_budget_single_calls) {
    struct outcome o;
    const struct rpc_owner ow = {.done = on_done, .owner = &o, .budget_bytes = 200};
    static const char big[] = "{\"jsonrpc\":\"2.0\",\"method\":\"big\",\"id\":1}";
    static const char huge[] = "{\"jsonrpc\":\"2.0\",\"method\":\"huge\",\"id\":2}";

    memset(&o, 0, sizeof o);
    rpc_line_run(&big_server, big, sizeof big - 1, &ow);
    ck_assert_ptr_nonnull(strstr(o.out, "\"code\":-32005"));
    ck_assert_ptr_nonnull(strstr(o.out, "\"need_bytes\":1000"));
    free(o.out);
    /* Built, found too big, dropped: the client gets the error, not 300 h. */
    memset(&o, 0, sizeof o);
    rpc_line_run(&big_server, huge, sizeof huge - 1, &ow);
    ck_assert_ptr_nonnull(strstr(o.out, "\"id\":2,\"error\":{\"code\":-32005"));
    ck_assert_ptr_null(strstr(o.out, "hhhh"));
    free(o.out);
    /* No budget: no limit. */
    memset(&o, 0, sizeof o);
    rpc_line_process(&big_server, huge, sizeof huge - 1, on_done, &o, NULL);
    ck_assert_ptr_nonnull(strstr(o.out, "hhhh"));
    free(o.out);
}
END_TEST

START_TEST(test_pace_holds_and_resumes) {
    /* The pace callback is asked between calls; false holds the rest until
     * rpc_line_resume, and the answer is the same as in one go. */
    struct outcome o;
    pace_allow = false;
    pace_asked = 0;
    struct rpc_line *line = run("[" ECHO_X(1) "," ECHO_X(2) "," ECHO_X(3) "]", &o, 0);
    ck_assert_ptr_nonnull(line);
    ck_assert(rpc_line_paused(line));
    ck_assert_int_eq(pace_asked, 1);
    ck_assert_int_eq(o.n_done, 0);
    line = rpc_line_resume(line); /* still not allowed: one more call, then held */
    ck_assert_ptr_nonnull(line);
    ck_assert(rpc_line_paused(line));
    ck_assert_int_eq(pace_asked, 2);
    pace_allow = true;
    ck_assert_ptr_null(rpc_line_resume(line));
    ck_assert_int_eq(o.n_done, 1);
    json_t *a = json_loads(o.out, 0, NULL);
    ck_assert_uint_eq(json_array_size(a), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(a, i), "id")),
                         (json_int_t)i + 1);
    json_decref(a);
    free(o.out);
}
END_TEST

START_TEST(test_abandon_paused) {
    /* The owner goes away while the line is held: the calls not started
     * never start, one in flight still completes, nothing leaks (ASan). */
    struct outcome o;
    n_held = 0;
    pace_allow = false;
    struct rpc_line *line =
        run("[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}," ECHO_X(2) "]", &o, 0);
    ck_assert(rpc_line_paused(line));
    rpc_line_abandon(line);
    ck_assert_uint_eq(n_held, 1);
    answer_later(0, 1);
    ck_assert_int_eq(o.n_done, 0);
    /* Held with nothing in flight: abandoning frees it at once. */
    line = run("[" ECHO_X(1) "," ECHO_X(2) "]", &o, 0);
    rpc_line_abandon(line);
    ck_assert_int_eq(o.n_done, 0);
}
END_TEST

/* ---- sessions: a connection's access state ---- */

/* The fake access policy. write_net is the first byte of the one /8 that
 * may write, read at every call as the daemon reads access.write_from (a
 * test changes it as a reload would). blocked_s > 0 makes every login
 * refused unchecked for that long. */
static unsigned char write_net = 10;
static double blocked_s;
static int token_checks, login_failures;
static char peers_marker; /* stands for the server's peers table */
#define PEERS ((struct peers *)(void *)&peers_marker)
#define TOKEN "correct horse battery staple"

static bool fake_write_from(void *ctx, const struct sockaddr *addr) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)addr;

    (void)ctx;
    return addr->sa_family == AF_INET && (ntohl(a->sin_addr.s_addr) >> 24) == (unsigned)write_net;
}

static bool fake_token_ok(void *ctx, const char *given, size_t len) {
    (void)ctx;
    token_checks++;
    return len == strlen(TOKEN) && memcmp(given, TOKEN, len) == 0;
}

static bool fake_login_blocked(void *ctx, struct peers *peers, const struct sockaddr *addr,
                               double *wait_s) {
    (void)ctx, (void)addr;
    ck_assert_ptr_eq(peers, PEERS); /* the table the session was given */
    *wait_s = blocked_s;
    return blocked_s > 0;
}

static void fake_login_failed(void *ctx, struct peers *peers, const struct sockaddr *addr) {
    (void)ctx, (void)addr;
    ck_assert_ptr_eq(peers, PEERS);
    login_failures++;
}

/* A write method as the daemon's are: the session says whether it may. */
static void m_write(struct rpc_call *call, json_t *params, void *ctx) {
    (void)params, (void)ctx;
    if (rpc_call_may_write(call))
        rpc_call_result(call, json_string("written"));
}

/* The auth method as the daemon's is, less its params checks. */
static void m_auth(struct rpc_call *call, json_t *params, void *ctx) {
    json_t *t = json_object_get(params, "token");

    (void)ctx;
    rpc_call_login(call, json_string_value(t), json_string_length(t));
}

static const char *const auth_params[] = {"token", NULL};
static const struct rpc_method access_methods[] = {{"write", m_write, NULL, false},
                                                   {"auth", m_auth, auth_params, false},
                                                   {"later", m_later, later_params, false}};

#define ACCESS_SERVER(token)                                                                       \
    {                                                                                              \
        .methods = access_methods, .nmethods = 3, .max_batch = 10,                                 \
        .access = {.write_from = fake_write_from,                                                  \
                   .token_ok = (token),                                                            \
                   .token_path = "/run/wavemeterd/cookie",                                         \
                   .login_blocked = fake_login_blocked,                                            \
                   .login_failed = fake_login_failed},                                             \
    }
static const struct rpc_server open_server = ACCESS_SERVER(NULL);
static const struct rpc_server token_server = ACCESS_SERVER(fake_token_ok);

/* How sessions asked their connection to end. */
static int n_ended;
static char ended_why[64];

static void on_end(void *owner, const char *why) {
    (void)owner;
    n_ended++;
    snprintf(ended_why, sizeof ended_why, "%s", why);
}

static struct rpc_session *session_from(const struct rpc_server *srv, const char *ip) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(4000)};
    char name[64];

    ck_assert_int_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    snprintf(name, sizeof name, "%s:4000", ip);
    struct rpc_session *s =
        rpc_session_create(srv, (const struct sockaddr *)&a, name, PEERS, on_end, NULL);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* One call on session s; returns its answer (malloc'd). */
static char *call_on(const struct rpc_server *srv, struct rpc_session *s, const char *method,
                     const char *params) {
    struct outcome o;
    const struct rpc_owner ow = {.done = on_done, .owner = &o, .session = s};
    char in[256];

    snprintf(in, sizeof in, "{\"jsonrpc\":\"2.0\",\"method\":\"%s\"%s%s,\"id\":1}", method,
             params ? ",\"params\":" : "", params ? params : "");
    memset(&o, 0, sizeof o);
    ck_assert_ptr_null(rpc_line_run(srv, in, strlen(in), &ow));
    ck_assert_int_eq(o.n_done, 1);
    return o.out;
}

#define ANSWER(result) "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":" result "}"
#define REFUSED(code, msg)                                                                         \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":" #code ",\"message\":\"" msg "\"}}"
#define NOT_FROM(who)                                                                              \
    REFUSED(-32001,                                                                                \
            "Unauthorized: " who " may read but not change anything (see access.write_from)")
#define WRONG_TOKEN REFUSED(-32001, "Unauthorized: wrong token")
#define WITHDRAWN                                                                                  \
    REFUSED(-32001, "Unauthorized: wrong token; this connection's earlier login is withdrawn")
#define RIGHT "{\"token\":\"" TOKEN "\"}"
#define BAD "{\"token\":\"guess\"}"

static void expect(const struct rpc_server *srv, struct rpc_session *s, const char *method,
                   const char *params, const char *want) {
    char *out = call_on(srv, s, method, params);
    ck_assert_str_eq(out, want);
    free(out);
}

START_TEST(test_session_write_from) {
    /* Writes only from the write networks, asked at every call: a session
     * is refused or let through by the policy as it is now, the way a
     * reload of access.write_from reaches connections already open. */
    struct rpc_session *in = session_from(&open_server, "10.1.2.3");
    struct rpc_session *out = session_from(&open_server, "192.168.1.7");

    write_net = 10;
    expect(&open_server, in, "write", NULL, ANSWER("\"written\""));
    expect(&open_server, out, "write", NULL, NOT_FROM("192.168.1.7:4000"));
    write_net = 192; /* a reload moves write_from */
    expect(&open_server, in, "write", NULL, NOT_FROM("10.1.2.3:4000"));
    expect(&open_server, out, "write", NULL, ANSWER("\"written\""));
    write_net = 10;
    /* Without a session (or policy hook), nobody writes. */
    expect(&open_server, NULL, "write", NULL, NOT_FROM("this client"));
    static const struct rpc_server no_policy = {.methods = access_methods, .nmethods = 3};
    struct rpc_session *any = session_from(&no_policy, "10.1.2.3");
    expect(&no_policy, any, "write", NULL, NOT_FROM("10.1.2.3:4000"));
    /* No token needed: auth says so without checking, and changes nothing. */
    token_checks = 0;
    expect(&open_server, out, "auth", BAD, ANSWER("true"));
    ck_assert_int_eq(token_checks, 0);
    expect(&open_server, out, "write", NULL, NOT_FROM("192.168.1.7:4000"));
    ck_assert_str_eq(rpc_session_name(in), "10.1.2.3:4000");
    rpc_session_destroy(any);
    rpc_session_destroy(out);
    rpc_session_destroy(in);
    rpc_session_destroy(NULL);
}
END_TEST

START_TEST(test_session_login) {
    /* With a token: write_from and a login; a wrong token withdraws the
     * login, and says so only when there was one. */
    struct rpc_session *s = session_from(&token_server, "10.0.0.9");
    struct rpc_session *other = session_from(&token_server, "10.0.0.9");
    struct rpc_session *far = session_from(&token_server, "172.16.0.1");

    write_net = 10;
    blocked_s = 0;
    login_failures = 0;
    expect(&token_server, s, "write", NULL,
           REFUSED(-32001, "Unauthorized: call auth with the token from /run/wavemeterd/cookie "
                           "first"));
    expect(&token_server, s, "auth", RIGHT, ANSWER("true"));
    expect(&token_server, s, "write", NULL, ANSWER("\"written\""));
    /* A login is the connection's, not the address's. */
    expect(&token_server, other, "write", NULL,
           REFUSED(-32001, "Unauthorized: call auth with the token from /run/wavemeterd/cookie "
                           "first"));
    /* Logged in, but outside write_from: still a reader. */
    expect(&token_server, far, "auth", RIGHT, ANSWER("true"));
    expect(&token_server, far, "write", NULL, NOT_FROM("172.16.0.1:4000"));
    expect(&token_server, s, "auth", BAD, WITHDRAWN);
    ck_assert_int_eq(login_failures, 1);
    expect(&token_server, s, "write", NULL,
           REFUSED(-32001, "Unauthorized: call auth with the token from /run/wavemeterd/cookie "
                           "first"));
    expect(&token_server, s, "auth", BAD, WRONG_TOKEN);
    ck_assert_int_eq(login_failures, 2);
    expect(&token_server, s, "auth", RIGHT, ANSWER("true"));
    expect(&token_server, s, "write", NULL, ANSWER("\"written\""));
    ck_assert_int_eq(n_ended, 0);
    rpc_session_destroy(far);
    rpc_session_destroy(other);
    rpc_session_destroy(s);
}
END_TEST

START_TEST(test_session_guessing) {
    /* Five wrong tokens in a row end the connection, after the fifth is
     * answered; a right one in between starts the count again. An address
     * the policy blocks is refused unchecked, even with the right token. */
    struct rpc_session *s = session_from(&token_server, "10.0.0.9");

    blocked_s = 0;
    n_ended = 0;
    for (int i = 0; i < 4; i++)
        expect(&token_server, s, "auth", BAD, WRONG_TOKEN);
    expect(&token_server, s, "auth", RIGHT, ANSWER("true"));
    for (int i = 0; i < 4; i++)
        expect(&token_server, s, "auth", BAD, i == 0 ? WITHDRAWN : WRONG_TOKEN);
    ck_assert_int_eq(n_ended, 0);
    expect(&token_server, s, "auth", BAD, WRONG_TOKEN); /* answered, then ended */
    ck_assert_int_eq(n_ended, 1);
    ck_assert_str_eq(ended_why, "5 wrong tokens");

    token_checks = 0;
    blocked_s = 2.5;
    expect(&token_server, s, "auth", RIGHT,
           REFUSED(-32004, "Rate limited: too many wrong tokens from this address; try again in "
                           "3 s"));
    ck_assert_int_eq(token_checks, 0);
    blocked_s = 0;
    rpc_session_destroy(s);
}
END_TEST

START_TEST(test_session_abandoned) {
    /* A handler still running when its connection goes sees no session, so
     * the session can be freed with the connection. */
    struct rpc_session *s = session_from(&token_server, "10.0.0.9");
    const struct rpc_owner ow = {.done = on_done, .session = s};
    static const char in[] = "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}";

    n_held = 0;
    struct rpc_line *line = rpc_line_run(&token_server, in, sizeof in - 1, &ow);
    ck_assert_ptr_eq(rpc_call_session(held[0]), s);
    rpc_line_abandon(line);
    rpc_session_destroy(s);
    ck_assert_ptr_null(rpc_call_session(held[0]));
    expect(&token_server, NULL, "auth", BAD, WRONG_TOKEN);
    rpc_call_result(held[0], json_true());
}
END_TEST

static Suite *jsonrpc_suite(void) {
    Suite *s = suite_create("jsonrpc");
    TCase *tc = tcase_create("envelope");
    tcase_add_loop_test(tc, test_rows, 0, (int)(sizeof rows / sizeof rows[0]));
    tcase_add_test(tc, test_nul_byte_in_line);
    tcase_add_test(tc, test_error_text);
    tcase_add_test(tc, test_deep_nesting);
    suite_add_tcase(s, tc);
    tc = tcase_create("async");
    tcase_add_test(tc, test_async_single);
    tcase_add_test(tc, test_async_notification);
    tcase_add_test(tc, test_async_batch_order);
    tcase_add_test(tc, test_async_batch_notification_last);
    tcase_add_test(tc, test_abandon);
    tcase_add_test(tc, test_abandon_before_any_answer);
    tcase_add_test(tc, test_budget_refuses_rest_of_batch);
    tcase_add_test(tc, test_budget_single_calls);
    tcase_add_test(tc, test_pace_holds_and_resumes);
    tcase_add_test(tc, test_abandon_paused);
#ifndef NDEBUG
    /* Only where a failed assert can end a forked child, not the runner. */
    const char *fork_env = getenv("CK_FORK");
    if (!fork_env || strcmp(fork_env, "no") != 0)
        tcase_add_test_raise_signal(tc, test_double_answer_asserts, SIGABRT);
#endif
    suite_add_tcase(s, tc);
    tc = tcase_create("session");
    tcase_add_test(tc, test_session_write_from);
    tcase_add_test(tc, test_session_login);
    tcase_add_test(tc, test_session_guessing);
    tcase_add_test(tc, test_session_abandoned);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(jsonrpc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
