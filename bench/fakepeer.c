/*
 * fakepeer: a minimal, fast QMP server for the qmplex benchmarks.
 *
 * It is never meant to be the bottleneck: one epoll loop, non-blocking sockets, one
 * read and one write per wake-up, no JSON parser (it scans each command line for the
 * few keys it needs). It serves any number of connections on one Unix socket.
 *
 *   fakepeer SOCKET_PATH [--oob]
 *
 * Prints "READY <path>" on stdout once it listens. Each connection gets a QMP greeting
 * (capabilities [] or ["oob"] with --oob). Then, for every command line:
 *
 *   {"execute": NAME, ..., "id": ID}     ->  {"return": {}, "id": ID}
 *
 * with ID copied verbatim (any JSON scalar). One command is special:
 *
 *   {"execute": "x-flood", "arguments": {"count": N, "name": "EV"}, "id": ID}
 *
 * writes N events named EV (default BENCH_EVENT), shaped like QEMU's:
 *
 *   {"timestamp": {"seconds": S, "microseconds": U}, "event": "EV",
 *    "data": {"device": "dI", "path": "/machine/peripheral/dI"}}
 *
 * and then its return, which is the end-of-flood marker. Events are generated as the
 * socket drains, so a flood of any size costs a bounded buffer. Commands that follow a
 * flood on the same connection are answered after it, in order.
 *
 * Exits on SIGTERM/SIGINT or when stdin reaches EOF (so it never outlives its parent).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define FLOOD_CHUNK (256 * 1024) /* bytes of events generated per writable wake-up */
#define MAX_EVENTS 256

struct buf {
    char *p;
    size_t len, cap, off; /* data is p[off:len) */
};

struct conn {
    int fd;
    struct buf in, out;
    unsigned long flood_left, flood_index;
    char flood_name[64];
    char flood_id[64]; /* verbatim id of the x-flood command, "" if none */
    int flood_has_id;
    int want_out; /* EPOLLOUT registered */
    size_t scan;  /* bytes of c->in (from off) already scanned for the command's end */
    int depth, in_str, esc;
};

static int epfd;
static int listen_fd;
static int oob;
static struct conn **conns;
static size_t nconns;
static volatile sig_atomic_t stopping;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->off && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + extra <= b->cap) {
        return;
    }
    if (b->off) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) {
            return;
        }
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    b->p = realloc(b->p, cap);
    if (b->p == NULL) {
        die("realloc");
    }
    b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void close_conn(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->in.p);
    free(c->out.p);
    free(c);
}

/* Find "key" in line[0:n) and return the offset just after the ':' that follows. */
static const char *after_key(const char *line, size_t n, const char *key)
{
    size_t klen = strlen(key);
    const char *end = line + n;
    const char *p = line;
    while ((p = memmem(p, (size_t)(end - p), key, klen)) != NULL) {
        const char *q = p + klen;
        while (q < end && (*q == ' ' || *q == '\t')) {
            q++;
        }
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t')) {
                q++;
            }
            return q;
        }
        p += klen;
    }
    return NULL;
}

/* Copy the scalar JSON value at v (number, string, true/false/null) into out. */
static int copy_scalar(const char *v, const char *end, char *out, size_t cap)
{
    const char *q = v;
    if (q < end && *q == '"') {
        q++;
        while (q < end && *q != '"') {
            q += (*q == '\\') ? 2 : 1;
        }
        q++;
    } else {
        while (q < end && *q != ',' && *q != '}' && *q != ' ' && *q != '\r') {
            q++;
        }
    }
    if (q > end || (size_t)(q - v) >= cap) {
        return 0;
    }
    memcpy(out, v, (size_t)(q - v));
    out[q - v] = '\0';
    return 1;
}

static void add_return(struct conn *c, const char *id, int has_id)
{
    char tmp[128];
    int n = has_id ? snprintf(tmp, sizeof tmp, "{\"return\": {}, \"id\": %s}\r\n", id)
                   : snprintf(tmp, sizeof tmp, "{\"return\": {}}\r\n");
    buf_add(&c->out, tmp, (size_t)n);
}

/* Generate up to FLOOD_CHUNK bytes of the pending flood, then its marker. */
static void generate_flood(struct conn *c)
{
    size_t budget = FLOOD_CHUNK;
    buf_reserve(&c->out, budget + 512);
    while (c->flood_left && budget > 256) {
        char *dst = c->out.p + c->out.len;
        unsigned long i = c->flood_index++;
        int n = snprintf(dst, 512,
                         "{\"timestamp\": {\"seconds\": %lu, \"microseconds\": %lu}, "
                         "\"event\": \"%s\", \"data\": {\"device\": \"d%lu\", "
                         "\"path\": \"/machine/peripheral/d%lu\"}}\r\n",
                         1700000000UL + i / 1000000UL, i % 1000000UL, c->flood_name, i, i);
        c->out.len += (size_t)n;
        budget -= (size_t)n;
        c->flood_left--;
    }
    if (c->flood_left == 0) {
        add_return(c, c->flood_id, c->flood_has_id);
    }
}

