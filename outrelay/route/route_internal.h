/* route_internal.h - what the files of the route stage share, and nothing outside it uses
 * (tests excepted): the pure ramp math (ramp.c), the in-memory caps and shaping state
 * (limits.c), its persistence in <state>/route.db (state.c) and the operator's texts
 * (control.c). route.c owns the one struct route_world instance; loop thread only. */
#ifndef OUTRELAY_ROUTE_INTERNAL_H
#define OUTRELAY_ROUTE_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "common/strbuf.h"
#include "config/config.h"
#include "mail/envelope.h"

/* ---- ramp.c: pure functions of the schedule, the overrides and the clock */

enum ramp_mode {
    RAMP_SCHEDULE, /* the schedule decides */
    RAMP_SET,      /* "set P": P until resume */
    RAMP_PAUSE,    /* "pause": the share at the moment of pausing, until resume */
    RAMP_ROLLBACK, /* "rollback": the step before the current one, until resume */
};

struct ramp_override {
    enum ramp_mode mode;
    double percent; /* for every mode but RAMP_SCHEDULE */
    int64_t since;  /* when the operator gave the command */
    /* under RAMP_SCHEDULE with piloted set, the autopilot's step stands in for the calendar */
    int piloted;
    long pilot_step; /* -1: before the first step (share 0) */
};

/* A route group's override: the weights in force (one per egress of the group) until resume.
 * Under RAMP_SCHEDULE with piloted set, the autopilot's step stands in for the calendar. */
struct group_override {
    enum ramp_mode mode;
    double *weights; /* n_egress of the group; NULL under RAMP_SCHEDULE */
    int64_t since;
    int piloted;     /* the group's autopilot is on: pilot_step decides, not the date */
    long pilot_step; /* -1: before the first step (all on the first egress) */
};

const char *ramp_mode_name(enum ramp_mode mode);
int ramp_mode_parse(const char *name, enum ramp_mode *mode);
/* The index of the step in force at `now` (the last one at or before it), -1 before the first. */
long ramp_current_step(const struct ramp_conf *ramp, int64_t now);
/* The schedule alone: 0 before the first step; steps, or straight lines between them. */
double ramp_schedule_share(const struct ramp_conf *ramp, int64_t now);
/* The schedule with the operator's override applied. */
double ramp_share_at(const struct ramp_conf *ramp, const struct ramp_override *o, int64_t now);
/* The percentage "rollback" pins at `now`: the step before the current one, 0 if none. */
double ramp_rollback_percent(const struct ramp_conf *ramp, int64_t now);
void ramp_key(const struct ramp_conf *ramp, const struct envelope *env, size_t rcpt, char *out,
              size_t size);
void ramp_key_parts(char *const *key, size_t n_key, const struct envelope *env, size_t rcpt,
                    char *out, size_t size);
uint32_t ramp_bucket(const char *key);
/* A group's weights at `now` from its schedule alone (before the first step: all on the first
 * egress), and with the operator's override; weights has g->n_egress entries. */
void ramp_group_schedule_weights(const struct route_group *g, int64_t now, double *weights);
void ramp_group_weights(const struct route_group *g, const struct group_override *o, int64_t now,
                        double *weights);
/* The weights of step `step` as written (-1: all on the first egress). */
void ramp_group_step_weights(const struct route_group *g, long step, double *weights);
/* The weights "rollback" pins: the step before the current one (all on the first egress if
 * none). */
void ramp_group_rollback_weights(const struct route_group *g, int64_t now, double *weights);
/* An egress's weighted rendezvous score for a key (higher wins; 0 when weight is 0). */
double ramp_rendezvous_score(const char *key, const char *egress, double weight);
/* The group's egress indexes into order, best score first; returns g->n_egress. The first is
 * the key's egress, the rest the default spill order. */
size_t ramp_group_order(const struct route_group *g, const double *weights, const char *key,
                        size_t *order);
/* 1 when a key in `bucket` goes to ramp.to at `share` percent. */
int ramp_goes_to(uint32_t bucket, double share);
/* "2026-12-01T00:00:00Z" */
void ramp_format_time(int64_t t, char *buf, size_t size);

/* ---- limits.c: caps and shaping per egress x provider */

enum { WIN_MINUTE, WIN_HOUR, WIN_DAY, WIN_COUNT };

struct route_pair {
    const struct egress_conf *egress;
    const char *provider;       /* a provider's name or "other" (lives as long as the config) */
    const struct cap_conf *cap; /* NULL: no caps */
    int64_t window_start[WIN_COUNT];
    int count[WIN_COUNT];
    int dirty; /* counts not yet in route.db */
    /* with a cluster: the cluster-wide counts Redis gave in its last answer for this pair */
    int64_t shared_start[WIN_COUNT];
    int shared[WIN_COUNT];
};

/* One shaping rule applied to one egress x provider. */
struct route_shaping {
    const struct shaping_rule *rule;
    struct route_pair *pair;
    int64_t *hit_times; /* the last rule->hits matching replies (a ring) */
    int n_hits, next_hit;
    int active; /* 0 idle; 1 in force until `until`; then recovering (see limits.c) */
    int64_t started, until, last_hit;
    int64_t throttle_start; /* the current rate period and its message count */
    int throttle_count;
};

