/*
 * Messages (shim_message.c): the `push` message technology, the PUSH_MESSAGE_STATUS() dialplan
 * function, and a wrapper for ast_msg_set_* (variadic: Rust never passes a format, "%s" here).
 * Everything they decide is in Rust (messages.rs, res_push_core::message).
 */
#include "shim.h"

#include "asterisk/message.h"
#include "asterisk/pbx.h"

static const struct ast_msg_tech rp_msg_tech = {
	.name = "push",
	.msg_send = rp_msg_send,
};

static int rp_msg_status_read(struct ast_channel *chan, const char *cmd, char *data, char *buf, size_t len)
{
	return rp_msg_status(buf, len);
}

static struct ast_custom_function rp_msg_status_function = {
	.name = "PUSH_MESSAGE_STATUS",
	.read = rp_msg_status_read,
	/* Not in Asterisk's XML documentation: without this, registering logs a warning. */
	.docsrc = AST_STATIC_DOC,
};

int rp_shim_msg_register(void)
{
	if (ast_custom_function_register(&rp_msg_status_function)) {
		return -1;
	}
	if (ast_msg_tech_register(&rp_msg_tech)) {
		ast_custom_function_unregister(&rp_msg_status_function);
		return -1;
	}
	return 0;
}

void rp_shim_msg_unregister(void)
{
	ast_msg_tech_unregister(&rp_msg_tech);
	ast_custom_function_unregister(&rp_msg_status_function);
}

void rp_shim_set_global(const char *name, const char *value)
{
	pbx_builtin_setvar_helper(NULL, name, value);
}

struct ast_msg *rp_shim_msg_new(const char *to, const char *from, const char *body)
{
	struct ast_msg *msg = ast_msg_alloc();

	if (!msg) {
		return NULL;
	}
	if (ast_msg_set_to(msg, "%s", to) || ast_msg_set_from(msg, "%s", from)
		|| ast_msg_set_body(msg, "%s", body)) {
		ast_msg_destroy(msg);
		return NULL;
	}
	return msg;
}
