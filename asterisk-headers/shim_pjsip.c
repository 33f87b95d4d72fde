/*
 * res_pjsip hooks: a pjsip service that sees each REGISTER after authentication and before the
 * registrar (so res_push can answer 400/555 itself), and a supplement that sees the registrar's
 * response (to add Feature-Caps and commit bindings only once the registrar said 200).
 * Everything here only copies data out for Rust or applies Rust's answer.
 */
#include "shim.h"

#include <limits.h>

#include <pjsip.h>

#include "asterisk/res_pjsip.h"
#include "asterisk/res_pjsip_session.h"
#include "asterisk/sorcery.h"

/* Where the next string goes in the caller's scratch; `full` once something did not fit. */
struct cursor {
	struct rp_scratch *scratch;
	size_t used;
	int full;
};

static const char *put(struct cursor *c, const char *s, size_t len)
{
	char *out;

	if (c->full || len + 1 > c->scratch->bytes_len - c->used) {
		c->full = 1;
		return NULL;
	}
	out = c->scratch->bytes + c->used;
	memcpy(out, s, len);
	out[len] = '\0';
	c->used += len + 1;
	return out;
}

static const char *put_pj(struct cursor *c, const pj_str_t *s)
{
	return put(c, s->ptr, s->slen);
}

/* User-Agent and X-MPUSH, found in one walk of the headers (the first of each, as
 * pjsip_msg_find_hdr_by_name would; lengths compared before names). */
static void put_named_headers(struct cursor *c, pjsip_msg *msg, struct rp_register *out)
{
	static const pj_str_t user_agent = { "User-Agent", 10 };
	static const pj_str_t x_mpush = { "X-MPUSH", 7 };
	pjsip_hdr *h;

	for (h = msg->hdr.next; h != &msg->hdr; h = h->next) {
		if (!out->user_agent && h->name.slen == user_agent.slen && !pj_stricmp(&h->name, &user_agent)) {
			out->user_agent = put_pj(c, &((pjsip_generic_string_hdr *) h)->hvalue);
		} else if (!out->x_mpush && h->name.slen == x_mpush.slen && !pj_stricmp(&h->name, &x_mpush)) {
			out->x_mpush = put_pj(c, &((pjsip_generic_string_hdr *) h)->hvalue);
		}
	}
}

/* "Contact: <sip:...>;expires=60" -> "<sip:...>;expires=60", printed straight into the scratch. */
static const char *put_contact(struct cursor *c, pjsip_contact_hdr *hdr)
{
	char *buf = c->scratch->bytes + c->used;
	size_t room = c->scratch->bytes_len - c->used;
	const char *value;
	int len;

	if (hdr->star) {
		return put(c, "*", 1);
	}
	len = c->full || room < 2 ? -1 : pjsip_hdr_print_on(hdr, buf, room - 1);
	if (len < 0) {
		c->full = 1;
		return NULL;
	}
	buf[len] = '\0';
	c->used += len + 1;
	value = strchr(buf, ':');
	if (!value) {
		return buf;
	}
	value++;
	while (*value == ' ') {
		value++;
	}
	return value;
}

static void put_contacts(struct cursor *c, pjsip_msg *msg, unsigned int *count, const char ***out)
{
	pjsip_contact_hdr *hdr = NULL;

	*out = c->scratch->contacts;
	*count = 0;
	while ((hdr = pjsip_msg_find_hdr(msg, PJSIP_H_CONTACT, hdr ? hdr->next : NULL))) {
		if (*count == c->scratch->contacts_len) {
			c->full = 1;
			return;
		}
		c->scratch->contacts[(*count)++] = put_contact(c, hdr);
	}
}

