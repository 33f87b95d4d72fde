/*
 * What the running Asterisk says it is, for the load-time identity check (the policy is in
 * Rust: res_push_core::identity). Values only; no decisions here.
 */
#include "shim.h"

#include "asterisk/ast_version.h"

#include <pj/config.h>

const char *rp_shim_asterisk_version(void)
{
	return ast_get_version();
}

/* pjlib's pj_get_version(), from the libasteriskpj this Asterisk loaded: what
 * `pjproject show version` prints. */
const char *rp_shim_pjproject_version(void)
{
	return pj_get_version();
}
