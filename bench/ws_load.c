// ws_load: WebSocket chat load generator (one thread, epoll), for bench/ws_chat.py.
//
// Opens CONNS WebSocket connections to HOST:PORT; the first SENDERS send text messages
// at RATE messages/s each (open loop) for WARMUP + DURATION seconds; every connection
// counts the messages it receives that carry the marker "~T" (a server may add a prefix,
// and may put several lines in one message: each marker counts once). Prints one JSON
// line with deliveries/s in the measured window and the loss over the whole run.
//
// Cheap by construction, so the server is the bottleneck: frames go out masked with the
// all-zero key (legal, RFC 6455 5.3: the payload is sent as is, no per-byte XOR), and the
// receive side parses only frame headers and scans payloads with memmem. Check it with
// --selftest-style runs: bench/ws_chat.py prints this process's CPU share of one core.
//
// usage: ws_load HOST PORT CONNS SENDERS RATE DURATION WARMUP SIZE [HOLD]
//   HOLD > 0: idle mode: open the connections, print "OPEN n", read for HOLD seconds.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { HANDSHAKE, OPEN, DEAD };

typedef struct {
    int fd;
    int state;
    int hlen;                // bytes of the frame header held in hdr
    unsigned char hdr[14];
    uint64_t left;           // payload bytes of the current frame still to come
    int tilde;               // the last payload byte seen was '~'
    char http[4096];
    int http_len;
    uint64_t seq;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t delivered, delivered_window, sent, sent_window, blocked, dead;
static int measuring;

static void count_payload(conn_t *c, const unsigned char *p, size_t n) {
    if (n == 0) return;
    uint64_t found = 0;
    if (c->tilde && p[0] == 'T') found++;
    const unsigned char *q = p, *end = p + n;
    while ((q = memmem(q, end - q, "~T", 2)) != NULL) {
        found++;
        q += 2;
    }
    c->tilde = p[n - 1] == '~';
    delivered += found;
    if (measuring) delivered_window += found;
}

// Parse server frames (unmasked) from buf; count markers in text payloads.
static void parse(conn_t *c, const unsigned char *buf, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (c->left > 0) {
            size_t take = n - i < c->left ? n - i : (size_t)c->left;
            count_payload(c, buf + i, take);
            c->left -= take;
            i += take;
            if (c->left == 0) c->tilde = 0;
            continue;
        }
        c->hdr[c->hlen++] = buf[i++];
        if (c->hlen < 2) continue;
        int len7 = c->hdr[1] & 0x7f;
        int need = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
        if (c->hlen < need) continue;
        uint64_t len = len7;
        if (len7 == 126) len = (c->hdr[2] << 8) | c->hdr[3];
        else if (len7 == 127) {
            len = 0;
            for (int k = 2; k < 10; k++) len = (len << 8) | c->hdr[k];
        }
        c->hlen = 0;
        c->left = len;
        c->tilde = 0;
    }
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: %s HOST PORT CONNS SENDERS RATE DURATION WARMUP SIZE [HOLD]\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]), senders = atoi(argv[4]);
    double rate = atof(argv[5]), duration = atof(argv[6]), warmup = atof(argv[7]);
    int size = atoi(argv[8]);
    double hold = argc > 9 ? atof(argv[9]) : 0;
    if (size < 32) size = 32;
    if (size > 125) size = 125;  // one-byte length: the header is 6 bytes
    struct rlimit rl = {nconn + 64, nconn + 64};
    setrlimit(RLIMIT_NOFILE, &rl);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int ep = epoll_create1(0);
    conn_t *conns = calloc(nconn, sizeof(conn_t));
    const char *req_fmt =
        "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    char req[512];
    int req_len = snprintf(req, sizeof req, req_fmt, host, port);
    unsigned char *rbuf = malloc(1 << 20);

    // Connect and upgrade in batches of 100, so the listen backlog never overflows.
    int opened = 0;
    double deadline = now() + 30;
    for (int base = 0; base < nconn; base += 100) {
        int top = base + 100 < nconn ? base + 100 : nconn;
        for (int i = base; i < top; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                perror("connect");
                return 1;
            }
            if (write(fd, req, req_len) != req_len) {
                perror("write");
                return 1;
            }
            fcntl(fd, F_SETFL, O_NONBLOCK);
            conns[i].fd = fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        while (opened < top && now() < deadline) {
            struct epoll_event evs[256];
            int k = epoll_wait(ep, evs, 256, 100);
            for (int e = 0; e < k; e++) {
                conn_t *c = &conns[evs[e].data.u32];
                ssize_t r = read(c->fd, rbuf, 1 << 20);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) continue;
                    if (c->state != DEAD) { c->state = DEAD; dead++; }
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    if (c->state == DEAD && opened < top) opened++;
                    continue;
                }
                if (c->state == HANDSHAKE) {
                    int room = (int)sizeof c->http - 1 - c->http_len;
                    int copy = r < room ? (int)r : room;
                    memcpy(c->http + c->http_len, rbuf, copy);
                    c->http_len += copy;
                    c->http[c->http_len] = 0;
                    char *end = strstr(c->http, "\r\n\r\n");
                    if (!end) continue;
                    if (strncmp(c->http, "HTTP/1.1 101", 12) != 0) {
                        fprintf(stderr, "handshake refused: %.60s\n", c->http);
                        return 1;
                    }
                    c->state = OPEN;
                    opened++;
                    // Frames may follow the response in the same read (a welcome).
                    size_t head = (size_t)(end + 4 - c->http);
                    parse(c, (unsigned char *)c->http + head, c->http_len - head);
                    parse(c, rbuf + copy, r - copy);
                } else {
                    parse(c, rbuf, r);
                }
            }
        }
    }
    if (opened < nconn || dead) {
        fprintf(stderr, "only %d of %d connections opened (%llu closed)\n", opened, nconn,
                (unsigned long long)dead);
        return 1;
    }
    if (hold > 0) {
        printf("OPEN %d\n", opened);
        fflush(stdout);
    }

    // The run: senders send on a 1 ms tick; everyone reads.
    double start = now(), t_warm = start + warmup, t_end = t_warm + duration;
    double stop_all = hold > 0 ? start + hold : t_end + 2.0;  // 2 s to drain
    double window_start = 0, window_end = 0;
    unsigned char frame[6 + 125];
    uint64_t due = 0;  // messages per sender due so far
    while (1) {
        double t = now();
        if (t >= stop_all) break;
        if (!measuring && t >= t_warm && t < t_end && hold <= 0) {
            measuring = 1;
            window_start = t;
        }
        if (measuring && t >= t_end) {
            measuring = 0;
            window_end = t;
        }
        if (hold <= 0 && t < t_end && senders > 0 && rate > 0) {
            uint64_t target = (uint64_t)((t - start) * rate);
            for (; due < target; due++) {
                for (int s = 0; s < senders; s++) {
                    conn_t *c = &conns[s];
                    if (c->state != OPEN) continue;
                    int n = snprintf((char *)frame + 6, 126, "~T%d:%llu ", s,
                                     (unsigned long long)c->seq);
                    memset(frame + 6 + n, 'x', size - n);
                    frame[0] = 0x81;
                    frame[1] = 0x80 | size;
                    memset(frame + 2, 0, 4);
                    ssize_t w = write(c->fd, frame, 6 + size);
                    if (w == 6 + size) {
                        c->seq++;
                        sent++;
                        if (measuring) sent_window++;
                    } else if (w < 0 && errno == EAGAIN) {
                        blocked++;
                    } else {
                        fprintf(stderr, "partial write: the stream is broken\n");
                        return 1;
                    }
                }
            }
        }
        struct epoll_event evs[512];
        int k = epoll_wait(ep, evs, 512, 1);
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            for (;;) {
                ssize_t r = read(c->fd, rbuf, 1 << 20);
                if (r > 0) {
                    parse(c, rbuf, r);
                    if (r < (1 << 20)) break;
                    continue;
                }
                if (r < 0 && errno == EAGAIN) break;
                if (c->state != DEAD) { c->state = DEAD; dead++; }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                break;
            }
        }
    }
    if (window_end == 0) window_end = t_end;
    double window = window_end - window_start;
    // Every message goes to every OTHER open connection.
    double expected = (double)sent * (nconn - 1);
    printf("{\"conns\": %d, \"senders\": %d, \"rate\": %g, \"sent\": %llu, \"delivered\": %llu,"
           " \"window_s\": %.3f, \"deliveries_per_s\": %.0f, \"sent_per_s\": %.0f,"
           " \"loss\": %.6f, \"blocked\": %llu, \"closed\": %llu}\n",
           nconn, senders, rate, (unsigned long long)sent, (unsigned long long)delivered, window,
           window > 0 ? delivered_window / window : 0, window > 0 ? sent_window / window : 0,
           expected > 0 ? 1.0 - delivered / expected : 0, (unsigned long long)blocked,
           (unsigned long long)dead);
    return 0;
}
