/*
 * libFuzzer target for qmplex_split and qmplex_split_routed (csrc/lines.c).
 *
 * Each input is split three ways, all of which must satisfy the contract in lines.h
 * and agree with each other:
 *   - max_line 64, 3 lines per call (many calls, the error path is reached often);
 *   - max_line 64, 1 line per call (must report exactly the same spans);
 *   - no length limit, 7 lines per call (reaches the classifier on long lines).
 * Then it is split and routed three ways, each of which must report exactly the lines
 * of the matching split above, with the tag that the table gives their kind and name
 * (worked out here, naively), minus the dropped ones, with the same *consumed and
 * *error:
 *   - a fixed table, catch_all from the input's length, max_line 64, 3 lines per call;
 *   - the same table, the other catch_all, max_line 64, 1 line per call;
 *   - the empty table, catch_all from the length too, no limit, 7 lines per call.
 * Any violation aborts, which libFuzzer reports as a crash. ASan and UBSan catch reads
 * outside the input, which libFuzzer hands over in a buffer of exactly its size.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lines.h"

#define MAX_SPANS 4096

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "fuzz_lines.c:%d: check failed: %s\n", __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

struct result {
    size_t spans[QMPLEX_SPAN_FIELDS * MAX_SPANS];
    size_t nspans;   /* lines recorded (capped at MAX_SPANS; the rest are checked only) */
    size_t nlines;   /* lines reported */
    size_t consumed; /* final *consumed */
    int error;       /* final *error */
};

struct routed {
    size_t spans[QMPLEX_ROUTED_FIELDS * MAX_SPANS];
    size_t nspans;   /* lines recorded (capped at MAX_SPANS) */
    size_t nlines;   /* lines reported */
    size_t dropped;  /* total added to *dropped */
    size_t consumed; /* final *consumed */
    int error;       /* final *error */
};

/*
 * The routing table: names of the seed corpus, prefixes and extensions of them, a
 * 2-byte UTF-8 name, and '"', which can never match (the tag after it must still be
 * its index + QMPLEX_ROUTE_BASE).
 */
static const unsigned char TABLE[] = "\x04" "STOP" "\x02" "ST" "\x01" "X" "\x01" "\""
                                     "\x06" "RESUME" "\x07" "RESUMED" "\x02" "\xc3\xa9"
                                     "\x01" "A" "\x0e" "DEVICE_DELETED";
#define TABLE_LEN (sizeof(TABLE) - 1)
#define TABLE_RECORDS 9

