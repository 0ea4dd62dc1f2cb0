/* fuzz_config.c - the configuration loader config_load (config/) on a YAML file: the input is
 * written to a file in a fresh temporary folder and loaded. Asserts that the loader returns
 * either a configuration or at least one non-empty error, never both, and that config_free and
 * config_errors_free release everything (LeakSanitizer). Inputs naming dev/, proc/ or sys/
 * are skipped: a users_file of /dev/zero would be read forever, which is no bug. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const endless[] = {"dev/", "proc/", "sys/"};
    for (size_t i = 0; i < sizeof endless / sizeof endless[0]; i++)
        if (memmem(data, size, endless[i], strlen(endless[i]))) return 0;
    /* a folder per input: libFuzzer ends without running atexit handlers */
    char folder[] = "/tmp/outrelay-fuzz-config-XXXXXX", path[sizeof folder + 16];
    if (!mkdtemp(folder)) abort();
    snprintf(path, sizeof path, "%s/config.yaml", folder);
    FILE *f = fopen(path, "w");
    if (!f) abort();
    if (size && fwrite(data, size, 1, f) != 1) abort();
    if (fclose(f) != 0) abort();

    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    assert((cfg != NULL) == (errs.n == 0));
    for (size_t i = 0; i < errs.n; i++)
        assert(errs.items[i] && errs.items[i][0]);
    if (cfg) {
        assert(cfg->hostname && cfg->hostname[0]);
        assert(cfg->n_listen == 0 || cfg->listen);
        assert(cfg->n_egress == 0 || cfg->egress);
    }
    config_free(cfg);
    config_errors_free(&errs);
    unlink(path);
    rmdir(folder);
    return 0;
}
