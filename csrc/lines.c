/*
 * qmplex line splitter (see lines.h for the contract).
 *
 * Theory of operation: one call handles a whole receive buffer, so the GIL and
 * the C boundary are crossed once per recv(), not once per line. memchr finds the
 * terminators; each line is then classified by looking only at its first key
 * (and, for QEMU's usual event layout, past the "timestamp" object). The rules
 * must match qmplex.framing.split_python byte for byte: the Python test suite
 * checks that for arbitrary input.
 *
 * Nothing here allocates, and nothing reads outside buf[start:len).
 */
#include <string.h>

#include "lines.h"

/* A QMP line never contains "\n", so JSON whitespace inside it is one of these. */
static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static size_t skip_ws(const unsigned char *b, size_t p, size_t end)
{
    while (p < end && is_ws(b[p])) {
        p++;
    }
    return p;
}

/* Does b[p:end) start with the n bytes of lit? */
static int has_prefix(const unsigned char *b, size_t p, size_t end, const char *lit, size_t n)
{
    return end - p >= n && memcmp(b + p, lit, n) == 0;
}

/*
 * b[p-1] is the opening '"' of an event name. The name runs to the next '"' and
 * must be non-empty with no '\\' and no control byte: anything else is left for
 * the full decoder (kind OTHER).
 */
static int read_name(const unsigned char *b, size_t p, size_t end, size_t *ns, size_t *ne)
{
    size_t q = p;

    while (q < end && b[q] != '"') {
        if (b[q] == '\\' || b[q] < 0x20) {
            return 0;
        }
        q++;
    }
    if (q == end || q == p) {
        return 0;
    }
    *ns = p;
    *ne = q;
    return 1;
}

/* b[p:end) follows the key "event": expect ws ':' ws '"' NAME '"'. */
static int event_value(const unsigned char *b, size_t p, size_t end, size_t *ns, size_t *ne)
{
    p = skip_ws(b, p, end);
    if (p == end || b[p] != ':') {
        return 0;
    }
    p = skip_ws(b, p + 1, end);
    if (p == end || b[p] != '"') {
        return 0;
    }
    return read_name(b, p + 1, end, ns, ne);
}

/*
 * b[p:end) follows the key "timestamp": expect ws ':' ws '{' ... '}' with no '{'
 * before that first '}', then ws ',' ws "event" and an event value.
 */
static int timestamp_then_event(const unsigned char *b, size_t p, size_t end, size_t *ns,
                                size_t *ne)
{
    p = skip_ws(b, p, end);
    if (p == end || b[p] != ':') {
        return 0;
    }
    p = skip_ws(b, p + 1, end);
    if (p == end || b[p] != '{') {
        return 0;
    }
    p++;
    while (p < end && b[p] != '}') {
        if (b[p] == '{') {
            return 0;
        }
        p++;
    }
    if (p == end) {
        return 0;
    }
    p = skip_ws(b, p + 1, end);
    if (p == end || b[p] != ',') {
        return 0;
    }
    p = skip_ws(b, p + 1, end);
    if (!has_prefix(b, p, end, "\"event\"", 7)) {
        return 0;
    }
    return event_value(b, p + 7, end, ns, ne);
}

/*
 * Classify the non-blank line b[p:end) (p is its first non-whitespace byte).
 * Sets *ns, *ne for events.
 */
static size_t classify(const unsigned char *b, size_t p, size_t end, size_t *ns, size_t *ne)
{
    const unsigned char *q;
    size_t key, klen;

    *ns = 0;
    *ne = 0;
    if (b[p] != '{') {
        return QMPLEX_KIND_OTHER;
    }
    p = skip_ws(b, p + 1, end);
    if (p == end || b[p] != '"') {
        return QMPLEX_KIND_OTHER;
    }
    key = p + 1;
    q = memchr(b + key, '"', end - key);
    if (q == NULL) {
        return QMPLEX_KIND_OTHER;
    }
    klen = (size_t)(q - (b + key));
    p = key + klen + 1; /* just after the key's closing quote */
    /* None of the keys below contains '\\', so an escaped key never matches. */
    switch (klen) {
    case 3:
        if (memcmp(b + key, "QMP", 3) == 0) {
            return QMPLEX_KIND_GREETING;
        }
        break;
    case 5:
        if (memcmp(b + key, "error", 5) == 0) {
            return QMPLEX_KIND_ERROR;
        }
        if (memcmp(b + key, "event", 5) == 0 && event_value(b, p, end, ns, ne)) {
            return QMPLEX_KIND_EVENT;
        }
        break;
    case 6:
        if (memcmp(b + key, "return", 6) == 0) {
            return QMPLEX_KIND_RETURN;
        }
        break;
    case 9:
        if (memcmp(b + key, "timestamp", 9) == 0 && timestamp_then_event(b, p, end, ns, ne)) {
            return QMPLEX_KIND_EVENT;
        }
        break;
    default:
        break;
    }
    *ns = 0;
    *ne = 0;
    return QMPLEX_KIND_OTHER;
}

int qmplex_split(const char *buf, size_t len, size_t start, size_t max_line,
                 size_t *out, size_t out_cap, size_t *consumed, int *error)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t pos = start;
    size_t n = 0;

    *error = QMPLEX_OK;
    *consumed = start;
    if (start > len || out_cap == 0 || out_cap > (size_t)0x7fffffff) {
        return QMPLEX_EINVAL;
    }
    while (n < out_cap) {
        const unsigned char *nl;
        size_t lf, end, first;

        if (pos == len) {
            break;
        }
        nl = memchr(b + pos, '\n', len - pos);
        if (nl == NULL) {
            /* Partial last line: too long already if its known content is. */
            size_t known = len - pos;
            if (b[len - 1] == '\r') {
                known--;
            }
            if (known > max_line) {
                *error = QMPLEX_ETOOLONG;
            }
            break;
        }
        lf = (size_t)(nl - b);
        end = lf;
        if (end > pos && b[end - 1] == '\r') {
            end--;
        }
        if (end - pos > max_line) {
            *error = QMPLEX_ETOOLONG;
            break;
        }
        first = skip_ws(b, pos, end);
        if (first < end) {
            size_t *o = out + QMPLEX_SPAN_FIELDS * n;
            o[0] = classify(b, first, end, &o[3], &o[4]);
            o[1] = pos;
            o[2] = end;
            n++;
        }
        pos = lf + 1;
    }
    *consumed = pos;
    return (int)n;
}