struct route_world {
    const struct config *cfg;
    char *state_dir;
    sqlite3 *db;
    struct ramp_override override;         /* the default group's (ramp.from/to) */
    struct group_override *group_override; /* one per cfg->ramp.groups */
    size_t n_providers;                    /* cfg providers + "other" */
    struct route_pair *pairs;              /* n_egress x n_providers */
    struct route_shaping *shaping;         /* n_shaping x n_egress x n_providers */
    size_t n_shaping_states;
    int64_t last_flush;                /* real time of the last counter flush */
    struct autopilot_state *autopilot; /* one per cfg->ramp.groups, then the default group's */
    struct route_group default_group;  /* ramp.from/to and the schedule's percents as weights */
    struct autopilot_ring *rings;      /* replies per egress x provider per minute (lazily) */
};

extern struct route_world route_world;

const char *limits_window_name(int window);
int64_t limits_window_start(int window, int64_t now);
int64_t limits_window_end(int window, int64_t now);
void limits_build(struct route_world *w);
void limits_free(struct route_world *w);
struct route_pair *limits_pair(struct route_world *w, const struct egress_conf *egress,
                               const char *provider);
/* The counts for the windows containing `now` (older windows read as 0); with a cluster the
 * cluster-wide count when Redis's last answer was higher than this instance's own. */
int limits_count_in(struct route_pair *p, int window, int64_t now);
/* The capped windows of p at `now` for the shared counters: returns how many (0: no cap). */
size_t limits_cap_windows(const struct route_pair *p, int64_t now, struct cluster_cap_window *w);
/* Redis's counts for p's windows (spans[i] starting at starts[i]; a reservation's answer). */
void limits_shared_update(struct route_pair *p, size_t n, const char *const *spans,
                          const int64_t *starts, const long long *counts);
void limits_count(struct route_world *w, struct route_pair *p, int64_t now);
/* 0 when p may send at `now`; else the time it may send again, with the reason in why. */
int64_t limits_blocked_until(struct route_world *w, struct route_pair *p, int64_t now, char *why,
                             size_t size);
/* The same for a job that holds a slot reserved in the cluster's shared count (held 1): the
 * count includes it, so the cap stops it only beyond the limit. */
int64_t limits_blocked_until_held(struct route_world *w, struct route_pair *p, int64_t now,
                                  int held, char *why, size_t size);
/* The throttle rate in force for an active entry at `now` (messages, period); 0 = none. */
void limits_throttle_rate(const struct route_world *w, const struct route_shaping *s, int64_t now,
                          int *count, int64_t *period);
/* Lifts what has ended (persisting the change); call before reading the shaping state. */
void limits_expire(struct route_world *w, int64_t now);
/* Feeds a reply to p's rules: 0, or bit 1 when an action started and bit 2 when one of those
 * rules is marked reputation. */
int limits_feedback(struct route_world *w, const struct route_pair *p, int code,
                    const char *enhanced, const char *text, int64_t now);

/* A shaping entry as the instances share it (shared.c): in force or lifted, and its times. */
struct limits_shared_entry {
    int active;
    int64_t started, until, last_hit;
};
enum limits_merge { LIMITS_KEEP, LIMITS_TAKEN, LIMITS_LIFTED };
/* What the local entry becomes when another instance's (changed at remote_at) is learnt at now;
 * conservative: an entry in force on either side stays in force (the later until and last hit
 * win), a lift only ends a local entry that was over when it was lifted. recovers: the rule
 * has a recovery (an entry past its until still throttles). *republish: the local entry holds
 * more than the remote one, so it is written back. Pure. */
enum limits_merge limits_shaping_merge(struct limits_shared_entry *local,
                                       const struct limits_shared_entry *remote, int64_t remote_at,
                                       int64_t now, int recovers, int *republish);

/* ---- autopilot.c: a route group moving along its schedule by itself */

enum autopilot_verdict {
    AUTOPILOT_OFF,      /* not enabled */
    AUTOPILOT_ADVANCE,  /* every gate holds: the next step */
    AUTOPILOT_HOLD,     /* a gate is amber: stay */
    AUTOPILOT_BACK,     /* a red signal: one step back */
    AUTOPILOT_OPERATOR, /* the operator's pause/set/rollback is in force: frozen */
    AUTOPILOT_DONE,     /* on the last step with every gate holding */
};

/* What the replies of the gaining egresses said since max(now - window, held_since). */
struct autopilot_inputs {
    int replies, deferred, bounced; /* transactions answered, 4xx, 5xx */
    int shaping_started;            /* shaping actions started on the gaining egresses */
    int reputation_started;         /* of those, rules marked reputation */
    int shaping_active;             /* actions in force now on the gaining egresses */
    int predicted, predicted_fail;  /* messages checked for them, and DMARC predicted to fail */
    const char *worst_provider;     /* the provider with the highest deferral rate */
    int worst_replies, worst_deferred;
};