int rp_shim_describe_register(pjsip_rx_data *rdata, struct rp_scratch *scratch, struct rp_register *out)
{
	pjsip_msg *msg = rdata->msg_info.msg;
	pjsip_expires_hdr *expires;
	struct ast_sip_endpoint *endpoint;
	struct cursor c = { .scratch = scratch };

	memset(out, 0, sizeof(*out));
	if (!msg || msg->type != PJSIP_REQUEST_MSG || msg->line.req.method.id != PJSIP_REGISTER_METHOD
		|| !rdata->msg_info.cid || !rdata->msg_info.cseq) {
		return -1;
	}
	out->call_id = put_pj(&c, &rdata->msg_info.cid->id);
	out->cseq = rdata->msg_info.cseq->cseq;
	if (rdata->msg_info.to) {
		pjsip_uri *uri = pjsip_uri_get_uri(rdata->msg_info.to->uri);

		if (PJSIP_URI_SCHEME_IS_SIP(uri) || PJSIP_URI_SCHEME_IS_SIPS(uri)) {
			pjsip_sip_uri *sip = (pjsip_sip_uri *) uri;

			out->to_user = put_pj(&c, &sip->user);
			out->to_host = put_pj(&c, &sip->host);
		}
	}
	endpoint = ast_pjsip_rdata_get_endpoint(rdata);
	if (endpoint) {
		const char *id = ast_sorcery_object_get_id(endpoint);
		const char *aors = endpoint->aors ? endpoint->aors : "";

		out->endpoint = put(&c, id, strlen(id));
		out->endpoint_aors = put(&c, aors, strlen(aors));
		ao2_cleanup(endpoint);
	}
	put_named_headers(&c, msg, out);
	expires = pjsip_msg_find_hdr(msg, PJSIP_H_EXPIRES, NULL);
	out->expires = expires ? (int) expires->ivalue : -1;
	out->source_addr = put(&c, rdata->pkt_info.src_name, strnlen(rdata->pkt_info.src_name, sizeof(rdata->pkt_info.src_name)));
	out->source_port = rdata->pkt_info.src_port;
	return c.full ? RP_SCRATCH_FULL : 0;
}

int rp_shim_register_contacts(pjsip_rx_data *rdata, struct rp_scratch *scratch, struct rp_contacts *out)
{
	struct cursor c = { .scratch = scratch };

	memset(out, 0, sizeof(*out));
	if (!rdata->msg_info.msg) {
		return -1;
	}
	put_contacts(&c, rdata->msg_info.msg, &out->count, &out->contacts);
	return c.full ? RP_SCRATCH_FULL : 0;
}

/* -1 when absent; older pjproject (before PJSIP_EXPIRES_NOT_SPECIFIED) keeps a signed -1. */
static int contact_expires(const pjsip_contact_hdr *hdr)
{
#ifdef PJSIP_EXPIRES_NOT_SPECIFIED
	if (hdr->expires == PJSIP_EXPIRES_NOT_SPECIFIED) {
		return -1;
	}
	return hdr->expires > INT_MAX ? INT_MAX : (int) hdr->expires;
#else
	return hdr->expires < 0 ? -1 : hdr->expires;
#endif
}

/* Each contact's URI, printed alone (the same text as between <> when the header is printed),
 * and its expiry: no header parameters printed, nothing for Rust to parse. */
static void put_response_contacts(struct cursor *c, pjsip_msg *msg, struct rp_response *out)
{
	pjsip_contact_hdr *hdr = NULL;

	out->contacts = c->scratch->contacts;
	out->contact_expires = c->scratch->numbers;
	out->contact_count = 0;
	while ((hdr = pjsip_msg_find_hdr(msg, PJSIP_H_CONTACT, hdr ? hdr->next : NULL))) {
		char *buf = c->scratch->bytes + c->used;
		size_t room = c->scratch->bytes_len - c->used;
		int len;

		if (hdr->star || !hdr->uri) {
			continue;
		}
		if (out->contact_count == c->scratch->contacts_len) {
			c->full = 1;
			return;
		}
		len = c->full || room < 2 ? -1
			: pjsip_uri_print(PJSIP_URI_IN_CONTACT_HDR, pjsip_uri_get_uri(hdr->uri), buf, room - 1);
		if (len < 0) {
			c->full = 1;
			return;
		}
		buf[len] = '\0';
		c->used += len + 1;
		c->scratch->contacts[out->contact_count] = buf;
		c->scratch->numbers[out->contact_count] = contact_expires(hdr);
		out->contact_count++;
	}
}

int rp_shim_describe_response(pjsip_tx_data *tdata, struct rp_scratch *scratch, struct rp_response *out)
{
	pjsip_msg *msg = tdata->msg;
	pjsip_cid_hdr *cid;
	pjsip_cseq_hdr *cseq;
	struct cursor c = { .scratch = scratch };

	memset(out, 0, sizeof(*out));
	if (!msg || msg->type != PJSIP_RESPONSE_MSG) {
		return -1;
	}
	cid = pjsip_msg_find_hdr(msg, PJSIP_H_CALL_ID, NULL);
	cseq = pjsip_msg_find_hdr(msg, PJSIP_H_CSEQ, NULL);
	if (!cid || !cseq) {
		return -1;
	}
	out->status = msg->line.status.code;
	out->call_id = put_pj(&c, &cid->id);
	out->cseq = cseq->cseq;
	out->is_register = cseq->method.id == PJSIP_REGISTER_METHOD;
	if (out->is_register) {
		put_response_contacts(&c, msg, out);
	}
	return c.full ? RP_SCRATCH_FULL : 0;
}

