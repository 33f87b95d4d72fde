/*
 * Call wake-up: the Push channel technology, the dialplan applications and the contexts they
 * run in, and the channel operations Rust needs while a device is being woken.
 *
 * Asterisk cannot add a destination to a running Dial(), so Push/<endpoint> is a Local channel
 * into res-push-wake, whose PushDial() dials the endpoint's plain contacts at once and one
 * Local leg per push device into res-push-device, whose PushDevice() pushes, waits for that
 * device's REGISTER and dials its fresh contact. First answer wins: Dial semantics.
 */
#include "shim.h"

#include "asterisk/app.h"
#include "asterisk/callerid.h"
#include "asterisk/causes.h"
#include "asterisk/channel.h"
#include "asterisk/devicestate.h"
#include "asterisk/format_cap.h"
#include "asterisk/musiconhold.h"
#include "asterisk/pbx.h"
#include "asterisk/res_pjsip.h"
#include "asterisk/sorcery.h"

#define RP_REGISTRAR "res_push"

static struct ast_channel *rp_push_requester(const char *type, struct ast_format_cap *cap,
	const struct ast_assigned_ids *assignedids, const struct ast_channel *requestor,
	const char *addr, int *cause)
{
	char dest[512];

	if (rp_wake_local_destination(addr, (struct ast_channel *) requestor, dest, sizeof(dest))) {
		*cause = AST_CAUSE_NO_ROUTE_DESTINATION;
		return NULL;
	}
	return ast_request("Local", cap, assignedids, requestor, dest, cause);
}

static int rp_push_devicestate(const char *data)
{
	return rp_wake_devicestate(data);
}

/* Linked into Asterisk's channel technology list while registered: static storage. */
static struct ast_channel_tech rp_push_tech = {
	.type = "Push",
	.description = "Wake mobile devices with push notifications (res_push)",
	.requester = rp_push_requester,
	.devicestate = rp_push_devicestate,
};

static int rp_app_push_dial(struct ast_channel *chan, const char *data)
{
	return rp_wake_app(RP_APP_PUSH_DIAL, chan, data);
}

static int rp_app_push_device(struct ast_channel *chan, const char *data)
{
	return rp_wake_app(RP_APP_PUSH_DEVICE, chan, data);
}

static int rp_app_push_wake(struct ast_channel *chan, const char *data)
{
	return rp_wake_app(RP_APP_PUSH_WAKE, chan, data);
}

static int add_context(const char *name, const char *pattern, const char *app, const char *data)
{
	struct ast_context *con = ast_context_find_or_create(NULL, NULL, name, RP_REGISTRAR);

	if (!con) {
		return -1;
	}
	return ast_add_extension2(con, 1, pattern, 1, NULL, NULL, app, ast_strdup(data), ast_free_ptr,
		RP_REGISTRAR, __FILE__, __LINE__);
}

int rp_shim_wake_register(void)
{
	rp_push_tech.capabilities = ast_format_cap_alloc(AST_FORMAT_CAP_FLAG_DEFAULT);
	if (!rp_push_tech.capabilities) {
		return -1;
	}
	ast_format_cap_append_by_type(rp_push_tech.capabilities, AST_MEDIA_TYPE_UNKNOWN);
	if (ast_register_application2("PushDial", rp_app_push_dial, "Ring an endpoint, waking its push devices",
			"PushDial(endpoint[,timeout]): what Dial(Push/endpoint) runs.", AST_MODULE_SELF)
		|| ast_register_application2("PushDevice", rp_app_push_device, "Wake one push device and ring it",
			"PushDevice(binding-id): one device leg of PushDial (internal).", AST_MODULE_SELF)
		|| ast_register_application2("PushWake", rp_app_push_wake, "Wake an endpoint's push devices and wait",
			"PushWake(endpoint[,timeout[,options]]): pushes every device of the endpoint, waits for a "
			"REGISTER, then sets PUSHSTATUS (WOKEN, TIMEOUT, NOBINDING, FAILED, HANGUP), "
			"PUSH_CONTACTS (a dial string of the fresh contacts) and PUSH_REASONS "
			"(<binding id>:<reason>,... per device).", AST_MODULE_SELF)
		|| add_context("res-push-wake", "_w.", "PushDial", "${EXTEN:1}")
		|| add_context("res-push-device", "_d.", "PushDevice", "${EXTEN:1}")
		|| ast_channel_register(&rp_push_tech)) {
		rp_shim_wake_unregister();
		return -1;
	}
	return 0;
}

void rp_shim_wake_unregister(void)
{
	ast_channel_unregister(&rp_push_tech);
	ast_context_destroy_by_name("res-push-wake", RP_REGISTRAR);
	ast_context_destroy_by_name("res-push-device", RP_REGISTRAR);
	ast_unregister_application("PushDial");
	ast_unregister_application("PushDevice");
	ast_unregister_application("PushWake");
	ao2_cleanup(rp_push_tech.capabilities);
	rp_push_tech.capabilities = NULL;
}

int rp_shim_wait(struct ast_channel *chan, int ms, int (*keep_waiting)(void *), void *data)
{
	return ast_safe_sleep_conditional(chan, ms, keep_waiting, data);
}

struct ast_channel *rp_shim_channel_ref(struct ast_channel *chan)
{
	return ast_channel_ref(chan);
}

void rp_shim_channel_unref(struct ast_channel *chan)
{
	ast_channel_unref(chan);
}

void rp_shim_channel_wake(struct ast_channel *chan)
{
	ast_queue_frame(chan, &ast_null_frame);
}

