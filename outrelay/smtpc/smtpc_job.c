/* smtpc_job.c - what the SMTP client does to a job list and a job on its own: takes the next
 * job waiting for a destination, fills every recipient's result with one reply, frees a job.
 * Calls nothing else; used by the client's session and transactions and by the job's owner
 * (which fails waiting jobs itself during a back-off). Loop thread only. */
#include "smtpc/smtpc_job.h"

#include <stdio.h>
#include <stdlib.h>

struct job *smtpc_dest_take_job(struct dest *d)
{
    struct job *j = TAILQ_FIRST(&d->jobs);
    if (j) {
        TAILQ_REMOVE(&d->jobs, j, link);
        d->n_jobs--;
    }
    return j;
}

void smtpc_job_fail_all(struct job *job, int code, const char *enhanced, const char *text)
{
    for (size_t i = 0; i < job->n_rcpts; i++) {
        job->results[i].code = code;
        snprintf(job->results[i].enhanced, sizeof job->results[i].enhanced, "%s", enhanced);
        snprintf(job->results[i].text, sizeof job->results[i].text, "%s", text);
    }
}

void smtpc_job_free(struct job *job)
{
    if (!job) return;
    free(job->rcpts);
    free(job->results);
    free(job);
}
