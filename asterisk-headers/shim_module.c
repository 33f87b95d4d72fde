/*
 * The C half of res_push.so; see shim.h for why it exists.
 */
#include "shim.h"

#include "asterisk/cli.h"
#include "asterisk/logger.h"
#include "asterisk/paths.h"
#include "asterisk/utils.h"

/* Asterisk's own macro fills in the GPL key, build-option sum and self symbol from the real
 * headers, so the loader's ABI check applies to us exactly as to any bundled module. */
AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER, "VoIP push notifications (RFC 8599)",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = rp_module_load,
	.unload = rp_module_unload,
	.reload = rp_module_reload,
	.load_pri = AST_MODPRI_APP_DEPEND,
	.requires = "res_pjsip,res_pjsip_session,res_sorcery_astdb",
	/* Loaded first when present, so sorcery.conf can map push_binding to it. */
	.optional_modules = "res_sorcery_realtime",
);

int rp_shim_log_enabled(int level)
{
	if (level == __LOG_DEBUG) {
		return DEBUG_ATLEAST(1);
	}
	return 1;
}

void rp_shim_log(int level, const char *file, int line, const char *function, const char *message)
{
	ast_log(level, file, line, function, "%s\n", message);
}

static char *rp_cli_handler(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a);

/* Linked into Asterisk's CLI list while registered, so it must live in static storage. */
static struct ast_cli_entry rp_cli_entries[RP_CLI_COUNT] = {
	[RP_CLI_SHOW_STATUS] = AST_CLI_DEFINE(rp_cli_handler, "Show res_push status and sidecar link"),
	[RP_CLI_PING] = AST_CLI_DEFINE(rp_cli_handler, "Round-trip a no-op job through the sidecar"),
	[RP_CLI_SHOW_BINDINGS] = AST_CLI_DEFINE(rp_cli_handler, "List push bindings"),
	[RP_CLI_SHOW_BINDING] = AST_CLI_DEFINE(rp_cli_handler, "Show the push bindings of an AOR in detail"),
	[RP_CLI_DELETE_BINDING] = AST_CLI_DEFINE(rp_cli_handler, "Delete push bindings"),
	[RP_CLI_SEND] = AST_CLI_DEFINE(rp_cli_handler, "Send a push to the devices of an AOR"),
	[RP_CLI_TEST] = AST_CLI_DEFINE(rp_cli_handler, "Send a test push to a token"),
	[RP_CLI_SHOW_MESSAGES] = AST_CLI_DEFINE(rp_cli_handler, "List messages waiting for sleeping devices"),
	[RP_CLI_DELETE_MESSAGES] = AST_CLI_DEFINE(rp_cli_handler, "Delete the queued messages of an AOR"),
};

static char *rp_cli_handler(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	int index = e - rp_cli_entries;
	const char *words = NULL;
	const char *usage = NULL;

	switch (cmd) {
	case CLI_INIT:
		rp_cli_describe(index, &words, &usage);
		e->command = (char *) words;
		e->usage = usage;
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}

	switch (rp_cli_exec(index, a->fd, a->argc, a->argv)) {
	case RESULT_SUCCESS:
		return CLI_SUCCESS;
	case RESULT_SHOWUSAGE:
		return CLI_SHOWUSAGE;
	default:
		return CLI_FAILURE;
	}
}

int rp_shim_cli_register(void)
{
	return ast_cli_register_multiple(rp_cli_entries, ARRAY_LEN(rp_cli_entries));
}

int rp_shim_cli_unregister(void)
{
	return ast_cli_unregister_multiple(rp_cli_entries, ARRAY_LEN(rp_cli_entries));
}

void rp_shim_cli_write(int fd, const char *text)
{
	ast_cli(fd, "%s", text);
}

struct ast_config *rp_shim_config_load(const char *filename, int only_if_changed, enum rp_config_status *status)
{
	struct ast_flags flags = { only_if_changed ? CONFIG_FLAG_FILEUNCHANGED : 0 };
	struct ast_config *cfg = ast_config_load(filename, flags);

	if (cfg == CONFIG_STATUS_FILEMISSING) {
		*status = RP_CONFIG_MISSING;
		return NULL;
	}
	if (cfg == CONFIG_STATUS_FILEUNCHANGED) {
		*status = RP_CONFIG_UNCHANGED;
		return NULL;
	}
	if (cfg == CONFIG_STATUS_FILEINVALID) {
		*status = RP_CONFIG_INVALID;
		return NULL;
	}
	*status = RP_CONFIG_OK;
	return cfg;
}

const char *rp_shim_system_name(void)
{
	return ast_config_AST_SYSTEM_NAME;
}

int rp_shim_thread_create(pthread_t *thread, void *(*start)(void *), void *data, const char *name)
{
	return ast_pthread_create_stack(thread, NULL, start, data, 0, __FILE__, __PRETTY_FUNCTION__, __LINE__, name);
}