static int is_blank_byte(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Check one reported line against the contract. */
static void check_line(const uint8_t *buf, size_t len, size_t prev, const size_t *o)
{
    size_t kind = o[0], start = o[1], end = o[2], ns = o[3], ne = o[4];
    size_t i;
    int blank = 1;

    CHECK(kind <= QMPLEX_KIND_GREETING);
    CHECK(prev <= start && start <= end && end < len);
    /* end is followed by "\n" or "\r\n", and the line has no "\n" inside. */
    CHECK(buf[end] == '\n' || (end + 1 < len && buf[end] == '\r' && buf[end + 1] == '\n'));
    CHECK(memchr(buf + start, '\n', end - start) == NULL);
    /* Everything skipped since the previous line is blank lines. */
    for (i = prev; i < start; i++) {
        CHECK(is_blank_byte(buf[i]) || buf[i] == '\n');
    }
    for (i = start; i < end; i++) {
        if (!is_blank_byte(buf[i])) {
            blank = 0;
            break;
        }
    }
    CHECK(!blank);
    if (kind == QMPLEX_KIND_EVENT) {
        CHECK(start < ns && ns < ne && ne < end);
        CHECK(buf[ns - 1] == '"' && buf[ne] == '"');
        for (i = ns; i < ne; i++) {
            CHECK(buf[i] >= 0x20 && buf[i] != '"' && buf[i] != '\\');
        }
    } else {
        CHECK(ns == 0 && ne == 0);
    }
    if (kind != QMPLEX_KIND_OTHER) {
        /* Every tagged line starts with optional whitespace and '{'. */
        i = start;
        while (is_blank_byte(buf[i])) {
            i++;
        }
        CHECK(buf[i] == '{');
    }
}

static void split_all(const uint8_t *buf, size_t len, size_t max_line, size_t cap,
                      struct result *res)
{
    size_t out[QMPLEX_SPAN_FIELDS * 8];
    size_t pos = 0, prev = 0, consumed;
    int error, n, i;

    CHECK(cap <= 8);
    res->nspans = 0;
    res->nlines = 0;
    for (;;) {
        consumed = (size_t)-1;
        error = -42;
        n = qmplex_split((const char *)buf, len, pos, max_line, out, cap, &consumed, &error);
        CHECK(n >= 0 && (size_t)n <= cap);
        CHECK(error == QMPLEX_OK || error == QMPLEX_ETOOLONG);
        CHECK(pos <= consumed && consumed <= len);
        for (i = 0; i < n; i++) {
            const size_t *o = out + QMPLEX_SPAN_FIELDS * (size_t)i;
            check_line(buf, len, prev, o);
            CHECK(o[2] < consumed);
            prev = o[2] + 1;
            if (buf[o[2]] == '\r') {
                prev++;
            }
            if (res->nspans < MAX_SPANS) {
                memcpy(res->spans + QMPLEX_SPAN_FIELDS * res->nspans, o,
                       sizeof(size_t) * QMPLEX_SPAN_FIELDS);
                res->nspans++;
            }
            res->nlines++;
        }
        /* consumed is just after a "\n" (or where we started). */
        CHECK(consumed == pos || buf[consumed - 1] == '\n');
        pos = consumed;
        if (error != QMPLEX_OK || (size_t)n < cap) {
            break;
        }
    }
    res->consumed = pos;
    res->error = error;
    if (error == QMPLEX_OK) {
        /* What is left is one partial line that is not too long yet. */
        size_t rest = len - pos;
        CHECK(memchr(buf + pos, '\n', rest) == NULL);
        CHECK(rest <= max_line || (rest == max_line + 1 && buf[len - 1] == '\r'));
    } else {
        /* The line at consumed is too long, complete or not. */
        const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
        size_t stop = nl ? (size_t)(nl - buf) : len;
        size_t content = stop - pos;
        if (content > 0 && buf[stop - 1] == '\r') {
            content--;
        }
        CHECK(content > max_line);
    }
}

/* Split and route the whole input, checking what each call may be checked for alone. */
static void split_routed_all(const uint8_t *buf, size_t len, size_t max_line, size_t cap,
                             const unsigned char *names, size_t names_len, size_t nrecords,
                             int catch_all, struct routed *res)
{
    size_t out[QMPLEX_ROUTED_FIELDS * 8];
    size_t pos = 0, prev = 0, consumed, dropped;
    int error, n, i;

    CHECK(cap <= 8);
    res->nspans = 0;
    res->nlines = 0;
    res->dropped = 0;
    for (;;) {
        consumed = (size_t)-1;
        error = -42;
        dropped = 1000; /* the function only adds to it */
        n = qmplex_split_routed((const char *)buf, len, pos, max_line, names, names_len,
                                catch_all, out, cap, &consumed, &error, &dropped);
        CHECK(n >= 0 && (size_t)n <= cap);
        CHECK(error == QMPLEX_OK || error == QMPLEX_ETOOLONG);
        CHECK(pos <= consumed && consumed <= len);
        CHECK(dropped >= 1000 && dropped - 1000 <= len - pos);
        res->dropped += dropped - 1000;
        for (i = 0; i < n; i++) {
            const size_t *o = out + QMPLEX_ROUTED_FIELDS * (size_t)i;
            size_t tag = o[0];
            CHECK(tag <= QMPLEX_KIND_GREETING ||
                  (tag >= QMPLEX_ROUTE_BASE && tag - QMPLEX_ROUTE_BASE < nrecords));
            CHECK(tag != QMPLEX_KIND_EVENT || catch_all);
            CHECK(prev <= o[1] && o[1] <= o[2] && o[2] < consumed);
            prev = o[2] + 1;
            if (res->nspans < MAX_SPANS) {
                memcpy(res->spans + QMPLEX_ROUTED_FIELDS * res->nspans, o,
                       sizeof(size_t) * QMPLEX_ROUTED_FIELDS);
                res->nspans++;
            }
            res->nlines++;
        }
        CHECK(consumed == pos || buf[consumed - 1] == '\n');
        pos = consumed;
        if (error != QMPLEX_OK || (size_t)n < cap) {
            break;
        }
    }
    res->consumed = pos;
    res->error = error;
}

/* The number of records of a well-formed table (checks that it is). */
static size_t count_records(const unsigned char *names, size_t names_len)
{
    size_t p = 0, i = 0;

    while (p < names_len) {
        CHECK(names[p] > 0 && names[p] < names_len - p);
        p += 1 + names[p];
        i++;
    }
    CHECK(p == names_len);
    return i;
}

/* The tag of an event name by a plain scan of the table, or QMPLEX_KIND_EVENT. */
static size_t naive_tag(const unsigned char *names, size_t names_len, const uint8_t *name,
                        size_t n)
{
    size_t p = 0, i = 0;

    while (p < names_len) {
        size_t l = names[p];
        if (l == n && memcmp(names + p + 1, name, n) == 0) {
            return QMPLEX_ROUTE_BASE + i;
        }
        p += 1 + l;
        i++;
    }
    return QMPLEX_KIND_EVENT;
}

/* r must be plain routed: the lines of plain, tagged by the table, minus dropped ones. */
static void check_routed(const uint8_t *buf, const struct result *plain, const struct routed *r,
                         const unsigned char *names, size_t names_len, int catch_all)
{
    size_t i, k = 0, dropped = 0;

    CHECK(r->consumed == plain->consumed && r->error == plain->error);
    CHECK(r->nlines + r->dropped == plain->nlines);
    for (i = 0; i < plain->nspans; i++) {
        const size_t *o = plain->spans + QMPLEX_SPAN_FIELDS * i;
        size_t tag = o[0];
        if (tag == QMPLEX_KIND_EVENT) {
            tag = naive_tag(names, names_len, buf + o[3], o[4] - o[3]);
            if (tag == QMPLEX_KIND_EVENT && !catch_all) {
                dropped++;
                continue;
            }
        }
        if (k < r->nspans) {
            const size_t *q = r->spans + QMPLEX_ROUTED_FIELDS * k;
            CHECK(q[0] == tag && q[1] == o[1] && q[2] == o[2]);
        }
        k++;
    }
    if (plain->nspans == plain->nlines) { /* everything was recorded */
        CHECK(k == r->nlines && dropped == r->dropped);
    }
}

static struct result a, b, c;
static struct routed ra, rb, rc;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t consumed, dropped;
    int error, catch_all;

    split_all(data, size, 64, 3, &a);
    split_all(data, size, 64, 1, &b);
    CHECK(a.nspans == b.nspans && a.consumed == b.consumed && a.error == b.error);
    CHECK(memcmp(a.spans, b.spans, sizeof(size_t) * QMPLEX_SPAN_FIELDS * a.nspans) == 0);

    split_all(data, size, (size_t)-1, 7, &c);
    CHECK(c.error == QMPLEX_OK);
    /* With no limit the same lines come first, tagged the same way. */
    CHECK(c.nspans >= a.nspans);
    CHECK(memcmp(a.spans, c.spans, sizeof(size_t) * QMPLEX_SPAN_FIELDS * a.nspans) == 0);

    /* Invalid arguments are refused without touching the buffer. */
    CHECK(qmplex_split((const char *)data, size, size + 1, 64, c.spans, 1, &consumed,
                       &error) == QMPLEX_EINVAL);
    CHECK(qmplex_split((const char *)data, size, 0, 64, c.spans, 0, &consumed, &error) ==
          QMPLEX_EINVAL);

    /* Routed: the same lines, tagged by the table, the unwanted events dropped. */
    CHECK(count_records(TABLE, TABLE_LEN) == TABLE_RECORDS);
    catch_all = (int)(size & 1);
    split_routed_all(data, size, 64, 3, TABLE, TABLE_LEN, TABLE_RECORDS, catch_all, &ra);
    check_routed(data, &a, &ra, TABLE, TABLE_LEN, catch_all);
    split_routed_all(data, size, 64, 1, TABLE, TABLE_LEN, TABLE_RECORDS, !catch_all, &rb);
    check_routed(data, &b, &rb, TABLE, TABLE_LEN, !catch_all);
    catch_all = (int)((size >> 1) & 1);
    split_routed_all(data, size, (size_t)-1, 7, NULL, 0, 0, catch_all, &rc);
    check_routed(data, &c, &rc, NULL, 0, catch_all);

    /* Malformed tables and invalid arguments: QMPLEX_EINVAL, *dropped left alone. */
    dropped = 5;
    CHECK(qmplex_split_routed((const char *)data, size, 0, 64, (const unsigned char *)"\x00",
                              1, 0, rc.spans, 1, &consumed, &error, &dropped) ==
          QMPLEX_EINVAL);
    CHECK(qmplex_split_routed((const char *)data, size, 0, 64, TABLE, TABLE_LEN - 1, 0,
                              rc.spans, 1, &consumed, &error, &dropped) == QMPLEX_EINVAL);
    CHECK(qmplex_split_routed((const char *)data, size, 0, 64, NULL, 1, 0, rc.spans, 1,
                              &consumed, &error, &dropped) == QMPLEX_EINVAL);
    CHECK(qmplex_split_routed((const char *)data, size, size + 1, 64, NULL, 0, 0, rc.spans, 1,
                              &consumed, &error, &dropped) == QMPLEX_EINVAL);
    CHECK(qmplex_split_routed((const char *)data, size, 0, 64, NULL, 0, 0, rc.spans, 0,
                              &consumed, &error, &dropped) == QMPLEX_EINVAL);
    CHECK(dropped == 5);
    return 0;
}
