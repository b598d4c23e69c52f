/*
 * loadgen: a small fixed-rate (open-loop) HTTP/1.1 load generator in the spirit of wrk2.
 *
 * Why it exists: wrk2, vegeta and oha are not packaged for this machine's registries, plain wrk
 * is closed-loop (a slow response delays the next request, which hides queueing: "coordinated
 * omission"), and k6's constant-arrival-rate executor works but costs ~40 % of a core at
 * 2,000 req/s on a 2-core machine, which is CPU taken from the server under test and noise in
 * its tail. This program spends a few percent of one core at that rate.
 *
 * How it measures:
 *   - Request i is *scheduled* at t0 + i / rate, whatever happened before (open loop).
 *   - At its scheduled time it goes out on an idle keep-alive connection; if none of the -c
 *     connections is idle it waits in a FIFO queue until one is.
 *   - Its latency is completion time minus *scheduled* time (as wrk2 does), so time spent
 *     queued behind a slow response is counted, not hidden. The service time (completion minus
 *     actual send) is reported too.
 *   - Requests scheduled during the warm-up are sent but not recorded.
 *   - Paths are printf(-p FORMAT, id) with id uniform in [0, -n) from a seeded xorshift.
 *   - -m POST -b FORMAT sends POST requests whose JSON body is printf(FORMAT, id) with the same
 *     id (a feature server's lookup, e.g. Feast's /get-online-features); GET (the default) has no
 *     body. Each format holds at most one conversion, a long integer (%ld, %07ld, ...; %% for %).
 *   - Responses must carry Content-Length (FastAPI and uvicorn send it); non-2xx statuses and
 *     connection errors are counted; requests unanswered -t seconds after the run are timeouts.
 *
 * Throughput: `throughput_rps` counts every response completed inside the measured window
 * (whenever it was scheduled) per second of that window; with more offered than the server
 * can take, that is its capacity. `achieved_rps` counts the recorded requests instead.
 *
 * Output: one JSON object on stdout. With -o FILE, the recorded latencies (microseconds, one
 * per line, in completion order) are written there too.
 *
 * Build: cc -O2 -o loadgen loadgen.c   (Linux: epoll + timerfd)
 */
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
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define RBUF 65536

