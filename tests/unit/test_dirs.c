/* test_dirs.c - unit tests for outrelay/common/dirs.c: missing parents are made with the parent
 * mode and the leaf with its own, existing directories keep theirs, a file in the way is an
 * error that names it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/dirs.h"

static char base[64];

static int make_base(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/outrelay-dirs-XXXXXX");
    return mkdtemp(base) ? 0 : -1;
}

static int remove_base(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    return st.st_mode & 07777;
}

static void test_parents_and_leaf_modes(void **state)
{
    (void)state;
    mode_t old = umask(0);
    char path[160], err[256] = "";
    snprintf(path, sizeof path, "%s/a//b/c", base);
    assert_int_equal(dirs_make(path, 0750, 0700, err, sizeof err), 0);
    assert_int_equal(mode_of(path), 0700);
    snprintf(path, sizeof path, "%s/a/b", base);
    assert_int_equal(mode_of(path), 0750);
    /* Again: everything exists, nothing changes. */
    snprintf(path, sizeof path, "%s/a/b/c/", base);
    chmod(path, 0755);
    assert_int_equal(dirs_make(path, 0700, 0700, err, sizeof err), 0);
    assert_int_equal(mode_of(path), 0755);
    umask(old);
}

static void test_file_in_the_way(void **state)
{
    (void)state;
    char file[160], path[200], err[256] = "";
    snprintf(file, sizeof file, "%s/plain", base);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(dirs_make(file, 0700, 0700, err, sizeof err), -1);
    assert_non_null(strstr(err, "exists and is not a directory"));
    snprintf(path, sizeof path, "%s/below", file);
    assert_int_equal(dirs_make(path, 0700, 0700, err, sizeof err), -1);
    assert_non_null(strstr(err, file));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parents_and_leaf_modes),
        cmocka_unit_test(test_file_in_the_way),
    };
    return cmocka_run_group_tests(tests, make_base, remove_base);
}
