/* tlsrpt_send.h - the daily TLS-RPT sender (tlsrpt_send.c): main.c starts it after the queue,
 * hands it each reloaded configuration, stops it before the queue stops and closes it after the
 * spool's last callbacks. Loop thread only. */
#ifndef OUTRELAY_TLSRPT_SEND_H
#define OUTRELAY_TLSRPT_SEND_H

#include <event2/event.h>

struct config;

/* Who the reports say they are from: tls_reports settings, else their defaults (the hostname;
 * tlsrpt-noreply@<hostname>). Strings point into cfg or who->from_buf. Any thread. */
struct tlsrpt_who {
    const char *organization, *contact, *submitter, *from;
    char from_buf[300];
};
void tlsrpt_who(const struct config *cfg, struct tlsrpt_who *who);

/* Checks every few seconds whether yesterday's reports are due (tls_reports.hour). */
void tlsrpt_start(struct event_base *base, const struct config *cfg);
void tlsrpt_reload(const struct config *cfg);
/* One check now (the timer's work). */
void tlsrpt_tick(void);
/* No more checks or lookups; reports being spooled still get remembered. */
void tlsrpt_stop(void);
/* Closes <state>/tlsrpt.db. */
void tlsrpt_close(void);

#endif
