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
 * qmplex_split_routed finds and classifies lines the same way (next_line and
 * classify are shared), then looks each event name up in the caller's table and
 * reports a route tag instead of the name span, or drops the line: the Python side
 * gets three small ints per wanted line and nothing at all for unwanted events.
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
    const unsigned char *rbrace;

    p = skip_ws(b, p, end);
    if (p == end || b[p] != ':') {
        return 0;
    }
    p = skip_ws(b, p + 1, end);
    if (p == end || b[p] != '{') {
        return 0;
    }
    p++;
    /* Two memchr passes (vectorised in libc) instead of a loop over every byte: the
     * object is most of an event line's head. */
    rbrace = memchr(b + p, '}', end - p);
    if (rbrace == NULL) {
        return 0;
    }
    if (memchr(b + p, '{', (size_t)(rbrace - (b + p))) != NULL) {
        return 0;
    }
    p = skip_ws(b, (size_t)(rbrace - b) + 1, end);
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

/* What next_line found. */
enum { LINE_FOUND, LINE_NONE, LINE_TOO_LONG };

/*
 * Find the next non-blank complete line of b[*pos:len), skipping blank lines on the
 * way. LINE_FOUND: its content is b[*ls:*le) (terminator excluded), its first
 * non-blank byte is at *first, and *pos is just after its "\n". Otherwise *pos is the
 * start of what is left: nothing or a partial line within max_line (LINE_NONE), or a
 * line, complete or partial, whose content is longer than max_line (LINE_TOO_LONG).
 * The one place lines are found, for both entry points.
 */
static inline int next_line(const unsigned char *b, size_t len, size_t *pos, size_t max_line,
                            size_t *ls, size_t *le, size_t *first)
{
    size_t p = *pos;

    while (p < len) {
        const unsigned char *nl = memchr(b + p, '\n', len - p);
        size_t lf, end, f;

        if (nl == NULL) {
            /* Partial last line: too long already if its known content is. */
            size_t known = len - p;
            if (b[len - 1] == '\r') {
                known--;
            }
            *pos = p;
            return known > max_line ? LINE_TOO_LONG : LINE_NONE;
        }
        lf = (size_t)(nl - b);
        end = lf;
        if (end > p && b[end - 1] == '\r') {
            end--;
        }
        if (end - p > max_line) {
            *pos = p;
            return LINE_TOO_LONG;
        }
        f = skip_ws(b, p, end);
        if (f < end) {
            *ls = p;
            *le = end;
            *first = f;
            *pos = lf + 1;
            return LINE_FOUND;
        }
        p = lf + 1; /* a blank line */
    }
    *pos = p;
    return LINE_NONE;
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
        size_t ls, le, first;
        size_t *o;
        int found = next_line(b, len, &pos, max_line, &ls, &le, &first);

        if (found != LINE_FOUND) {
            if (found == LINE_TOO_LONG) {
                *error = QMPLEX_ETOOLONG;
            }
            break;
        }
        o = out + QMPLEX_SPAN_FIELDS * n;
        o[0] = classify(b, first, le, &o[3], &o[4]);
        o[1] = ls;
        o[2] = le;
        n++;
    }
    *consumed = pos;
    return (int)n;
}

/* --- Routing -------------------------------------------------------------------------- */

/* Is names[0:names_len) a well-formed table (see lines.h)? */
static int table_ok(const unsigned char *names, size_t names_len)
{
    size_t p = 0;

    if (names == NULL) {
        return names_len == 0;
    }
    while (p < names_len) {
        size_t l = names[p];
        /* p < names_len, so names_len - p - 1 does not wrap. */
        if (l == 0 || l > names_len - p - 1) {
            return 0;
        }
        p += 1 + l;
    }
    return 1;
}

/*
 * The tag of the event name name[0:n) (n >= 1): QMPLEX_ROUTE_BASE + the index of the
 * first record equal to it, or QMPLEX_KIND_EVENT when there is none. The table is
 * well-formed.
 */
static size_t lookup(const unsigned char *names, size_t names_len, const unsigned char *name,
                     size_t n)
{
    size_t p = 0, i = 0;

    while (p < names_len) {
        size_t l = names[p];
        if (l == n && names[p + 1] == name[0] && memcmp(names + p + 1, name, n) == 0) {
            return QMPLEX_ROUTE_BASE + i;
        }
        p += 1 + l;
        i++;
    }
    return QMPLEX_KIND_EVENT;
}

int qmplex_split_routed(const char *buf, size_t len, size_t start, size_t max_line,
                        const unsigned char *names, size_t names_len, int catch_all,
                        size_t *out, size_t out_cap, size_t *consumed, int *error,
                        size_t *dropped)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t pos = start;
    size_t n = 0, ndropped = 0;
    /* The previous event name of this call (in buf) and its lookup result. */
    const unsigned char *last = NULL;
    size_t last_n = 0, last_tag = QMPLEX_KIND_EVENT;

    *error = QMPLEX_OK;
    *consumed = start;
    if (start > len || out_cap == 0 || out_cap > (size_t)0x7fffffff ||
        !table_ok(names, names_len)) {
        return QMPLEX_EINVAL;
    }
    while (n < out_cap) {
        size_t ls, le, first, ns, ne, tag;
        size_t *o;
        int found = next_line(b, len, &pos, max_line, &ls, &le, &first);

        if (found != LINE_FOUND) {
            if (found == LINE_TOO_LONG) {
                *error = QMPLEX_ETOOLONG;
            }
            break;
        }
        tag = classify(b, first, le, &ns, &ne);
        if (tag == QMPLEX_KIND_EVENT) {
            size_t nlen = ne - ns;
            if (last != NULL && nlen == last_n && memcmp(b + ns, last, nlen) == 0) {
                tag = last_tag;
            } else {
                tag = lookup(names, names_len, b + ns, nlen);
                last = b + ns;
                last_n = nlen;
                last_tag = tag;
            }
            if (tag == QMPLEX_KIND_EVENT && !catch_all) {
                ndropped++;
                continue;
            }
        }
        o = out + QMPLEX_ROUTED_FIELDS * n;
        o[0] = tag;
        o[1] = ls;
        o[2] = le;
        n++;
    }
    *consumed = pos;
    *dropped += ndropped;
    return (int)n;
}
