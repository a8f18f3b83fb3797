/*
 * wavemeterctl: a command-line client for wavemeterd. Builds one JSON-RPC
 * request from the command line, sends it, prints the answer (pretty by
 * default) and exits 0 on a result, 1 on an error answer, 2 on a local or
 * connection problem. It knows no method: the daemon is the reference.
 */
#define _GNU_SOURCE /* getaddrinfo under -std=c11 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Long enough for any read the daemon does (its own reads time out sooner). */
#define DEFAULT_TIMEOUT_MS 10000

/*
 * The write token: from file if given (an error if unreadable), else the
 * daemon's cookie where a local install keeps it, if this user may read it.
 * Returns a malloc'd token or NULL (none, or an error already printed).
 */
static char *read_token(const char *file) {
    static const char *const cookies[] = {"/var/lib/wavemeterd/cookie", "build/state/cookie"};
    char buf[300];
    FILE *f = NULL;

    if (file) {
        if ((f = fopen(file, "re")) == NULL) {
            fprintf(stderr, "wavemeterctl: token file %s: %s\n", file, strerror(errno));
            return NULL;
        }
    } else {
        for (size_t i = 0; i < sizeof(cookies) / sizeof(cookies[0]) && f == NULL; i++)
            f = fopen(cookies[i], "re");
        if (f == NULL)
            return NULL;
    }
    if (fgets(buf, sizeof(buf), f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, " \t\r\n")] = '\0';
    return buf[0] ? strdup(buf) : NULL;
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: wavemeterctl [-c HOST:PORT] [-r] [-t MS] [-k FILE] METHOD [KEY=VALUE... | JSON]\n"
        "  -c, --connect HOST:PORT  daemon address (default $WAVEMETERD_ADDR or 127.0.0.1:7420)\n"
        "  -r, --raw                print the answer line as received\n"
        "  -t, --timeout MS         give up after MS milliseconds (default 10000)\n"
        "  -k, --token-file FILE    log in for writes with this token (default\n"
        "                           $WAVEMETERD_TOKEN_FILE, else the daemon's cookie\n"
        "                           in /var/lib/wavemeterd or build/state, if readable)\n"
        "Params: KEY=VALUE pairs (VALUE parsed as JSON, else taken as a string),\n"
        "or one JSON object or array.\n"
        "examples: wavemeterctl read\n"
        "          wavemeterctl read laser=399\n"
        "          wavemeterctl laser.set_setpoint laser=399 frequency_thz=751.52653\n");
}

