/* client_limits.h - who may open another SMTP connection, after Postfix's anvil: the total
 * (limits.max_connections), the share strangers may hold (max_connections minus
 * reserved_for_origins), and per client address the concurrent connections and the connection
 * attempts per period. Clients in an origin's networks (known by address at connect) are exempt
 * from the per-client limits and may use the reserve. Pure bookkeeping: no sockets, no logging,
 * no clock of its own (callers pass the time). Owned by smtpd.c; loop thread only. */
#ifndef OUTRELAY_CLIENT_LIMITS_H
#define OUTRELAY_CLIENT_LIMITS_H

#include <stdint.h>

struct client_limits;

struct client_limits_conf {
    int max_total;            /* every connection, origins included */
    int reserved_for_origins; /* strangers may hold max_total minus this */
    int per_client;           /* concurrent connections per stranger address; 0 = no limit */
    int rate_count;           /* attempts per stranger address per rate_period; 0 = no limit */
    int64_t rate_period;      /* seconds */
};

enum client_limits_verdict {
    CLIENT_LIMITS_OK,             /* counted: call client_limits_disconnect() when it ends */
    CLIENT_LIMITS_FULL,           /* max_total connections are open */
    CLIENT_LIMITS_STRANGERS_FULL, /* what is left is reserved for origins */
    CLIENT_LIMITS_CLIENT_COUNT,   /* this address has per_client connections open */
    CLIENT_LIMITS_CLIENT_RATE,    /* this address used up its attempts in this period */
};

struct client_limits_result {
    enum client_limits_verdict verdict;
    int count;   /* what was compared with the limit, this attempt included: connections, or
                    attempts in the period for CLIENT_LIMITS_CLIENT_RATE */
    int refused; /* refusals of this kind (per address, or overall) in the current period */
    int log_it;  /* 1 for the 1st, 2nd, 4th, 8th... refusal in a period: a flood logs a few
                    lines a minute, not one per connection */
};

/* Never fails; conf is copied. */
struct client_limits *client_limits_new(const struct client_limits_conf *conf);
void client_limits_free(struct client_limits *cl);
/* New limits (a reload); open connections and this period's attempts stay counted. */
void client_limits_reconfigure(struct client_limits *cl, const struct client_limits_conf *conf);

/* A connection attempt from address (a text key, e.g. "192.0.2.1") at unix time now.
 * is_origin: the address is in an origin's networks. Attempts count toward the rate even when
 * refused, as in anvil: a client that keeps hammering stays refused. */
struct client_limits_result client_limits_connect(struct client_limits *cl, const char *address,
                                                  int is_origin, int64_t now);
/* The end of a connection that client_limits_connect() accepted, with the same arguments. */
void client_limits_disconnect(struct client_limits *cl, const char *address, int is_origin);

/* Open connections: all of them, and those of clients outside the origins' networks. */
int client_limits_total(const struct client_limits *cl);
int client_limits_strangers(const struct client_limits *cl);

#endif
