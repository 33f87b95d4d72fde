/*
 * The push binding object type in sorcery: how bindings reach astdb, or a database through the
 * realtime wizard (sorcery.conf). The type name, its field names and what they mean are
 * Rust's (res_push_core::record); this file only holds what needs C: the object struct
 * with its sorcery header, the field registration macros and ao2 container iteration.
 *
 * An object is the id plus one string per field, indexed as Rust's field table is: the field
 * handlers find their slot through the option's flags (configuration side) and its first
 * argument (sorcery side), both the field's index.
 */
#include "shim.h"

#include "asterisk/astobj2.h"
#include "asterisk/config_options.h"
#include "asterisk/sorcery.h"
#include "asterisk/strings.h"
#include "asterisk/utils.h"

struct rp_sorcery_object {
	SORCERY_OBJECT(details);
	size_t count;
	char *values[];
};

/* Set once at registration, before any object exists; read by the allocator. */
static size_t rp_field_count;

static void rp_object_destroy(void *obj)
{
	struct rp_sorcery_object *o = obj;
	size_t i;

	for (i = 0; i < o->count; i++) {
		ast_free(o->values[i]);
	}
}

static void *rp_object_alloc(const char *name)
{
	struct rp_sorcery_object *o = ast_sorcery_generic_alloc(
		sizeof(*o) + rp_field_count * sizeof(o->values[0]), rp_object_destroy);

	if (o) {
		o->count = rp_field_count;
		memset(o->values, 0, rp_field_count * sizeof(o->values[0]));
	}
	return o;
}

static int rp_field_from_config(const struct aco_option *opt, struct ast_variable *var, void *obj)
{
	return rp_shim_sorcery_set(obj, aco_option_get_flags(opt), var->value);
}

static int rp_field_to_string(const void *obj, const intptr_t *args, char **buf)
{
	const char *v = rp_shim_sorcery_get(obj, (size_t) args[0]);

	*buf = ast_strdup(v);
	return *buf ? 0 : -1;
}

struct ast_sorcery *rp_shim_sorcery_open(const char *type, const char *const *fields, size_t count,
	const char *default_wizard, const char *default_data)
{
	struct ast_sorcery *sorcery = ast_sorcery_open();
	size_t i;

	if (!sorcery) {
		return NULL;
	}
	rp_field_count = count;
	if (ast_sorcery_apply_default(sorcery, type, default_wizard, default_data) == AST_SORCERY_APPLY_FAIL
		/* Internal (hidden): config_options refuses visible types that have no XML
		 * documentation, and the type is not configured through a file anyway. */
		|| ast_sorcery_internal_object_register(sorcery, type, rp_object_alloc, NULL, NULL)) {
		ast_sorcery_unref(sorcery);
		return NULL;
	}
	for (i = 0; i < count; i++) {
		/* Names are 'static in Rust: config_options keeps the pointer. */
		/* ast_sorcery_object_field_register_custom_nodoc, spelled out: the macro ends in a
		 * ';' and so cannot be tested. One argument: the field's index. */
		if (__ast_sorcery_object_field_register(sorcery, type, fields[i], "", OPT_CUSTOM_T,
				rp_field_from_config, rp_field_to_string, NULL, (unsigned int) i, 1, 0, 1, i)) {
			ast_sorcery_unref(sorcery);
			return NULL;
		}
	}
	ast_sorcery_load(sorcery);
	return sorcery;
}

void rp_shim_sorcery_close(struct ast_sorcery *sorcery)
{
	ast_sorcery_unref(sorcery);
}

int rp_shim_sorcery_wizard(struct ast_sorcery *sorcery, const char *type, int index, char *name, size_t len)
{
	struct ast_sorcery_wizard *wizard = NULL;
	void *data = NULL;

	if (ast_sorcery_get_wizard_mapping(sorcery, type, index, &wizard, &data) || !wizard) {
		return 0;
	}
	ast_copy_string(name, wizard->name, len);
	return 1;
}

int rp_shim_sorcery_set(void *obj, size_t index, const char *value)
{
	struct rp_sorcery_object *o = obj;
	char *copy;

	if (index >= o->count) {
		return -1;
	}
	copy = ast_strdup(value ? value : "");
	if (!copy) {
		return -1;
	}
	ast_free(o->values[index]);
	o->values[index] = copy;
	return 0;
}

const char *rp_shim_sorcery_get(const void *obj, size_t index)
{
	const struct rp_sorcery_object *o = obj;

	if (index >= o->count || !o->values[index]) {
		return "";
	}
	return o->values[index];
}

void rp_shim_sorcery_object_unref(void *obj)
{
	ao2_cleanup(obj);
}

int rp_shim_sorcery_retrieve(const struct ast_sorcery *sorcery, const char *type, const char *field,
	const char *value, void (*each)(void *ctx, void *obj), void *ctx)
{
	struct ast_variable *fields = NULL;
	struct ao2_container *found;
	struct ao2_iterator it;
	void *obj;
	unsigned int flags = AST_RETRIEVE_FLAG_MULTIPLE;

	if (field) {
		fields = ast_variable_new(field, value, "");
		if (!fields) {
			return -1;
		}
	} else {
		flags |= AST_RETRIEVE_FLAG_ALL;
	}
	found = ast_sorcery_retrieve_by_fields(sorcery, type, flags, fields);
	ast_variables_destroy(fields);
	if (!found) {
		return -1;
	}
	it = ao2_iterator_init(found, 0);
	while ((obj = ao2_iterator_next(&it))) {
		/* `each` takes over the iterator's reference. */
		each(ctx, obj);
	}
	ao2_iterator_destroy(&it);
	ao2_ref(found, -1);
	return 0;
}
