/* metrics.h - the Prometheus endpoint (GET /metrics on metrics.listen, libevent's evhttp on the
 * loop). Counters are derived from the event stream (records observer), so they count exactly
 * what the records hold since the process started; gauges (queue by state, ramp share) are
 * read when scraped. */
#ifndef OUTRELAY_METRICS_H
#define OUTRELAY_METRICS_H

#include <event2/event.h>
#include <stddef.h>

int metrics_start(struct event_base *base, const char *listen, char *err, size_t errlen);
void metrics_stop(void);

#endif
