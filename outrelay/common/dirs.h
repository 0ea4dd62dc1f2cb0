/* dirs.h - the one `mkdir -p`: creates a directory and the parents it lacks, with the modes the
 * caller asks for (keys and the spool want 0700 all the way, state directories 0750). Existing
 * directories keep their mode. Plain system calls; any thread. Called by main (spool and state
 * before dropping privileges), spool, records, route (its state directory) and sign (keygen). */
#ifndef OUTRELAY_DIRS_H
#define OUTRELAY_DIRS_H

#include <stddef.h>
#include <sys/types.h>

/* Parents get parent_mode, path itself leaf_mode. Returns 0 when path is (now) a directory, or
 * -1 with err ("PATH: cannot create directory: REASON", "PATH: exists and is not a directory"). */
int dirs_make(const char *path, mode_t parent_mode, mode_t leaf_mode, char *err, size_t errlen);

#endif