int rp_shim_indicate(struct ast_channel *chan, int ringing)
{
	return ast_indicate(chan, ringing ? AST_CONTROL_RINGING : AST_CONTROL_PROGRESS);
}

void rp_shim_moh(struct ast_channel *chan, int on)
{
	if (on) {
		ast_moh_start(chan, NULL, NULL);
	} else {
		ast_moh_stop(chan);
	}
}

int rp_shim_exec(struct ast_channel *chan, const char *app_name, const char *data)
{
	struct ast_app *app = pbx_findapp(app_name);

	return app ? pbx_exec(chan, app, data) : -1;
}

void rp_shim_setvar(struct ast_channel *chan, const char *name, const char *value)
{
	pbx_builtin_setvar_helper(chan, name, value);
}

int rp_shim_getvar(struct ast_channel *chan, const char *name, char *buf, size_t len)
{
	const char *v;
	int found = 0;

	ast_channel_lock(chan);
	v = pbx_builtin_getvar_helper(chan, name);
	if (v) {
		ast_copy_string(buf, v, len);
		found = 1;
	}
	ast_channel_unlock(chan);
	return found;
}

int rp_shim_check_hangup(struct ast_channel *chan)
{
	return ast_check_hangup_locked(chan);
}

int rp_shim_caller(struct ast_channel *chan, char *number, char *name, size_t len)
{
	struct ast_party_caller *caller;
	int presentation;

	number[0] = name[0] = '\0';
	ast_channel_lock(chan);
	caller = ast_channel_caller(chan);
	if (caller->id.number.valid && caller->id.number.str) {
		ast_copy_string(number, caller->id.number.str, len);
	}
	if (caller->id.name.valid && caller->id.name.str) {
		ast_copy_string(name, caller->id.name.str, len);
	}
	presentation = ast_party_id_presentation(&caller->id);
	ast_channel_unlock(chan);
	return presentation;
}

int rp_shim_endpoint_aors(const char *endpoint, char *buf, size_t len)
{
	struct ast_sip_endpoint *ep = ast_sorcery_retrieve_by_id(ast_sip_get_sorcery(), "endpoint", endpoint);

	if (!ep) {
		return 0;
	}
	ast_copy_string(buf, ep->aors ? ep->aors : "", len);
	ao2_ref(ep, -1);
	return 1;
}

int rp_shim_device_state(const char *device)
{
	return ast_device_state(device);
}

void rp_shim_devstate_changed(const char *device)
{
	/* UNKNOWN: subscribers (app_queue, hints) ask the Push technology for the new state. */
	ast_devstate_changed(AST_DEVICE_UNKNOWN, AST_DEVSTATE_CACHABLE, "%s", device);
}

void rp_shim_set_hangupcause(struct ast_channel *chan, int cause)
{
	ast_channel_lock(chan);
	ast_channel_hangupcause_set(chan, cause);
	ast_channel_unlock(chan);
}

void rp_shim_softhangup(struct ast_channel *chan)
{
	ast_softhangup(chan, AST_SOFTHANGUP_EXPLICIT);
}

int rp_shim_hangup_cause(struct ast_channel *chan)
{
	int cause;

	ast_channel_lock(chan);
	cause = ast_channel_hangupcause(chan);
	ast_channel_unlock(chan);
	return cause;
}

struct ast_channel *rp_shim_request(const char *tech, const char *dest, int *cause)
{
	struct ast_format_cap *cap = ast_format_cap_alloc(AST_FORMAT_CAP_FLAG_DEFAULT);
	struct ast_channel *chan;

	if (!cap) {
		return NULL;
	}
	/* Every audio format: the endpoint's own allow list picks the codecs. */
	ast_format_cap_append_by_type(cap, AST_MEDIA_TYPE_AUDIO);
	chan = ast_request(tech, cap, NULL, NULL, dest, cause);
	ao2_ref(cap, -1);
	return chan;
}

void rp_shim_set_calling_party(struct ast_channel *chan, const char *number, const char *name)
{
	struct ast_party_connected_line connected;

	/* chan_pjsip builds the From of an outgoing INVITE from the connected line. */
	ast_party_connected_line_init(&connected);
	if (number) {
		connected.id.number.valid = 1;
		connected.id.number.str = (char *) number;
		connected.id.number.presentation = AST_PRES_ALLOWED_USER_NUMBER_NOT_SCREENED;
	}
	if (name) {
		connected.id.name.valid = 1;
		connected.id.name.str = (char *) name;
		connected.id.name.presentation = AST_PRES_ALLOWED_USER_NUMBER_NOT_SCREENED;
	}
	ast_channel_lock(chan);
	ast_channel_set_connected_line(chan, &connected, NULL);
	ast_set_callerid(chan, number, name, number);
	ast_channel_unlock(chan);
}

int rp_shim_call(struct ast_channel *chan, const char *dest)
{
	return ast_call(chan, dest, 0);
}

int rp_shim_read_control(struct ast_channel *chan, int ms)
{
	struct ast_frame *f;
	int control = 0;
	int r = ast_waitfor(chan, ms);

	if (r < 0) {
		return -1;
	}
	if (r == 0) {
		return 0;
	}
	f = ast_read(chan);
	if (!f) {
		return -1;
	}
	if (f->frametype == AST_FRAME_CONTROL) {
		control = f->subclass.integer;
	}
	ast_frfree(f);
	return control > 0 ? control : 0;
}

void rp_shim_hangup(struct ast_channel *chan, int cause)
{
	ast_channel_lock(chan);
	ast_channel_hangupcause_set(chan, cause);
	ast_channel_unlock(chan);
	ast_hangup(chan);
}

int rp_shim_module_running(const char *name)
{
	return ast_module_check(name);
}
