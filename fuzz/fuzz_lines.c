/*
 * libFuzzer target for qmplex_split (csrc/lines.c).
 *
 * Each input is split three ways, all of which must satisfy the contract in lines.h
 * and agree with each other:
 *   - max_line 64, 3 lines per call (many calls, the error path is reached often);
 *   - max_line 64, 1 line per call (must report exactly the same spans);
 *   - no length limit, 7 lines per call (reaches the classifier on long lines).
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
    size_t consumed; /* final *consumed */
    int error;       /* final *error */
};

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

static struct result a, b, c;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t consumed;
    int error;

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
    return 0;
}
