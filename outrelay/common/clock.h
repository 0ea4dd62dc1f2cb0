/* clock.h - the one clock every component reads: the ramp, caps and shaping windows, retry
 * times, queue lifetimes, records, DNS caches, Received:/Date: stamps and log lines. Nothing
 * else in outrelay may call time(), gettimeofday() or clock_gettime(CLOCK_REALTIME).
 *
 * The source is injectable:
 *   - unit tests call clock_set_source() with their own function (a fixed or stepped time);
 *   - integration tests set OUTRELAY_TEST_CLOCK to a file holding a unix time T: the clock then
 *     reads T plus the real time elapsed since the file was last written, so the test can jump
 *     the calendar (rewrite the file) while timers and retries still move forward;
 *   - otherwise it is the system's wall clock.
 * Any thread may call it. clock_set_source() is for single-threaded test set-up only. */
#ifndef OUTRELAY_CLOCK_H
#define OUTRELAY_CLOCK_H

#include <stdint.h>

/* Unix time in seconds and in microseconds. */
int64_t clock_now(void);
int64_t clock_now_us(void);

/* Replaces the source (microseconds since the epoch); NULL restores the default one. */
void clock_set_source(int64_t (*now_us)(void));

#endif
