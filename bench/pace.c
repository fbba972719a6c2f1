/* pace: constant-rate HTTP/1.1 load for the latency part of `make bench` (bench/run.py).
 *
 * Why not `hey -q`: one hey with N connections starts N tickers at the same instant, so
 * requests arrive in bursts of N and p99 measures the queue behind a burst; and hey (like
 * wrk) times a request from when it was actually sent, so a stalled server delays the
 * following requests and hides the stall ("coordinated omission").
 *
 * Here request k is due at t0 + k / RATE, evenly spaced, and goes to connection k % CONNS
 * (one request in flight per connection). Its latency runs from its due time to the last
 * byte of its response: when a connection is still busy at a due time, the wait counts.
 * One thread, ppoll with nanosecond timeouts, CLOCK_MONOTONIC.
 *
 * Usage: pace HOST PORT PATH RATE SECONDS CONNS [BODY [CONTENT_TYPE [HEADER...]]]
 * BODY: a byte count (a POST of that many 'a's), @FILE (a POST of the file's bytes), or -1
 * (a GET); CONTENT_TYPE defaults to application/octet-stream; each HEADER ("Name: value")
 * is added to every request.
 * Output: key=value lines (requests, errors, rps, p50_us, p90_us, p99_us, p999_us, max_us).
 * Exit status 0, or 2 for bad arguments / no connection. Responses must carry
 * Content-Length or be chunked; status >= 400 counts as an error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define BUF_BYTES 65536
#define HEAD_BYTES 4096

struct conn {
    int fd;
    int busy;           /* a request is in flight */
    uint64_t due;       /* due time (ns) of the request in flight, or of the next one */
    uint64_t next_k;    /* index of this connection's next request in the global schedule */
    size_t have;        /* response bytes buffered */
    char buf[BUF_BYTES];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int open_conn(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Length of a complete response at the start of buf, 0 if incomplete, -1 if unparsable.
 * Sets *status. */
static long response_length(const char *buf, size_t have, int *status) {
    const char *end = memmem(buf, have, "\r\n\r\n", 4);
    if (end == NULL) return 0;
    size_t head = (size_t)(end - buf) + 4;
    if (have < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    const char *p = buf;
    while ((p = memchr(p, '\n', head - (size_t)(p - buf))) != NULL && p < end) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0) {
            long length = strtol(p + 15, NULL, 10);
            return (size_t)length + head <= have ? (long)head + length : 0;
        }
        if (strncasecmp(p, "transfer-encoding:", 18) == 0) {
            const char *last = memmem(buf + head, have - head, "0\r\n\r\n", 5);
            return last ? (long)(last - buf) + 5 : 0;
        }
    }
    return (long)head; /* no body (e.g. 204) */
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: pace HOST PORT PATH RATE SECONDS CONNS [BODY [CONTENT_TYPE "
                        "[HEADER...]]]\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), conns = atoi(argv[6]);
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    static char body_bytes[BUF_BYTES];
    long body = -1;
    if (argc > 7 && argv[7][0] == '@') {
        FILE *file = fopen(argv[7] + 1, "rb");
        if (file == NULL) {
            perror("pace: body file");
            return 2;
        }
        body = (long)fread(body_bytes, 1, BUF_BYTES, file);
        fclose(file);
    } else if (argc > 7) {
        body = atol(argv[7]);
        if (body > 0 && body <= BUF_BYTES) memset(body_bytes, 'a', (size_t)body);
    }
    const char *content_type = argc > 8 ? argv[8] : "application/octet-stream";
    char extra[HEAD_BYTES / 2] = "";
    size_t extra_len = 0;
    for (int i = 9; i < argc; i++) {
        size_t len = strlen(argv[i]);
        if (extra_len + len + 3 > sizeof extra) {
            fprintf(stderr, "pace: headers too long\n");
            return 2;
        }
        memcpy(extra + extra_len, argv[i], len);
        memcpy(extra + extra_len + len, "\r\n", 3);
        extra_len += len + 2;
    }
    if (rate <= 0 || seconds <= 0 || conns < 1 || conns > MAX_CONNS || body > BUF_BYTES) {
        fprintf(stderr, "pace: bad arguments\n");
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake on time, not up to 50 us late */
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "pace: HOST must be an IPv4 address\n");
        return 2;
    }
    static char request[BUF_BYTES + HEAD_BYTES];
    int reqlen;
    if (body >= 0) {
        reqlen = snprintf(request, HEAD_BYTES,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
                          "Content-Length: %ld\r\n%s\r\n",
                          path, host, port, content_type, body, extra);
        memcpy(request + reqlen, body_bytes, (size_t)body);
        reqlen += (int)body;
    } else {
        reqlen = snprintf(request, HEAD_BYTES, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", path,
                          host, port, extra);
    }
    static struct conn pool[MAX_CONNS];
    struct pollfd fds[MAX_CONNS];
    uint64_t interval = (uint64_t)(1e9 / rate);
    uint64_t total = (uint64_t)(rate * seconds);
    uint32_t *lat = calloc(total + 1, sizeof *lat);
    uint64_t done = 0, errors = 0;
    uint64_t t0 = now_ns() + 1000000; /* 1 ms to set up */
    for (int i = 0; i < conns; i++) {
        pool[i].fd = open_conn(&addr);
        if (pool[i].fd < 0) {
            perror("pace: connect");
            return 2;
        }
        pool[i].next_k = (uint64_t)i;
        pool[i].due = t0 + (uint64_t)i * interval;
    }
    uint64_t stop = t0 + (uint64_t)(seconds * 1e9);
    uint64_t grace = stop + 2000000000ull; /* in-flight responses get 2 s more */
    for (;;) {
        uint64_t now = now_ns();
        uint64_t wake = UINT64_MAX;
        int active = 0;
        for (int i = 0; i < conns; i++) {
            struct conn *c = &pool[i];
            if (!c->busy && c->next_k < total && c->due <= now) {
                if (write(c->fd, request, (size_t)reqlen) != reqlen) {
                    errors++; /* a short write of a small request: treat as failed */
                    close(c->fd);
                    c->fd = open_conn(&addr);
                    c->next_k += (uint64_t)conns;
                    c->due = t0 + c->next_k * interval;
                    if (c->fd < 0) return 2;
                    continue;
                }
                c->busy = 1;
                c->have = 0;
            }
            if (c->busy) active++;
            if (!c->busy && c->next_k < total && c->due < wake) wake = c->due;
            fds[i].fd = c->busy ? c->fd : -1;
            fds[i].events = POLLIN;
            fds[i].revents = 0;
        }
        if (!active && wake == UINT64_MAX) break;
        if (now > grace) {
            for (int i = 0; i < conns; i++) errors += pool[i].busy ? 1 : 0;
            break;
        }
        uint64_t until = wake == UINT64_MAX ? grace : wake;
        struct timespec timeout = {0, 0};
        if (until > now) {
            uint64_t d = until - now;
            timeout.tv_sec = (time_t)(d / 1000000000ull);
            timeout.tv_nsec = (long)(d % 1000000000ull);
        }
        int ready = ppoll(fds, (nfds_t)conns, &timeout, NULL);
        if (ready < 0 && errno != EINTR) {
            perror("pace: ppoll");
            return 2;
        }
        if (ready <= 0) continue;
        for (int i = 0; i < conns; i++) {
            struct conn *c = &pool[i];
            if (!c->busy || !(fds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
            ssize_t n = read(c->fd, c->buf + c->have, BUF_BYTES - c->have);
            int status = 0;
            long length = n > 0 ? response_length(c->buf, c->have + (size_t)n, &status) : -1;
            if (n > 0) c->have += (size_t)n;
            if (length == 0) continue;
            uint64_t end = now_ns();
            if (length < 0 || status >= 400) {
                errors++;
            } else if (done < total) {
                lat[done++] = (uint32_t)((end - c->due) / 1000);
            }
            if (length < 0) {
                close(c->fd);
                c->fd = open_conn(&addr);
                if (c->fd < 0) return 2;
            }
            c->busy = 0;
            c->next_k += (uint64_t)conns;
            c->due = t0 + c->next_k * interval;
        }
    }
    uint64_t elapsed = now_ns() - t0;
    qsort(lat, done, sizeof *lat, cmp_u32);
#define PCT(q) (done ? lat[(uint64_t)((double)(done - 1) * (q))] : 0)
    printf("requests=%llu\nerrors=%llu\nrps=%.1f\n", (unsigned long long)done,
           (unsigned long long)errors, (double)done * 1e9 / (double)elapsed);
    printf("p50_us=%u\np90_us=%u\np99_us=%u\np999_us=%u\nmax_us=%u\n", PCT(0.5), PCT(0.9),
           PCT(0.99), PCT(0.999), done ? lat[done - 1] : 0);
    return 0;
}