struct autopilot_state {
    long step;          /* the step in force; -1 before the first */
    int64_t held_since; /* when it was taken (0: never moved) */
    int64_t last_back;  /* the last step back (0: never) */
    enum autopilot_verdict verdict;
    char gate[40]; /* the gate that decided (holds, steps back); "" when all hold */
    double value, threshold;
    int64_t next_eval;   /* the next evaluation (every AUTOPILOT_TICK seconds) */
    int64_t last_record; /* the last autopilot record */
    int64_t shared_at;   /* when the step, verdict or gate last changed (shared.c) */
    struct autopilot_inputs seen;
};

/* The route group autopilot index gi stands for: cfg->ramp.groups[gi], or for gi == n_groups
 * the default group (ramp.from/to, weights 100 - percent / percent). */
const struct route_group *autopilot_group(const struct route_world *w, size_t gi);

/* Seconds between evaluations. */
#define AUTOPILOT_TICK 60

const char *autopilot_verdict_name(enum autopilot_verdict v);
/* The gates on inputs for a group standing at st at `now`; fills st->verdict, gate, value and
 * threshold. operator: the operator's override is in force. Pure. */
void autopilot_judge(const struct route_group *g, struct autopilot_state *st,
                     const struct autopilot_inputs *in, int operator_override, int64_t now);
/* One reply on egress x provider (code) and what limits_feedback started (bit 1: an action,
 * bit 2: a reputation rule). */
void autopilot_note(struct route_world *w, const struct route_pair *p, int code, int started,
                    int64_t now);
/* One message checked before it leaves through p's egress: its DMARC predicted to pass or not. */
void autopilot_note_prediction(struct route_world *w, const struct route_pair *p, int pass,
                               int64_t now);
/* Evaluates the groups that are due; moves, persists and records. */
void autopilot_tick(struct route_world *w, int64_t now);
/* Collects the inputs of group gi over its window at `now`. */
void autopilot_gather(struct route_world *w, size_t gi, int64_t now, struct autopilot_inputs *in);
/* A group's line for ramp status: "autopilot on, step 2/4, hold: deferral_rate 7.1% > 5%". */
void autopilot_describe(const struct route_world *w, size_t gi, struct strbuf *out);
void autopilot_build(struct route_world *w);
void autopilot_free(struct route_world *w);

/* ---- state.c: <state>/route.db */

int route_db_open(struct route_world *w, char *err, size_t errlen);
void route_db_close(struct route_world *w);
/* Reads the override, counters and active shaping entries into w (built already). */
int route_db_load(struct route_world *w, char *err, size_t errlen);
void route_db_save_override(struct route_world *w);
void route_db_save_group_override(struct route_world *w, size_t group);
void route_db_flush_counters(struct route_world *w);
void route_db_save_shaping(struct route_world *w, const struct route_shaping *s);
void route_db_delete_shaping(struct route_world *w, const struct route_shaping *s);
void route_db_save_autopilot(struct route_world *w, size_t group);

/* Applies a group override read from route.db or learnt from the cluster ("egress=weight,...");
 * a group no longer configured is forgotten. */
void route_db_apply_group_override(struct route_world *w, const char *group, const char *mode_name,
                                   const char *text, int64_t since);

/* Applies a group's autopilot position read from route.db or learnt from the cluster, when the
 * group is still configured with its autopilot on (a step past a shortened schedule becomes its
 * last); returns the group's autopilot index, -1 when forgotten. */
long route_db_apply_autopilot(struct route_world *w, const char *group, int64_t step,
                              int64_t held_since, int64_t last_back, const char *verdict);

/* ---- shared.c: the route state the instances share through cluster/ (cluster.redis) */

/* A local change, written to the other instances: a shaping entry started, extended or lifted
 * at `at`; the default group's (gi -1) or a route group's override; a group's autopilot
 * position (gi as autopilot_group). Nothing without cluster.redis. */
void route_shared_shaping(struct route_world *w, const struct route_shaping *s, int64_t at);
void route_shared_override(struct route_world *w, long gi);
void route_shared_autopilot(struct route_world *w, size_t gi);
/* 1 when this instance drives group gi's autopilot (it holds the group's lease, or there is no
 * cluster); asks for or renews the lease. */
int route_shared_drives_autopilot(struct route_world *w, size_t gi);
/* Registers the kinds with cluster/; on the first call with the cluster configured, writes what
 * route.db holds (older changes lose to newer ones in Redis). From route_init and the tick. */
void route_shared_tick(struct route_world *w);

/* ---- control.c: the operator's texts */

void route_status_report(struct route_world *w, int64_t now, struct strbuf *out);
/* "legacy=80.00% cloud=20.00%": a group's weights as shares. */
void route_format_weights(const struct route_group *g, const double *weights, struct strbuf *out);
/* The index of the route group called name, -1 when none is ("default" is none). */
long route_group_index(const struct config *cfg, const char *name);
int route_plan_report(struct route_world *w, int64_t now, struct strbuf *out);

#endif