int rp_shim_respond(pjsip_rx_data *rdata, int status, const char *reason)
{
	pj_str_t text = pj_str((char *) reason);

	return pjsip_endpt_respond_stateless(ast_sip_get_pjsip_endpoint(), rdata, status, &text, NULL, NULL)
		== PJ_SUCCESS ? 0 : -1;
}

int rp_shim_add_header(pjsip_tx_data *tdata, const char *name, const char *value)
{
	return ast_sip_add_header(tdata, name, value);
}

const char *rp_shim_rx_raw(pjsip_rx_data *rdata, size_t *len)
{
	*len = rdata->msg_info.msg_buf ? (size_t) rdata->msg_info.len : 0;
	return rdata->msg_info.msg_buf;
}

static pj_bool_t rp_on_rx_request(pjsip_rx_data *rdata)
{
	/* Which REGISTERs concern res_push is decided in Rust (one definition with decide()). */
	if (rdata->msg_info.msg->line.req.method.id != PJSIP_REGISTER_METHOD) {
		return PJ_FALSE;
	}
	return rp_sip_on_register(rdata) ? PJ_TRUE : PJ_FALSE;
}

/* After the request authenticator (APPLICATION - 2), before the registrar (APPLICATION). */
static pjsip_module rp_register_module = {
	.name = { "res_push REGISTER", 17 },
	.id = -1,
	.priority = PJSIP_MOD_PRIORITY_APPLICATION - 1,
	.on_rx_request = rp_on_rx_request,
};

static void rp_outgoing_response(struct ast_sip_endpoint *endpoint, struct ast_sip_contact *contact,
	pjsip_tx_data *tdata)
{
	rp_sip_on_response(tdata);
}

/* Linked into res_pjsip's supplement list while registered: static storage. */
static struct ast_sip_supplement rp_register_supplement = {
	.method = "REGISTER",
	.outgoing_response = rp_outgoing_response,
};

/* An initial INVITE leaving for a contact: Rust may push the device (push_on_plain_dial),
 * note the leg of a device being woken, and give a Request-URI without push parameters
 * (strip_pn_params), which replaces the one pjsip built. */
static void rp_invite_outgoing_request(struct ast_sip_session *session, pjsip_tx_data *tdata)
{
	pjsip_msg *msg = tdata->msg;
	pjsip_to_hdr *to;
	pjsip_cid_hdr *cid;
	char uri[PJSIP_MAX_URL_SIZE];
	char stripped[PJSIP_MAX_URL_SIZE];
	char call_id[256] = "";
	int len;

	if (!msg || msg->type != PJSIP_REQUEST_MSG || msg->line.req.method.id != PJSIP_INVITE_METHOD) {
		return;
	}
	to = pjsip_msg_find_hdr(msg, PJSIP_H_TO, NULL);
	if (!to || to->tag.slen) {
		return; /* a re-INVITE */
	}
	len = pjsip_uri_print(PJSIP_URI_IN_REQ_URI, msg->line.req.uri, uri, sizeof(uri) - 1);
	if (len <= 0) {
		return;
	}
	uri[len] = '\0';
	cid = pjsip_msg_find_hdr(msg, PJSIP_H_CALL_ID, NULL);
	if (cid) {
		ast_copy_pj_str(call_id, &cid->id, sizeof(call_id));
	}
	if (rp_sip_on_invite(session->channel, uri, call_id, stripped, sizeof(stripped)) == 1) {
		/* The parsed URI points into its buffer: both live in the request's pool. */
		pj_size_t n = strlen(stripped);
		char *buf = pj_pool_alloc(tdata->pool, n + 1);
		pjsip_uri *parsed;

		memcpy(buf, stripped, n + 1);
		parsed = pjsip_parse_uri(tdata->pool, buf, n, 0);
		if (parsed) {
			msg->line.req.uri = parsed;
			pjsip_tx_data_invalidate_msg(tdata);
		}
	}
}

