/*
 * floor_server: the floor for bench/bench_push.py's throughput comparison.
 *
 * A minimal single-threaded epoll TCP server that answers every
 * newline-terminated line with one fixed line, whatever the line says: no
 * parsing, no allocation per request, one read(2) of up to 64 KiB and one
 * write(2) of all the answers it produced per ready connection. What it costs
 * per request is what any line server on this machine must pay (the loopback
 * TCP stack, epoll, the syscalls); wavemeterd's throughput is reported as a
 * ratio to it.
 *
 * usage: floor_server [--listen ADDR:PORT] [--reply JSON | --size BYTES]
 *
 *   --listen  IPv4 address and port, default 127.0.0.1:0 (the kernel picks
 *             the port); "listening on ADDR:PORT" goes to stdout once bound.
 *   --reply   the answer line, without its newline; default
 *             {"jsonrpc":"2.0","id":1,"result":"pong"}.
 *   --size    instead: {"jsonrpc":"2.0","id":1,"result":"xxx..."} padded to
 *             exactly BYTES bytes with its newline (the size of a real answer).
 *
 * Runs until SIGINT or SIGTERM. A connection whose answers are not taken
 * (more than 1 MiB waiting) is not read until they are, so memory stays
 * bounded. Built by bench/CMakeLists.txt; never run by ctest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define OUT_HIGH (1u << 20) /* stop reading a connection above this much unsent */

struct conn {
    int fd;
    char *out; /* answers not yet written: out[off .. len) */
    size_t off, len, cap;
    unsigned armed; /* the events epoll watches for it */
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void conn_close(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

/* EPOLLIN while the connection may read, EPOLLOUT while answers wait. */
static unsigned conn_wants(const struct conn *c) {
    return (c->len - c->off < OUT_HIGH ? (unsigned)EPOLLIN : 0u) |
           (c->len > c->off ? (unsigned)EPOLLOUT : 0u);
}

/* Tell epoll only when what the connection waits for changes. */
static int conn_arm(int ep, struct conn *c) {
    struct epoll_event ev;
    unsigned want = conn_wants(c);

    if (want == c->armed)
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    ev.data.ptr = c;
    c->armed = want;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what waits; 0 on success (all or some written), -1 if the peer is gone. */
static int conn_flush(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = write(c->fd, c->out + c->off, c->len - c->off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->off += (size_t)n;
    }
    if (c->off == c->len)
        c->off = c->len = 0;
    return 0;
}

static int conn_append(struct conn *c, const char *reply, size_t rlen, size_t count) {
    size_t need = c->len + rlen * count;

    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (need > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        char *p;

        while (cap < need)
            cap *= 2;
        if ((p = realloc(c->out, cap)) == NULL)
            return -1;
        c->out = p;
        c->cap = cap;
    }
    for (size_t i = 0; i < count; i++) {
        memcpy(c->out + c->len, reply, rlen);
        c->len += rlen;
    }
    return 0;
}

/* Read once; answer every complete line. -1: close the connection. */
static int conn_read(struct conn *c, const char *reply, size_t rlen) {
    static char buf[READ_CHUNK];
    ssize_t n;
    size_t lines = 0;
    const char *p, *end;

    do
        n = read(c->fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    if (n == 0)
        return -1;
    for (p = buf, end = buf + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        lines++;
    if (lines > 0 && conn_append(c, reply, rlen, lines) != 0)
        return -1;
    return conn_flush(c);
}

static int parse_listen(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    char *end;
    long port;

    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: floor_server [--listen ADDR:PORT] [--reply JSON | --size BYTES]\n"
               "A bare epoll line server: every newline-terminated line is answered with\n"
               "one fixed line (default {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"pong\"}).\n");
}

int main(int argc, char **argv) {
    const char *listen_at = "127.0.0.1:0";
    const char *reply_arg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"pong\"}";
    long size = 0;
    char *reply;
    size_t rlen;
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    struct epoll_event ev, evs[256];
    struct sigaction sig;
    int lfd, ep, one = 1;
    char addr[INET_ADDRSTRLEN];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (strcmp(argv[i], "--reply") == 0 && i + 1 < argc) {
            reply_arg = argv[++i];
        } else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
            char *end;

            size = strtol(argv[++i], &end, 10);
            if (*end != '\0' || size < 64 || size > (1L << 20)) {
                fprintf(stderr, "floor_server: --size wants 64 .. 1048576 bytes\n");
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }

    if (size > 0) {
        static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"";
        size_t hl = sizeof(head) - 1, pad = (size_t)size - hl - 3; /* "}\n */

        rlen = (size_t)size;
        if ((reply = malloc(rlen)) == NULL)
            return 1;
        memcpy(reply, head, hl);
        memset(reply + hl, 'x', pad);
        memcpy(reply + hl + pad, "\"}\n", 3);
    } else {
        size_t al = strlen(reply_arg);

        rlen = al + 1;
        if ((reply = malloc(rlen)) == NULL)
            return 1;
        memcpy(reply, reply_arg, al);
        reply[al] = '\n';
    }

    if (parse_listen(listen_at, &sa) != 0) {
        fprintf(stderr, "floor_server: bad --listen %s (want IPv4ADDR:PORT)\n", listen_at);
        return 2;
    }
    memset(&sig, 0, sizeof(sig));
    sig.sa_handler = on_signal;
    sigaction(SIGINT, &sig, NULL);
    sigaction(SIGTERM, &sig, NULL);
    sig.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sig, NULL);

    if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0 ||
        set_nonblock(lfd) != 0 || getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) {
        perror("floor_server: listen");
        return 1;
    }
    if ((ep = epoll_create1(0)) < 0) {
        perror("floor_server: epoll_create1");
        return 1;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL; /* the listener */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("floor_server: epoll_ctl");
        return 1;
    }
    inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr));
    printf("listening on %s:%u, answer %zu bytes\n", addr, (unsigned)ntohs(sa.sin_port), rlen);
    fflush(stdout);

    while (!stop_flag) {
        int n = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), -1);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("floor_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;

            if (c == NULL) {
                int fd;

                while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                    if (set_nonblock(fd) != 0 ||
                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
                        (c = calloc(1, sizeof(*c))) == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->armed = EPOLLIN;
                    memset(&ev, 0, sizeof(ev));
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
                        close(fd);
                        free(c);
                    }
                }
                continue;
            }
            if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN)) {
                conn_close(ep, c);
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && conn_flush(c) != 0) {
                conn_close(ep, c);
                continue;
            }
            if ((evs[i].events & EPOLLIN) && conn_read(c, reply, rlen) != 0) {
                conn_close(ep, c);
                continue;
            }
            if (conn_arm(ep, c) != 0)
                conn_close(ep, c);
        }
    }
    close(ep);
    close(lfd);
    free(reply);
    return 0;
}
