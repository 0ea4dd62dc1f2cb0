/* private_file.c - owner-only modes for the relay's state files; see private_file.h. SQLite
 * itself would create a new database 0644 (SQLITE_DEFAULT_FILE_PERMISSIONS, set with fchmod,
 * so even a strict umask does not help): the file is created here first. */
#include "common/private_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int private_file_fix_mode(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    if ((st.st_mode & 07777) == PRIVATE_FILE_MODE) return 0;
    return fchmod(fd, PRIVATE_FILE_MODE);
}

/* flags: O_CREAT to create a missing file, 0 to leave it missing. */
static int private_file_one(const char *path, int flags, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | flags, PRIVATE_FILE_MODE);
    if (fd < 0) {
        if (errno == ENOENT && !(flags & O_CREAT)) return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = private_file_fix_mode(fd);
    if (rc < 0) snprintf(err, errlen, "cannot make %s private (0600): %s", path, strerror(errno));
    close(fd);
    return rc;
}

int private_file_prepare_sqlite(const char *db_path, char *err, size_t errlen)
{
    static const char *const companions[] = {"-wal", "-shm", "-journal"};
    if (private_file_one(db_path, O_CREAT, err, errlen) < 0) return -1;
    for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", db_path, companions[i]);
        if (private_file_one(path, 0, err, errlen) < 0) return -1;
    }
    return 0;
}
