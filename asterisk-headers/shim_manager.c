/*
 * AMI: actions forwarded to Rust, and events and replies whose text Rust composes. Text is
 * always passed as the argument of a "%s" format.
 */
#include "shim.h"

#include "asterisk/manager.h"

static int rp_ami_binding_list(struct mansession *s, const struct message *m)
{
	return rp_ami_exec(RP_AMI_BINDING_LIST, s, m);
}

static int rp_ami_binding_add(struct mansession *s, const struct message *m)
{
	return rp_ami_exec(RP_AMI_BINDING_ADD, s, m);
}

static int rp_ami_binding_remove(struct mansession *s, const struct message *m)
{
	return rp_ami_exec(RP_AMI_BINDING_REMOVE, s, m);
}

static int rp_ami_push_send(struct mansession *s, const struct message *m)
{
	return rp_ami_exec(RP_AMI_PUSH_SEND, s, m);
}

int rp_shim_manager_register(void)
{
	int res = 0;

	res |= ast_manager_register2("PushBindingList", EVENT_FLAG_SYSTEM | EVENT_FLAG_REPORTING,
		rp_ami_binding_list, AST_MODULE_SELF, "List push bindings",
		"Lists push bindings (all, or those of AOR:), one PushBindingEntry event each.");
	res |= ast_manager_register2("PushBindingAdd", EVENT_FLAG_SYSTEM | EVENT_FLAG_CONFIG,
		rp_ami_binding_add, AST_MODULE_SELF, "Add or refresh a push binding",
		"Headers: AOR, Provider (apns|fcm), AppID, Token, optional Environment (sandbox|production), ContactURI, Expires.");
	res |= ast_manager_register2("PushBindingRemove", EVENT_FLAG_SYSTEM | EVENT_FLAG_CONFIG,
		rp_ami_binding_remove, AST_MODULE_SELF, "Remove push bindings",
		"Headers: AOR, optional ID (all bindings of the AOR when absent).");
	res |= ast_manager_register2("PushSend", EVENT_FLAG_SYSTEM | EVENT_FLAG_CALL,
		rp_ami_push_send, AST_MODULE_SELF, "Send a push to the devices of an AOR",
		"Headers: AOR, optional Kind (call|cancel|refresh|alert, default alert), optional Text. "
		"One PushSendResult event per device.");
	return res;
}

void rp_shim_manager_unregister(void)
{
	ast_manager_unregister("PushBindingList");
	ast_manager_unregister("PushBindingAdd");
	ast_manager_unregister("PushBindingRemove");
	ast_manager_unregister("PushSend");
}

void rp_shim_manager_event(const char *event, const char *body)
{
	manager_event(EVENT_FLAG_SYSTEM, event, "%s", body);
}

const char *rp_shim_astman_header(const struct message *m, const char *name)
{
	return astman_get_header(m, (char *) name);
}

void rp_shim_astman_append(struct mansession *s, const char *text)
{
	astman_append(s, "%s", text);
}

void rp_shim_astman_ack(struct mansession *s, const struct message *m, const char *text)
{
	astman_send_ack(s, m, (char *) text);
}

void rp_shim_astman_error(struct mansession *s, const struct message *m, const char *text)
{
	astman_send_error(s, m, (char *) text);
}

void rp_shim_astman_listack(struct mansession *s, const struct message *m, const char *text)
{
	astman_send_listack(s, m, (char *) text, "start");
}

void rp_shim_astman_list_complete(struct mansession *s, const struct message *m, const char *event, int count)
{
	astman_send_list_complete_start(s, m, event, count);
	astman_send_list_complete_end(s);
}
