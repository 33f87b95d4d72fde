/*
 * Voicemail: Asterisk's MWI state (stasis) and the PJSIP objects whose `mailboxes` option names
 * a mailbox. Translation only: which changes matter and who hears about them is decided in
 * Rust (res_push_core::mwi).
 */
#include "shim.h"

#include "asterisk/astobj2.h"
#include "asterisk/mwi.h"
#include "asterisk/res_pjsip.h"
#include "asterisk/sorcery.h"
#include "asterisk/stasis.h"

static struct stasis_subscription *mwi_sub;

/* The state a message carries, or NULL for any other message. */
static struct ast_mwi_state *mwi_state(struct stasis_message *msg)
{
	struct ast_mwi_state *state;

	if (stasis_message_type(msg) != ast_mwi_state_type()) {
		return NULL;
	}
	state = stasis_message_data(msg);
	return state && !ast_strlen_zero(state->uniqueid) ? state : NULL;
}

static void mwi_cb(void *data, struct stasis_subscription *sub, struct stasis_message *msg)
{
	struct ast_mwi_state *state = mwi_state(msg);

	if (state) {
		rp_mwi_on_state(state->uniqueid, state->new_msgs, state->old_msgs, state->urgent_msgs);
	}
}

int rp_shim_mwi_subscribe(void)
{
	if (mwi_sub) {
		return 0;
	}
	/* A pool subscription: MWI changes are rare, a taskprocessor of our own would idle. */
	mwi_sub = stasis_subscribe_pool(ast_mwi_topic_all(), mwi_cb, NULL);
	if (!mwi_sub) {
		return -1;
	}
	stasis_subscription_accept_message_type(mwi_sub, ast_mwi_state_type());
	/* The final message, which stasis_unsubscribe_and_join waits for, must get through too. */
	stasis_subscription_accept_message_type(mwi_sub, stasis_subscription_change_type());
	stasis_subscription_set_filter(mwi_sub, STASIS_SUBSCRIPTION_FILTER_SELECTIVE);
	return 0;
}

void rp_shim_mwi_unsubscribe(void)
{
	/* Waits until the callback can no longer run: the module's code is unmapped after unload. */
	mwi_sub = stasis_unsubscribe_and_join(mwi_sub);
}

void rp_shim_mwi_cached(rp_mwi_fn each, void *ctx)
{
	struct ao2_container *cached = stasis_cache_dump(ast_mwi_state_cache(), ast_mwi_state_type());
	struct ao2_iterator it;
	struct stasis_message *msg;

	if (!cached) {
		return;
	}
	it = ao2_iterator_init(cached, 0);
	while ((msg = ao2_iterator_next(&it))) {
		struct ast_mwi_state *state = mwi_state(msg);

		if (state) {
			each(ctx, state->uniqueid, state->new_msgs, state->old_msgs, state->urgent_msgs);
		}
		ao2_ref(msg, -1);
	}
	ao2_iterator_destroy(&it);
	ao2_ref(cached, -1);
}

void rp_shim_mailbox_owners(rp_owner_fn each, void *ctx)
{
	struct ao2_container *all;
	struct ao2_iterator it;
	struct ast_sip_endpoint *endpoint;
	struct ast_sip_aor *aor;

	all = ast_sorcery_retrieve_by_fields(ast_sip_get_sorcery(), "endpoint",
		AST_RETRIEVE_FLAG_MULTIPLE | AST_RETRIEVE_FLAG_ALL, NULL);
	if (all) {
		it = ao2_iterator_init(all, 0);
		while ((endpoint = ao2_iterator_next(&it))) {
			if (!ast_strlen_zero(endpoint->subscription.mwi.mailboxes)) {
				each(ctx, 0, ast_sorcery_object_get_id(endpoint),
					endpoint->subscription.mwi.mailboxes, endpoint->aors ? endpoint->aors : "");
			}
			ao2_ref(endpoint, -1);
		}
		ao2_iterator_destroy(&it);
		ao2_ref(all, -1);
	}
	all = ast_sorcery_retrieve_by_fields(ast_sip_get_sorcery(), "aor",
		AST_RETRIEVE_FLAG_MULTIPLE | AST_RETRIEVE_FLAG_ALL, NULL);
	if (all) {
		it = ao2_iterator_init(all, 0);
		while ((aor = ao2_iterator_next(&it))) {
			if (!ast_strlen_zero(aor->mailboxes)) {
				each(ctx, 1, ast_sorcery_object_get_id(aor), aor->mailboxes, "");
			}
			ao2_ref(aor, -1);
		}
		ao2_iterator_destroy(&it);
		ao2_ref(all, -1);
	}
}
