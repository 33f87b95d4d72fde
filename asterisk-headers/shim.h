/*
 * The C side of res_push: what Rust cannot declare itself.
 *
 * Asterisk declares modules, CLI entries and log calls through macros, variadic functions and
 * structs it links into its own lists. Those live here, in C compiled against the real headers,
 * and each forwards to a plain Rust `extern "C"` function (declared at the bottom). Every rp_shim_*
 * function is a thin wrapper with no logic of its own.
 */
#ifndef RES_PUSH_SHIM_H
#define RES_PUSH_SHIM_H

#include "asterisk.h"

#include "asterisk/config.h"
#include "asterisk/module.h"

/* CLI commands, in the order of the shim's entry table; Rust's cli module mirrors it. */
enum rp_cli_command {
	RP_CLI_SHOW_STATUS = 0,
	RP_CLI_PING,
	RP_CLI_COUNT,
};

/* Logging: the message is always passed as data, never as a format. */
int rp_shim_log_enabled(int level);
void rp_shim_log(int level, const char *file, int line, const char *function, const char *message);

/* CLI */
int rp_shim_cli_register(void);
int rp_shim_cli_unregister(void);
void rp_shim_cli_write(int fd, const char *text);

/* Configuration: returns the config, or NULL with *status set to one of RP_CONFIG_*. */
enum rp_config_status {
	RP_CONFIG_OK = 0,
	RP_CONFIG_MISSING,
	RP_CONFIG_UNCHANGED,
	RP_CONFIG_INVALID,
};
struct ast_config *rp_shim_config_load(const char *filename, int only_if_changed, enum rp_config_status *status);

/* The system name from asterisk.conf (empty when unset). */
const char *rp_shim_system_name(void);

/* Threads: created through Asterisk so `core show threads` lists them under their name. */
int rp_shim_thread_create(pthread_t *thread, void *(*start)(void *), void *data, const char *name);

/* Implemented in Rust (res_push/src/entry.rs). */
enum ast_module_load_result rp_module_load(void);
int rp_module_unload(void);
int rp_module_reload(void);
void rp_cli_describe(int command, const char **words, const char **usage);
int rp_cli_exec(int command, int fd, int argc, const char *const *argv);

#endif
