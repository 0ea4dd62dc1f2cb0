/* dirs.c - see dirs.h. Walks the path one component at a time; a component that exists (made by
 * someone else meanwhile, too) is fine as long as it is a directory. Never changes a mode. */
#include "common/dirs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

/* Makes one directory unless it exists. Returns 0 / -1 with err. */
static int make_one(const char *path, mode_t mode, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0 && mkdir(path, mode) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create directory: %s", path, strerror(errno));
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    snprintf(err, errlen, "%s: exists and is not a directory", path);
    return -1;
}

int dirs_make(const char *path, mode_t parent_mode, mode_t leaf_mode, char *err, size_t errlen)
{
    char *copy = xstrdup(path);
    int rc = 0;
    for (char *p = copy + 1; *p && rc == 0; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = '\0';
        rc = make_one(copy, parent_mode, err, errlen);
        *p = '/';
    }
    free(copy);
    return rc == 0 ? make_one(path, leaf_mode, err, errlen) : -1;
}
