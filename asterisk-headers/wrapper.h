/*
 * What bindgen sees: the Asterisk (and pjproject) headers res_push uses, plus the shim's own API.
 * Compiled with the same flags as shim.c (see build.rs), so the layouts match what the shim and
 * Asterisk were built with.
 */
#include "shim.h"

#include "asterisk/astdb.h"
#include "asterisk/cli.h"
#include "asterisk/config.h"
#include "asterisk/frame.h"
#include "asterisk/logger.h"
#include "asterisk/manager.h"
#include "asterisk/message.h"
#include "asterisk/module.h"
#include "asterisk/res_pjsip.h"
#include "asterisk/sorcery.h"
#include "asterisk/utils.h"