static int dial(const char *hostport, int timeout_ms) {
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    size_t hlen;
    int fd = -1, rc;

    if (colon == NULL || (hlen = (size_t)(colon - hostport)) == 0 || hlen >= sizeof(host)) {
        fprintf(stderr, "wavemeterctl: --connect \"%s\": expected HOST:PORT\n", hostport);
        return -1;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    if ((rc = getaddrinfo(host, colon + 1, &hints, &res)) != 0) {
        fprintf(stderr, "wavemeterctl: %s: %s\n", hostport, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        fprintf(stderr, "wavemeterctl: cannot connect to %s: %s\n", hostport, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

/* New reference: params from argv[0..n). NULL (with a message) on error. */
static json_t *build_params(char **args, int n) {
    json_t *params, *v;
    json_error_t jerr;

    if (n == 1 && (args[0][0] == '{' || args[0][0] == '[')) {
        params = json_loads(args[0], 0, &jerr);
        if (params == NULL)
            fprintf(stderr, "wavemeterctl: params: %s\n", jerr.text);
        return params;
    }
    params = json_object();
    for (int i = 0; i < n; i++) {
        char *eq = strchr(args[i], '=');
        if (eq == NULL || eq == args[i]) {
            fprintf(stderr, "wavemeterctl: \"%s\": expected KEY=VALUE\n", args[i]);
            json_decref(params);
            return NULL;
        }
        *eq = '\0';
        v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
        if (v == NULL)
            v = json_string(eq + 1);
        json_object_set_new(params, args[i], v);
    }
    return params;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'}, {"raw", no_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'}, {"token-file", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *addr = getenv("WAVEMETERD_ADDR");
    const char *token_file = getenv("WAVEMETERD_TOKEN_FILE");
    char *token = NULL;
    int timeout_ms = DEFAULT_TIMEOUT_MS, opt, fd, rc = 2;
    bool raw = false;
    json_t *req, *params = NULL, *ans;
    char *text, *buf = NULL;
    size_t have = 0, cap = 0;

    if (addr == NULL)
        addr = "127.0.0.1:7420";
    if (token_file && *token_file == '\0')
        token_file = NULL; /* WAVEMETERD_TOKEN_FILE= means none */
    while ((opt = getopt_long(argc, argv, "c:rt:k:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            addr = optarg;
            break;
        case 'r':
            raw = true;
            break;
        case 't':
            timeout_ms = atoi(optarg);
            break;
        case 'k':
            token_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc || timeout_ms <= 0) {
        usage(stderr);
        return 2;
    }
    if (argc - optind > 1 && (params = build_params(argv + optind + 1, argc - optind - 1)) == NULL)
        return 2;
    req = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "id", 1, "method", argv[optind]);
    if (params)
        json_object_set_new(req, "params", params);
    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if ((token = read_token(token_file)) == NULL && token_file != NULL) {
        free(text);
        return 2;
    }
    if ((fd = dial(addr, timeout_ms)) < 0) {
        free(text);
        free(token);
        return 2;
    }
    if (token) {
        /* Log in first on this connection; its answer comes first (id 0). */
        json_t *a = json_pack("{s:s, s:i, s:s, s:{s:s}}", "jsonrpc", "2.0", "id", 0, "method",
                              "auth", "params", "token", token);
        char *at = json_dumps(a, JSON_COMPACT);
        size_t alen = strlen(at);

        json_decref(a);
        at[alen] = '\n';
        if (write(fd, at, alen + 1) != (ssize_t)(alen + 1)) {
            fprintf(stderr, "wavemeterctl: send: %s\n", strerror(errno));
            free(at);
            goto out;
        }
        free(at);
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps' NUL becomes the newline; we send len + 1 */
    if (write(fd, text, len + 1) != (ssize_t)(len + 1)) {
        fprintf(stderr, "wavemeterctl: send: %s\n", strerror(errno));
        goto out;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char *nl;
        ssize_t n;

        if (have + 4096 > cap) {
            /* Answers grow with history depth: no fixed limit here. */
            size_t want = cap ? cap * 2 : 65536;
            char *bigger = realloc(buf, want);
            if (bigger == NULL) {
                fprintf(stderr, "wavemeterctl: out of memory for the answer\n");
                goto out;
            }
            buf = bigger;
            cap = want;
        }
        if (poll(&p, 1, timeout_ms) <= 0) {
            fprintf(stderr, "wavemeterctl: no answer within %d ms\n", timeout_ms);
            goto out;
        }
        n = read(fd, buf + have, cap - 1 - have);
        if (n <= 0) {
            fprintf(stderr, "wavemeterctl: connection closed before an answer\n");
            goto out;
        }
        have += (size_t)n;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            *nl = '\0';
            json_t *line = json_loads(buf, 0, NULL);
            json_t *id = json_object_get(line, "id");
            bool ours = !(token && json_is_integer(id) && json_integer_value(id) == 0);

            if (!ours && json_object_get(line, "error"))
                fprintf(
                    stderr, "wavemeterctl: auth refused: %s\n",
                    json_string_value(json_object_get(json_object_get(line, "error"), "message")));
            json_decref(line);
            if (ours)
                goto answered;
            have -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have);
        }
    }
answered:
    ans = json_loads(buf, 0, NULL);
    if (raw || ans == NULL) {
        puts(buf);
    } else {
        json_t *r = json_object_get(ans, "result");
        json_dumpf(r ? r : json_object_get(ans, "error"), stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
        putchar('\n');
    }
    rc = ans && json_object_get(ans, "result") ? 0 : 1;
    json_decref(ans);
out:
    free(token);
    free(buf);
    free(text);
    close(fd);
    return rc;
}
