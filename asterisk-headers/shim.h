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

/* CLI commands, in the order of the shim's entry table; Rust's commands module mirrors it. */
enum rp_cli_command {
	RP_CLI_SHOW_STATUS = 0,
	RP_CLI_PING,
	RP_CLI_SHOW_BINDINGS,
	RP_CLI_SHOW_BINDING,
	RP_CLI_DELETE_BINDING,
	RP_CLI_SEND,
	RP_CLI_TEST,
	RP_CLI_SHOW_MESSAGES,
	RP_CLI_DELETE_MESSAGES,
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

/* The running Asterisk's version (ast_get_version) and its pjproject's (pj_get_version);
 * shim_identity.c. */
const char *rp_shim_asterisk_version(void);
const char *rp_shim_pjproject_version(void);

/* Threads: created through Asterisk so `core show threads` lists them under their name. */
int rp_shim_thread_create(pthread_t *thread, void *(*start)(void *), void *data, const char *name);

/* ---- res_pjsip (shim_pjsip.c) ---- */
struct pjsip_rx_data;
struct pjsip_tx_data;

/*
 * Where the describe calls write the strings they copy out: the caller's memory, not the
 * message's pool (a pool that outgrows its first block costs a malloc, a free and page faults
 * on every REGISTER). When `bytes` or `contacts` is too small, the call returns RP_SCRATCH_FULL
 * and the caller tries again with more.
 */
struct rp_scratch {
	char *bytes;
	size_t bytes_len;
	const char **contacts;
	/* One per entry of `contacts` (as many): a number that goes with it. */
	int *numbers;
	unsigned int contacts_len;
};
#define RP_SCRATCH_FULL (-2)

/* A REGISTER as Rust sees it. Strings are NUL-terminated, in the scratch. */
struct rp_register {
	const char *call_id;
	int cseq;
	const char *endpoint;      /* identified endpoint, or NULL */
	const char *endpoint_aors; /* its aors setting, or NULL */
	const char *to_user;
	const char *to_host;
	const char *user_agent;    /* or NULL */
	const char *x_mpush;       /* or NULL */
	int expires;               /* Expires header, -1 when absent */
	const char *source_addr;   /* the address it came from (printed by pjsip already) */
	int source_port;
};

/* A response about to be sent. Strings are in the scratch. */
struct rp_response {
	int status;
	const char *call_id;
	int cseq;
	int is_register;
	/* The contacts the response lists: each URI as it is printed inside <> of a Contact
	 * header, and its expires parameter (-1 when absent). */
	unsigned int contact_count;
	const char **contacts;
	const int *contact_expires;
};

/* Everything but the contacts (contact_count 0): printing them is most of what copying costs. */
int rp_shim_describe_register(struct pjsip_rx_data *rdata, struct rp_scratch *scratch, struct rp_register *out);
/* The REGISTER's contacts, each as pjsip prints it, or "*". */
struct rp_contacts {
	unsigned int count;
	const char **contacts;
};
int rp_shim_register_contacts(struct pjsip_rx_data *rdata, struct rp_scratch *scratch, struct rp_contacts *out);
int rp_shim_describe_response(struct pjsip_tx_data *tdata, struct rp_scratch *scratch, struct rp_response *out);
/* Answers statelessly (the registrar never sees the request). */
/* The raw message pjsip received (not NUL-terminated), or NULL. */
const char *rp_shim_rx_raw(struct pjsip_rx_data *rdata, size_t *len);
int rp_shim_respond(struct pjsip_rx_data *rdata, int status, const char *reason);
int rp_shim_add_header(struct pjsip_tx_data *tdata, const char *name, const char *value);
/* Registers the REGISTER service (before the registrar) and the response supplement. */
int rp_shim_sip_register(void);
void rp_shim_sip_unregister(void);
/* Removes the contact of `aor` whose URI is `uri`: 1 removed, 0 none found. */
int rp_shim_delete_contact(const char *aor, const char *uri);

/* ---- AMI (shim_manager.c) ---- */
struct mansession;
struct message;

enum rp_ami_action {
	RP_AMI_BINDING_LIST = 0,
	RP_AMI_BINDING_ADD,
	RP_AMI_BINDING_REMOVE,
	RP_AMI_PUSH_SEND,
	RP_AMI_COUNT,
};

int rp_shim_manager_register(void);
void rp_shim_manager_unregister(void);
void rp_shim_manager_event(const char *event, const char *body);
const char *rp_shim_astman_header(const struct message *m, const char *name);
void rp_shim_astman_append(struct mansession *s, const char *text);
void rp_shim_astman_ack(struct mansession *s, const struct message *m, const char *text);
void rp_shim_astman_error(struct mansession *s, const struct message *m, const char *text);
void rp_shim_astman_listack(struct mansession *s, const struct message *m, const char *text);
void rp_shim_astman_list_complete(struct mansession *s, const struct message *m, const char *event, int count);

/* ---- Call wake-up (shim_wake.c) ---- */
struct ast_channel;

enum rp_wake_app {
	RP_APP_PUSH_DIAL = 0,
	RP_APP_PUSH_DEVICE,
	RP_APP_PUSH_WAKE,
};

int rp_shim_wake_register(void);
void rp_shim_wake_unregister(void);
/* ast_safe_sleep_conditional: returns -1 on hangup; stops early when keep_waiting returns 0. */
int rp_shim_wait(struct ast_channel *chan, int ms, int (*keep_waiting)(void *), void *data);
struct ast_channel *rp_shim_channel_ref(struct ast_channel *chan);
void rp_shim_channel_unref(struct ast_channel *chan);
/* Queues a null frame: wakes a thread sleeping in rp_shim_wait on that channel. */
void rp_shim_channel_wake(struct ast_channel *chan);
int rp_shim_indicate(struct ast_channel *chan, int ringing);
void rp_shim_moh(struct ast_channel *chan, int on);
int rp_shim_exec(struct ast_channel *chan, const char *app, const char *data);
void rp_shim_setvar(struct ast_channel *chan, const char *name, const char *value);
int rp_shim_getvar(struct ast_channel *chan, const char *name, char *buf, size_t len);
int rp_shim_check_hangup(struct ast_channel *chan);
/* The caller's number and name; returns their combined presentation (AST_PRES_*). */
int rp_shim_caller(struct ast_channel *chan, char *number, char *name, size_t len);
int rp_shim_endpoint_aors(const char *endpoint, char *buf, size_t len);
int rp_shim_aor_contacts(const char *aor, void (*each)(void *ctx, const char *uri), void *ctx);
int rp_shim_device_state(const char *device);
void rp_shim_devstate_changed(const char *device);
/* The cause this leg ends with: Local channels pass it on, so the caller's Dial sets
 * DIALSTATUS from it (19 no answer -> NOANSWER, 20 absent -> CHANUNAVAIL). */
void rp_shim_set_hangupcause(struct ast_channel *chan, int cause);
/* Hangs a channel up from another thread (a stale leg of a device that registered elsewhere). */
void rp_shim_softhangup(struct ast_channel *chan);

/* ---- Voicemail (shim_mwi.c) ---- */
/* One MWI state: mailbox@context and its counts. */
typedef void (*rp_mwi_fn)(void *ctx, const char *mailbox, int new_msgs, int old_msgs, int urgent_msgs);
/* One PJSIP object with mailboxes: an endpoint (is_aor 0, with its aors) or an AOR (is_aor 1). */
typedef void (*rp_owner_fn)(void *ctx, int is_aor, const char *name, const char *mailboxes, const char *aors);
/* Subscribes to every mailbox's MWI state; each change calls rp_mwi_on_state. */
int rp_shim_mwi_subscribe(void);
/* Unsubscribes and waits until no callback runs any more. */
void rp_shim_mwi_unsubscribe(void);
/* The states in Asterisk's MWI cache, each passed to `each`. */
void rp_shim_mwi_cached(rp_mwi_fn each, void *ctx);
/* Every endpoint and AOR whose mailboxes option is set (sorcery reads: not on a SIP thread). */
void rp_shim_mailbox_owners(rp_owner_fn each, void *ctx);
/* The hangup cause a channel has now (e.g. ANSWERED_ELSEWHERE, set by the Dial that hung it up). */
int rp_shim_hangup_cause(struct ast_channel *chan);
/* A new outgoing channel of `tech` to `dest` (not called yet), with every audio format offered;
 * NULL with *cause set on failure. Ours to hang up with rp_shim_hangup. */
struct ast_channel *rp_shim_request(const char *tech, const char *dest, int *cause);
/* The calling party (From of the INVITE) and caller id of an outgoing channel; NULL: none. */
void rp_shim_set_calling_party(struct ast_channel *chan, const char *number, const char *name);
/* ast_call: the INVITE goes out. 0 on success. */
int rp_shim_call(struct ast_channel *chan, const char *dest);
/* Waits up to ms for a frame on a channel no PBX runs: the control frame's subclass (> 0), 0 for
 * none or another frame, -1 when the channel hung up. */
int rp_shim_read_control(struct ast_channel *chan, int ms);
/* Hangs up and releases a channel from rp_shim_request, with this hangup cause. */
void rp_shim_hangup(struct ast_channel *chan, int cause);
/* ast_module_check: 1 when the module (e.g. "res_pjsip_rfc3326.so") is loaded. */
int rp_shim_module_running(const char *name);

/* ---- Messages (shim_message.c) ---- */
struct ast_msg;

/* Registers the `push` message technology and PUSH_MESSAGE_STATUS(). */
int rp_shim_msg_register(void);
void rp_shim_msg_unregister(void);
/* Sets a global dialplan variable. */
void rp_shim_set_global(const char *name, const char *value);
/* A new message with these fields (ast_msg_set_* are variadic), or NULL. */
struct ast_msg *rp_shim_msg_new(const char *to, const char *from, const char *body);

/* ---- Sorcery: the push binding object type (shim_sorcery.c) ---- */
struct ast_sorcery;

/* Opens the module's sorcery instance with one object type of `count` string fields (names
 * must outlive it), `default_wizard`/`default_data` unless sorcery.conf says otherwise, and
 * loads it. NULL on failure. */
struct ast_sorcery *rp_shim_sorcery_open(const char *type, const char *const *fields, size_t count,
	const char *default_wizard, const char *default_data);
void rp_shim_sorcery_close(struct ast_sorcery *sorcery);
/* Name of the type's index-th wizard into `name`: 1, or 0 when there is none. */
int rp_shim_sorcery_wizard(struct ast_sorcery *sorcery, const char *type, int index, char *name, size_t len);
int rp_shim_sorcery_set(void *obj, size_t index, const char *value);
/* The field's value ("" when unset); valid while the object is referenced and unchanged. */
const char *rp_shim_sorcery_get(const void *obj, size_t index);
void rp_shim_sorcery_object_unref(void *obj);
/* Objects whose `field` is `value` (every object when `field` is NULL), each passed to `each`
 * (which takes over one reference to it). -1 when sorcery returned no container. */
int rp_shim_sorcery_retrieve(const struct ast_sorcery *sorcery, const char *type, const char *field,
	const char *value, void (*each)(void *ctx, void *obj), void *ctx);

/* Implemented in Rust (res_push/src/entry.rs). */
void rp_mwi_on_state(const char *mailbox, int new_msgs, int old_msgs, int urgent_msgs);
/* `requestor` (the caller, or NULL): the call pushes go out from here, before any Local leg runs. */
int rp_wake_local_destination(const char *endpoint, struct ast_channel *requestor, char *dest, size_t len);
int rp_wake_devicestate(const char *endpoint);
int rp_wake_app(int app, struct ast_channel *chan, const char *data);
int rp_sip_on_register(struct pjsip_rx_data *rdata);
/* Returns 1 when it wrote a replacement Request-URI into `out` (NUL-terminated, at most `len`). */
int rp_sip_on_invite(struct ast_channel *chan, const char *request_uri, const char *call_id, char *out, size_t len);
void rp_sip_on_response(struct pjsip_tx_data *tdata);
/* A provisional response (100-199) to an initial INVITE arrived on the session of `chan`. */
void rp_sip_on_provisional(struct ast_channel *chan);
/* A CANCEL is leaving on the session of `chan`: returns 1 with a Reason header value to add in
 * `out` (NUL-terminated, at most `len`). */
int rp_sip_on_cancel(struct ast_channel *chan, char *out, size_t len);
int rp_ami_exec(int action, struct mansession *s, const struct message *m);
enum ast_module_load_result rp_module_load(void);
int rp_module_unload(void);
int rp_module_reload(void);
void rp_cli_describe(int command, const char **words, const char **usage);
int rp_cli_exec(int command, int fd, int argc, const char *const *argv);
/* The `push` message technology's msg_send: 0 accepted (delivered or queued). */
int rp_msg_send(const struct ast_msg *msg, const char *to, const char *from);
/* PUSH_MESSAGE_STATUS(): this thread's last MessageSend(push:...) outcome into `buf`. */
int rp_msg_status(char *buf, size_t len);

#endif
