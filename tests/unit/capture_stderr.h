/* capture_stderr.h - what a unit test's code writes to stderr (log lines), read back: fd 2 is
 * pointed at a temporary file while fn runs. Included by the tests of the log line formats
 * (test_log.c, test_records.c); single-threaded test code only. */
#ifndef OUTRELAY_TEST_CAPTURE_STDERR_H
#define OUTRELAY_TEST_CAPTURE_STDERR_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Runs fn with stderr captured into buf (NUL-terminated, at most size - 1 bytes). */
static void capture_stderr(void (*fn)(void), char *buf, size_t size)
{
    char path[] = "/tmp/outrelay_test_stderr.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, size - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
    unlink(path);
}

#endif
