/*
 * qmplex line splitter: finds the complete lines of a QMP receive buffer in one
 * call and tags each with a cheap routing kind (no JSON decoding); optionally routes
 * event lines by name, dropping those nobody wants.
 *
 * The part between the QMPLEX_CDEF markers is read verbatim by build.py and handed
 * to cffi's cdef(): keep it free of #include, #if and macros other than integer
 * #defines. Everything outside the markers is for the C compiler only.
 */
#ifndef QMPLEX_LINES_H
#define QMPLEX_LINES_H

#include <stddef.h>

/* QMPLEX_CDEF_BEGIN */

/* Line kinds (a routing hint; the caller decodes every non-EVENT line fully). */
#define QMPLEX_KIND_OTHER 0     /* unknown: the caller must decode to classify */
#define QMPLEX_KIND_RETURN 1    /* {"return": ...} */
#define QMPLEX_KIND_ERROR 2     /* {"error": ...} */
#define QMPLEX_KIND_EVENT 3     /* {"event": "NAME", ...} or {"timestamp": {...}, "event": "NAME", ...} */
#define QMPLEX_KIND_GREETING 4  /* {"QMP": ...} */

/* Values stored in *error. */
#define QMPLEX_OK 0
#define QMPLEX_ETOOLONG 1       /* the line starting at *consumed is longer than max_line */

/* Return value for invalid arguments (start > len, out_cap == 0, a malformed table). */
#define QMPLEX_EINVAL -1

/* Number of size_t written to out per line: kind, start, end, name_start, name_end. */
#define QMPLEX_SPAN_FIELDS 5

/*
 * Scan buf[start:len) for complete lines ("\n"-terminated) and report up to
 * out_cap of them, in order, as QMPLEX_SPAN_FIELDS size_t each in out:
 *
 *     kind, start, end, name_start, name_end
 *
 * Offsets index buf. end excludes the "\n" and one "\r" just before it. For
 * QMPLEX_KIND_EVENT, [name_start, name_end) is the event name (never empty);
 * for every other kind both are 0. Blank lines (only ' ', '\t', '\r') are
 * skipped, not reported.
 *
 * *consumed is set to the offset just after the last terminator handled (lines
 * reported or blank lines skipped): a partial last line (no "\n") is never
 * reported and *consumed stops before it. When out_cap lines were written, the
 * caller calls again with start = *consumed to get the rest.
 *
 * *error is set to QMPLEX_ETOOLONG when the next line's content (terminator
 * excluded) is longer than max_line, in which case *consumed is the offset of
 * that line's first byte; lines before it are still reported. A partial last
 * line is too long as soon as its known content is: its length, less 1 if its
 * last byte is '\r' (that byte may belong to the terminator). Otherwise
 * *error is QMPLEX_OK.
 *
 * Returns the number of lines written (0..out_cap), or QMPLEX_EINVAL.
 */
int qmplex_split(const char *buf, size_t len, size_t start, size_t max_line,
                 size_t *out, size_t out_cap, size_t *consumed, int *error);

/* Tag of a routed event line: QMPLEX_ROUTE_BASE + index of its name in the table. */
#define QMPLEX_ROUTE_BASE 8

/* Number of size_t written to out per line by qmplex_split_routed: tag, start, end. */
#define QMPLEX_ROUTED_FIELDS 3

/*
 * Like qmplex_split (same lines found, same blank-line skipping, same max_line,
 * *consumed, *error and return-value rules), but event lines are routed by name and
 * each reported line is QMPLEX_ROUTED_FIELDS size_t in out:
 *
 *     tag, start, end
 *
 * names[0:names_len) is the routing table: a sequence of records, each one length
 * byte L (1..255) followed by the L bytes of a name. names_len may be 0 (names may
 * then be NULL). A record running past names_len, a record with L == 0, or names
 * NULL with names_len > 0 makes the table malformed: QMPLEX_EINVAL.
 *
 * For a line that qmplex_split tags QMPLEX_KIND_EVENT with name bytes N: if N is
 * exactly the name of record i (0-based; the first such record), tag is
 * QMPLEX_ROUTE_BASE + i. Otherwise, if catch_all != 0, tag is QMPLEX_KIND_EVENT;
 * if catch_all == 0 the line is dropped: not reported, not counted toward out_cap,
 * but handled (*consumed moves past it) and counted in *dropped, which is only ever
 * added to (the caller zeroes it). Every other line is reported with its kind as the
 * tag, as qmplex_split reports it.
 *
 * The lookup compares each name with the previous event name of the call first, so
 * a flood of one name (routed or dropped) costs one comparison per line; otherwise
 * it scans the table.
 *
 * Returns the number of lines written (0..out_cap), or QMPLEX_EINVAL (also for the
 * invalid arguments of qmplex_split); *dropped is left alone on QMPLEX_EINVAL.
 */
int qmplex_split_routed(const char *buf, size_t len, size_t start, size_t max_line,
                        const unsigned char *names, size_t names_len, int catch_all,
                        size_t *out, size_t out_cap, size_t *consumed, int *error,
                        size_t *dropped);

/* QMPLEX_CDEF_END */

#endif /* QMPLEX_LINES_H */