/* 100 Trying and the other provisional responses to an initial INVITE: chan_pjsip makes no
 * frame of a 100, and a late wake-up's INVITE is cancelled as soon as one arrives (a CANCEL
 * before any provisional response is deferred by pjsip and then sent without supplements,
 * hence without its Reason). */
static void rp_invite_incoming_response(struct ast_sip_session *session, pjsip_rx_data *rdata)
{
	int code = rdata->msg_info.msg->line.status.code;

	if (code >= 100 && code < 200 && session->channel
		&& session->inv_session && session->inv_session->role == PJSIP_ROLE_UAC) {
		rp_sip_on_provisional(session->channel);
	}
}

/* Linked into res_pjsip_session's supplement list while registered: static storage. */
static struct ast_sip_session_supplement rp_invite_supplement = {
	.method = "INVITE",
	.outgoing_request = rp_invite_outgoing_request,
	.incoming_response = rp_invite_incoming_response,
	/* The transaction-state pass: it sees 100 Trying, which changes no invite state. */
	.response_priority = AST_SIP_SESSION_AFTER_MEDIA,
};

/* A CANCEL leaving: Rust may give a Reason header for it (late wake-ups). */
static void rp_cancel_outgoing_request(struct ast_sip_session *session, pjsip_tx_data *tdata)
{
	char reason[256];

	if (session->channel && rp_sip_on_cancel(session->channel, reason, sizeof(reason)) == 1) {
		ast_sip_add_header(tdata, "Reason", reason);
	}
}

/* Linked into res_pjsip_session's supplement list while registered: static storage. */
static struct ast_sip_session_supplement rp_cancel_supplement = {
	.method = "CANCEL",
	.outgoing_request = rp_cancel_outgoing_request,
};

int rp_shim_sip_register(void)
{
	if (ast_sip_register_service(&rp_register_module)) {
		return -1;
	}
	ast_sip_register_supplement(&rp_register_supplement);
	ast_sip_session_register_supplement(&rp_invite_supplement);
	ast_sip_session_register_supplement(&rp_cancel_supplement);
	return 0;
}

void rp_shim_sip_unregister(void)
{
	ast_sip_session_unregister_supplement(&rp_cancel_supplement);
	ast_sip_session_unregister_supplement(&rp_invite_supplement);
	ast_sip_unregister_supplement(&rp_register_supplement);
	ast_sip_unregister_service(&rp_register_module);
}

/* Calls `each` on every contact of an AOR; returns how many there were. */
static int foreach_contact(const char *aor_name, void (*each)(struct ast_sip_contact *contact, void *ctx), void *ctx)
{
	struct ast_sip_aor *aor = ast_sip_location_retrieve_aor(aor_name);
	struct ao2_container *contacts;
	struct ao2_iterator it;
	struct ast_sip_contact *contact;
	int n = 0;

	if (!aor) {
		return 0;
	}
	contacts = ast_sip_location_retrieve_aor_contacts(aor);
	if (contacts) {
		it = ao2_iterator_init(contacts, 0);
		while ((contact = ao2_iterator_next(&it))) {
			each(contact, ctx);
			n++;
			ao2_ref(contact, -1);
		}
		ao2_iterator_destroy(&it);
		ao2_ref(contacts, -1);
	}
	ao2_ref(aor, -1);
	return n;
}

struct delete_by_uri {
	const char *uri;
	int deleted;
};

static void delete_if_uri(struct ast_sip_contact *contact, void *ctx)
{
	struct delete_by_uri *d = ctx;

	if (!strcmp(contact->uri, d->uri) && !ast_sip_location_delete_contact(contact)) {
		d->deleted = 1;
	}
}

int rp_shim_delete_contact(const char *aor_name, const char *uri)
{
	struct delete_by_uri d = { .uri = uri, .deleted = 0 };

	foreach_contact(aor_name, delete_if_uri, &d);
	return d.deleted;
}

struct uri_callback {
	void (*each)(void *ctx, const char *uri);
	void *ctx;
};

static void pass_uri(struct ast_sip_contact *contact, void *ctx)
{
	struct uri_callback *cb = ctx;

	cb->each(cb->ctx, contact->uri);
}

int rp_shim_aor_contacts(const char *aor_name, void (*each)(void *ctx, const char *uri), void *ctx)
{
	struct uri_callback cb = { .each = each, .ctx = ctx };

	return foreach_contact(aor_name, pass_uri, &cb);
}
