/* injected_clock.h - the unit tests' clock (common/clock.h): a test says what time it is, so
 * nothing it checks depends on today's date. Included by the tests that need it. */
#ifndef OUTRELAY_TEST_INJECTED_CLOCK_H
#define OUTRELAY_TEST_INJECTED_CLOCK_H

#include <stdint.h>

#include "common/clock.h"

static int64_t injected_now;

static int64_t injected_clock(void)
{
    return injected_now * 1000000;
}

/* From now on clock_now() answers t (seconds). */
static void set_clock(int64_t t)
{
    injected_now = t;
    clock_set_source(injected_clock);
}

#endif
