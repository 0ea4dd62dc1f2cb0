/* clock.c - the one injectable clock (clock.h). Owns no state besides the test source pointer;
 * the file clock re-reads its file on every call, so it is for tests only. */
#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static int64_t (*clock_source)(void);

static int64_t clock_system_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* OUTRELAY_TEST_CLOCK: the time written in the file, advanced by the real time since the file's
 * modification. Returns -1 when the file cannot be read (the caller falls back to the system). */
static int64_t clock_file_us(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    long long t = 0;
    struct stat st;
    int ok = fscanf(f, "%lld", &t) == 1 && fstat(fileno(f), &st) == 0;
    fclose(f);
    if (!ok) return -1;
    int64_t written_us = (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
    int64_t elapsed = clock_system_us() - written_us;
    if (elapsed < 0) elapsed = 0;
    return (int64_t)t * 1000000 + elapsed;
}

int64_t clock_now_us(void)
{
    if (clock_source) return clock_source();
    const char *path = getenv("OUTRELAY_TEST_CLOCK");
    if (path && *path) {
        int64_t t = clock_file_us(path);
        if (t >= 0) return t;
    }
    return clock_system_us();
}

int64_t clock_now(void)
{
    int64_t us = clock_now_us();
    return us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
}

void clock_set_source(int64_t (*now_us)(void))
{
    clock_source = now_us;
}
