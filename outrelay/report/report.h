/* report.h - `outrelay report ...`: what the records say about alignment, the ramp, delivery and
 * continuity, as terminal tables, CSV, JSON, a PowerMTA-style accounting export or one
 * self-contained HTML file. Reads <state>/records.db read-only (safe while the relay runs);
 * never writes to the database except to add missing indexes. Called by main.c only. */
#ifndef OUTRELAY_REPORT_H
#define OUTRELAY_REPORT_H

struct config;

/* argv[0] is "report". Prints to stdout (or -o FILE), errors to stderr.
 * Returns the exit status: 0 ok, 1 failure, 2 usage error. */
int report_run(const struct config *cfg, int argc, char **argv);

#endif