typedef struct {
    int fd;
    int busy;            /* a request is in flight */
    double scheduled;    /* scheduled time of the in-flight request */
    double sent;         /* actual send time */
    int record;          /* whether the in-flight request is recorded */
    char buf[RBUF];
    size_t len;          /* bytes buffered */
    long need;           /* total bytes of the current response, -1 until the headers are in */
    int status;
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t xorshift(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *host = "127.0.0.1";
static int port = 8000;
static int epfd;
static struct sockaddr_in addr;
static conn_t *conns;
static int n_conns = 32;
static long errors_connect = 0, errors_io = 0, non2xx = 0;

static int open_conn(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->busy = 0;
    c->len = 0;
    c->need = -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void reopen(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    while (open_conn(c) < 0) {
        errors_connect++;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* queue of scheduled-but-unsent requests: their scheduled times and record flags */
static double *q_sched;
static char *q_rec;
static long q_head = 0, q_tail = 0, q_cap = 0;

static double *lat, *svc;
static long n_lat = 0, cap_lat = 0;
static long n_users = 1000000;
static const char *path_fmt = "/v1/users/u%07ld/recommendations";
static const char *method = "GET";
static const char *body_fmt = NULL; /* POST only */

#define PATH_MAX_LEN 512
#define BODY_MAX_LEN 8192
#define REQ_MAX_LEN (PATH_MAX_LEN + BODY_MAX_LEN + 512)

/* the request for user `id` into req (REQ_MAX_LEN bytes); its length, or -1 if it does not fit */
static int format_request(char *req, long id) {
    char path[PATH_MAX_LEN], body[BODY_MAX_LEN];
    if (snprintf(path, sizeof path, path_fmt, id) >= (int)sizeof path) return -1;
    int n;
    if (body_fmt == NULL) {
        n = snprintf(req, REQ_MAX_LEN,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: newsrec-loadgen\r\n"
                     "Accept: application/json\r\n\r\n",
                     path, host, port);
    } else {
        int body_len = snprintf(body, sizeof body, body_fmt, id);
        if (body_len >= (int)sizeof body) return -1;
        n = snprintf(req, REQ_MAX_LEN,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: newsrec-loadgen\r\n"
                     "Accept: application/json\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     method, path, host, port, body_len, body);
    }
    return n < REQ_MAX_LEN ? n : -1;
}

/* whether fmt holds at most one conversion, and that one a long integer: %[flags][width]ld */
static int id_format_ok(const char *fmt) {
    int conversions = 0;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') continue;
        p++;
        if (*p == '%') continue;
        while (*p && strchr("0-+ #", *p)) p++;
        while (*p >= '0' && *p <= '9') p++;
        if (p[0] != 'l' || p[1] != 'd') return 0;
        p++;
        conversions++;
    }
    return conversions <= 1;
}

static int send_request(conn_t *c, double scheduled, int record) {
    char req[REQ_MAX_LEN];
    long id = (long)(xorshift() % (uint64_t)n_users);
    int n = format_request(req, id); /* checked to fit for every id before the run */
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(c->fd, req + off, n - off);
        if (w < 0) {
            if (errno == EAGAIN) continue; /* tiny request, socket buffer practically never full */
            return -1;
        }
        off += w;
    }
    c->busy = 1;
    c->scheduled = scheduled;
    c->sent = now_s();
    c->record = record;
    c->len = 0;
    c->need = -1;
    return 0;
}

/* parse headers once complete: sets need (header + body length) and status */
static int parse_headers(conn_t *c) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t header_len = (size_t)(end - c->buf) + 4;
    c->status = atoi(c->buf + 9); /* "HTTP/1.1 200" */
    long content_length = -1;
    char *p = c->buf;
    while (p < end) {
        char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            content_length = atol(p + 15);
        p = eol + 2;
    }
    if (content_length < 0) return -1;
    c->need = (long)header_len + content_length;
    return 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -r RATE -d SECONDS [-w WARMUP] [-c CONNS] [-n USERS] [-p PATH_FMT]\n"
            "               [-m GET|POST] [-b BODY_FMT] [-H HOST] [-P PORT] [-s SEED]\n"
            "               [-t DRAIN_TIMEOUT] [-o LATENCY_FILE]\n"
            "PATH_FMT and BODY_FMT (POST only, required there) hold at most one %%ld: the user number.\n");
    exit(2);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *sorted, long n, double q) {
    if (n == 0) return -1;
    long i = (long)(q * (double)(n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return sorted[i];
}

int main(int argc, char **argv) {
    double rate = 1000, duration = 10, warmup = 0, drain_timeout = 5;
    const char *out = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "r:d:w:c:n:p:m:b:H:P:s:t:o:")) != -1) {
        switch (opt) {
            case 'r': rate = atof(optarg); break;
            case 'd': duration = atof(optarg); break;
            case 'w': warmup = atof(optarg); break;
            case 'c': n_conns = atoi(optarg); break;
            case 'n': n_users = atol(optarg); break;
            case 'p': path_fmt = optarg; break;
            case 'm': method = optarg; break;
            case 'b': body_fmt = optarg; break;
            case 'H': host = optarg; break;
            case 'P': port = atoi(optarg); break;
            case 's': rng_state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)atoll(optarg); if (!rng_state) rng_state = 1; break;
            case 't': drain_timeout = atof(optarg); break;
            case 'o': out = optarg; break;
            default: usage();
        }
    }
    if (rate <= 0 || duration <= 0 || n_conns < 1 || n_conns > MAX_CONNS || n_users < 1) usage();
    int post = strcmp(method, "POST") == 0;
    if (!post && strcmp(method, "GET") != 0) usage();
    if (post != (body_fmt != NULL)) usage(); /* a body with POST, none with GET */
    if (!id_format_ok(path_fmt) || (body_fmt && !id_format_ok(body_fmt))) usage();
    {
        char probe[REQ_MAX_LEN]; /* the longest id formats longest */
        if (format_request(probe, n_users - 1) < 0) {
            fprintf(stderr, "request longer than %d bytes\n", REQ_MAX_LEN);
            return 2;
        }
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) usage();

    epfd = epoll_create1(0);
    conns = calloc((size_t)n_conns, sizeof(conn_t));
    for (int i = 0; i < n_conns; i++)
        if (open_conn(&conns[i]) < 0) { fprintf(stderr, "connect failed\n"); return 1; }

    long total = (long)((warmup + duration) * rate);
    q_cap = total + 1;
    q_sched = malloc(sizeof(double) * (size_t)q_cap);
    q_rec = malloc((size_t)q_cap);
    cap_lat = (long)(duration * rate) + 16;
    lat = malloc(sizeof(double) * (size_t)cap_lat);
    svc = malloc(sizeof(double) * (size_t)cap_lat);

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

    /* let the connections finish their handshakes */
    struct timespec settle = {0, 50 * 1000 * 1000};
    nanosleep(&settle, NULL);

    double t0 = now_s() + 0.01;
    double interval = 1.0 / rate;
    long next = 0;               /* next request number to schedule */
    long completed = 0, sent_total = 0, recorded_sent = 0;
    long completed_in_window = 0; /* responses completed inside the measured window, whatever their schedule */
    double end_sched = t0 + warmup + duration;
    double deadline = end_sched + drain_timeout;
    struct epoll_event events[256];
    int next_conn = 0;

    for (;;) {
        double t = now_s();
        /* move every request whose time has come into the queue */
        while (next < total && t0 + next * interval <= t) {
            double sched = t0 + next * interval;
            q_sched[q_tail] = sched;
            q_rec[q_tail] = sched >= t0 + warmup;
            q_tail++;
            next++;
        }
        /* hand queued requests to idle connections, round robin: always taking the first idle
           one would put nearly every request on connection 0 at low concurrency, and so on
           whichever server worker holds it (real traffic comes from many clients) */
        for (int j = 0; j < n_conns && q_head < q_tail; j++) {
            int i = (next_conn + j) % n_conns;
            conn_t *c = &conns[i];
            if (c->busy) continue;
            if (send_request(c, q_sched[q_head], q_rec[q_head]) < 0) {
                errors_io++;
                reopen(c);
                continue;
            }
            if (q_rec[q_head]) recorded_sent++;
            q_head++;
            sent_total++;
            next_conn = (i + 1) % n_conns;
        }
        int in_flight = 0;
        for (int i = 0; i < n_conns; i++) in_flight += conns[i].busy;
        if (next >= total && q_head == q_tail && in_flight == 0) break;
        if (t > deadline) break;

        /* sleep until the next scheduled request or a socket event */
        if (next < total) {
            double when = t0 + next * interval;
            struct itimerspec its = {0};
            its.it_value.tv_sec = (time_t)when;
            its.it_value.tv_nsec = (long)((when - (double)(time_t)when) * 1e9);
            if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int timeout_ms = next < total ? -1 : 50;
        int n = epoll_wait(epfd, events, 256, timeout_ms);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (c == NULL) { uint64_t x; ssize_t r = read(tfd, &x, sizeof x); (void)r; continue; }
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->len, RBUF - c->len);
                if (r > 0) {
                    c->len += (size_t)r;
                    if (c->need < 0) {
                        int h = parse_headers(c);
                        if (h < 0) { errors_io++; c->busy = 0; reopen(c); break; }
                    }
                    if (c->need >= 0 && (long)c->len >= c->need) {
                        double done = now_s();
                        if (c->busy) {
                            completed++;
                            if (done >= t0 + warmup && done < end_sched) completed_in_window++;
                            if (c->status < 200 || c->status >= 300) non2xx++;
                            if (c->record && n_lat < cap_lat) {
                                lat[n_lat] = (done - c->scheduled) * 1e6;
                                svc[n_lat] = (done - c->sent) * 1e6;
                                n_lat++;
                            }
                        }
                        c->busy = 0;
                        c->len = 0;
                        c->need = -1;
                        break;
                    }
                    if (c->len == RBUF) { errors_io++; c->busy = 0; reopen(c); break; }
                    continue;
                }
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    if (c->busy) errors_io++;
                    c->busy = 0;
                    reopen(c);
                }
                break;
            }
        }
    }
    double elapsed = now_s() - (t0 + warmup);
    long timeouts = 0;
    for (int i = 0; i < n_conns; i++) timeouts += conns[i].busy && conns[i].record;
    timeouts += 0;
    long unsent = total - sent_total;

    if (out) {
        FILE *f = fopen(out, "w");
        if (f) {
            for (long i = 0; i < n_lat; i++) fprintf(f, "%.1f\n", lat[i]);
            fclose(f);
        }
    }
    qsort(lat, (size_t)n_lat, sizeof(double), cmp_double);
    qsort(svc, (size_t)n_lat, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < n_lat; i++) sum += lat[i];
    printf("{\"rate\": %.1f, \"duration_s\": %.3f, \"warmup_s\": %.3f, \"connections\": %d, "
           "\"scheduled\": %ld, \"sent\": %ld, \"completed\": %ld, \"recorded\": %ld, "
           "\"recorded_sent\": %ld, \"unsent\": %ld, \"timeouts\": %ld, \"non2xx\": %ld, "
           "\"errors_io\": %ld, \"errors_connect\": %ld, \"achieved_rps\": %.1f, \"throughput_rps\": %.1f, "
           "\"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
           "\"p999\": %.1f, \"max\": %.1f}, "
           "\"service_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}}\n",
           rate, duration, warmup, n_conns, total, sent_total, completed, n_lat, recorded_sent, unsent,
           timeouts, non2xx, errors_io, errors_connect, elapsed > 0 ? n_lat / elapsed : 0.0,
           duration > 0 ? completed_in_window / duration : 0.0,
           n_lat ? sum / n_lat : -1.0, pct(lat, n_lat, 0.5), pct(lat, n_lat, 0.9), pct(lat, n_lat, 0.99),
           pct(lat, n_lat, 0.999), n_lat ? lat[n_lat - 1] : -1.0, pct(svc, n_lat, 0.5), pct(svc, n_lat, 0.9),
           pct(svc, n_lat, 0.99), pct(svc, n_lat, 0.999), n_lat ? svc[n_lat - 1] : -1.0);
    return 0;
}
