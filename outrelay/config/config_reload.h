/* config_reload.h - what a running relay cannot take from a reloaded configuration file: the
 * settings bound at start (listen addresses, spool and state folders, user, control socket, the
 * server certificate, the users file, DNS servers, logging, metrics, DKIM header lists). Pure
 * comparison of two loaded configs; the serve command logs the answer on SIGHUP and applies the
 * rest through each module's *_reload(). Any thread. */
#ifndef OUTRELAY_CONFIG_RELOAD_H
#define OUTRELAY_CONFIG_RELOAD_H

#include "common/strbuf.h"
#include "config/config.h"

/* Appends to out the names of the settings that differ between running and fresh and need a
 * restart ("listen, spool"), comma separated. Returns how many. */
int config_restart_needed(const struct config *running, const struct config *fresh,
                          struct strbuf *out);

#endif
