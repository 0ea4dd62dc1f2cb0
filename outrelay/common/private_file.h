/* private_file.h - the files the relay creates under its state and spool directories hold mail
 * metadata (senders, recipients, Message-IDs): they are owner-only (0600) whatever the umask
 * and the directory's mode. Called by records and route before they open their SQLite files;
 * the spool sets the mode of its segments itself. Any thread; plain system calls. */
#ifndef OUTRELAY_PRIVATE_FILE_H
#define OUTRELAY_PRIVATE_FILE_H

#include <stddef.h>

#define PRIVATE_FILE_MODE 0600

/* Creates db_path (0600) if missing and sets 0600 on it and on an existing -wal, -shm or
 * -journal beside it (files of an older run). SQLite creates -wal and -shm with the mode of the
 * database file, so they follow. Returns 0 / -1 with err filled. */
int private_file_prepare_sqlite(const char *db_path, char *err, size_t errlen);
/* Sets 0600 on an open file if its mode differs. Returns 0 / -1 (errno set). */
int private_file_fix_mode(int fd);

#endif