/* Handle one command line (without its terminator). Returns 1 if a flood started. */
static int handle_line(struct conn *c, const char *line, size_t n)
{
    char id[64];
    const char *v;
    int has_id = 0;

    v = after_key(line, n, "\"id\"");
    if (v != NULL) {
        has_id = copy_scalar(v, line + n, id, sizeof id);
    }
    if (memmem(line, n, "\"x-flood\"", 9) != NULL) {
        const char *cnt = after_key(line, n, "\"count\"");
        const char *name = after_key(line, n, "\"name\"");
        c->flood_left = cnt ? strtoul(cnt, NULL, 10) : 0;
        strcpy(c->flood_name, "BENCH_EVENT");
        if (name != NULL && *name == '"') {
            const char *e = memchr(name + 1, '"', (size_t)(line + n - name - 1));
            if (e != NULL && (size_t)(e - name - 1) < sizeof c->flood_name) {
                memcpy(c->flood_name, name + 1, (size_t)(e - name - 1));
                c->flood_name[e - name - 1] = '\0';
            }
        }
        c->flood_has_id = has_id;
        if (has_id) {
            strcpy(c->flood_id, id);
        }
        if (c->flood_left == 0) {
            add_return(c, id, has_id);
            return 0;
        }
        return 1;
    }
    add_return(c, id, has_id);
    return 0;
}

/*
 * Answer every complete command in c->in, stopping at a flood. A command ends where its
 * outermost JSON object closes, newline or not (qemu.qmp sends none, like QEMU's own
 * streaming parser accepts). The scan resumes where it stopped: c->scan with its state.
 */
static void process_input(struct conn *c)
{
    while (c->flood_left == 0) {
        const char *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        size_t i = c->scan;
        int done = 0;
        for (; i < avail; i++) {
            char ch = p[i];
            if (c->in_str) {
                if (c->esc) {
                    c->esc = 0;
                } else if (ch == '\\') {
                    c->esc = 1;
                } else if (ch == '"') {
                    c->in_str = 0;
                }
            } else if (ch == '"') {
                c->in_str = 1;
            } else if (ch == '{' || ch == '[') {
                c->depth++;
            } else if (ch == '}' || ch == ']') {
                if (--c->depth <= 0) {
                    c->depth = 0;
                    done = 1;
                    i++;
                    break;
                }
            }
        }
        if (!done) {
            c->scan = i;
            break;
        }
        c->in.off += i;
        c->scan = 0;
        handle_line(c, p, i);
    }
    if (c->in.off == c->in.len) {
        c->in.off = c->in.len = 0;
    }
}

static void update_out_interest(struct conn *c)
{
    int want = c->out.len > c->out.off || c->flood_left > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.fd = c->fd};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
            die("epoll_ctl mod");
        }
        c->want_out = want;
    }
}

/* Write what is pending (generating flood events as room appears). 0: closed. */
static int flush_out(struct conn *c)
{
    for (;;) {
        if (c->out.off == c->out.len) {
            if (c->flood_left == 0) {
                break;
            }
            generate_flood(c);
            if (c->flood_left == 0) {
                process_input(c); /* commands queued behind the flood */
            }
        }
        ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                break;
            }
            return 0;
        }
        c->out.off += (size_t)w;
        if (c->out.off < c->out.len) {
            break; /* the socket is full */
        }
        c->out.off = c->out.len = 0;
    }
    update_out_interest(c);
    return 1;
}

static void on_readable(struct conn *c)
{
    buf_reserve(&c->in, READ_CHUNK);
    ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        close_conn(c);
        return;
    }
    if (r > 0) {
        c->in.len += (size_t)r;
        process_input(c);
    }
    if (!flush_out(c)) {
        close_conn(c);
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
                return;
            }
            if (errno == EMFILE || errno == ENFILE) {
                fprintf(stderr, "fakepeer: out of file descriptors\n");
                return;
            }
            die("accept4");
        }
        if ((size_t)fd >= nconns) {
            size_t n = nconns ? nconns : 1024;
            while (n <= (size_t)fd) {
                n *= 2;
            }
            conns = realloc(conns, n * sizeof *conns);
            if (conns == NULL) {
                die("realloc");
            }
            memset(conns + nconns, 0, (n - nconns) * sizeof *conns);
            nconns = n;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            die("calloc");
        }
        c->fd = fd;
        conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            die("epoll_ctl add");
        }
        const char *greeting =
            oob ? "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
                  "\"package\": \"fakepeer\"}, \"capabilities\": [\"oob\"]}}\r\n"
                : "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
                  "\"package\": \"fakepeer\"}, \"capabilities\": []}}\r\n";
        buf_add(&c->out, greeting, strlen(greeting));
        if (!flush_out(c)) {
            close_conn(c);
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv)
{
    struct sockaddr_un addr;
    struct epoll_event events[MAX_EVENTS];

    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH [--oob]\n", argv[0]);
        return 2;
    }
    oob = argc > 2 && strcmp(argv[2], "--oob") == 0;
    if (strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "fakepeer: socket path too long\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) {
        die("socket");
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[1]);
    unlink(argv[1]);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        die("bind");
    }
    if (listen(listen_fd, 4096) < 0) {
        die("listen");
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        die("epoll_create1");
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listen_fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) < 0) {
        die("epoll_ctl listen");
    }
    ev.data.fd = STDIN_FILENO; /* parent gone -> EOF -> exit */
    ev.events = EPOLLIN;
    int watch_stdin = epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0;

    printf("READY %s\n", argv[1]);
    fflush(stdout);

    while (!stopping) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                on_accept();
                continue;
            }
            if (watch_stdin && fd == STDIN_FILENO) {
                char tmp[256];
                ssize_t r = read(STDIN_FILENO, tmp, sizeof tmp);
                if (r <= 0) {
                    stopping = 1;
                }
                continue;
            }
            struct conn *c = (size_t)fd < nconns ? conns[fd] : NULL;
            if (c == NULL) {
                continue;
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(c);
                c = conns[fd];
                if (c == NULL) {
                    continue;
                }
            }
            if (events[i].events & EPOLLOUT) {
                if (!flush_out(c)) {
                    close_conn(c);
                }
            }
        }
    }
    unlink(argv[1]);
    return 0;
}
