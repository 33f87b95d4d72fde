//! Push parameters of a REGISTER (RFC 8599 and the legacy forms in the field), and what the
//! registrar should answer.
//!
//! Forms understood, per Contact:
//! - RFC 8599: `pn-provider`, `pn-param`, `pn-prid` (and `pn-purr`);
//! - Linphone legacy: `pn-type`, `app-id`, `pn-tok` (app-id suffix `.dev`/`.prod` selects the
//!   APNs environment);
//! - `push-token-type`, `push-token-app`, `push-token-id`;
//! - Flexisip values: provider `apns.dev` (sandbox), `pn-param=TEAM.bundle.voip&remote`,
//!   `pn-prid=TOKEN:voip&TOKEN2:remote` (the VoIP token is the one used for calls).
//!
//! And per REGISTER, when enabled, Mizu's `X-MPUSH: [s:|p:|d:]PROVIDER:PACKAGE:TOKEN`.

use res_push_proto::{Environment, Provider};

use crate::sip::Contact;

/// Which syntax the device used; kept with the binding for troubleshooting and unbinding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// RFC 8599 `pn-*` parameters.
    Rfc8599,
    /// Linphone's `pn-type`/`app-id`/`pn-tok`.
    PnType,
    /// `push-token-type`/`push-token-app`/`push-token-id`.
    PushToken,
    /// Mizu's `X-MPUSH` header.
    Mpush,
}

/// Push parameters that make a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushParams {
    /// The push service.
    pub provider: Provider,
    /// App id as the device sent it (`pn-param`), Flexisip extras removed.
    pub app_id: String,
    /// Device token (`pn-prid`); for Flexisip multi-token values, the VoIP one.
    pub token: String,
    /// The token for pushes that are not calls (alerts, background), when the device sent
    /// one beside its VoIP token (Flexisip `TOKEN:voip&TOKEN2:remote`, as Linphone for iOS
    /// does): APNs refuses an alert to a PushKit token (`DeviceTokenNotForTopic`).
    pub alert_token: Option<String>,
    /// APNs environment when the device said.
    pub environment: Option<Environment>,
    /// The syntax used.
    pub form: Form,
    /// RFC 8599 `pn-purr`, if sent.
    pub purr: Option<String>,
}

/// What one Contact asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No push parameters.
    None,
    /// `pn-provider` alone: which push services does the server support? No binding.
    Query(Provider),
    /// Create or refresh a binding.
    Bind(PushParams),
    /// `pn-prid=null` / `X-MPUSH: null`: forget this device's binding(s).
    Unbind(Unbind),
    /// A syntactically valid provider we do not serve: RFC 8599 says 555.
    Unsupported(String),
    /// Unusable values: answer 400 with this reason phrase.
    Malformed(String),
}

/// Which bindings an unbind request removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbind {
    /// RFC 8599 / legacy `null` token: the AOR's bindings for this provider and app.
    App { provider: Provider, app_id: String },
    /// `X-MPUSH: null`: the AOR's bindings made through X-MPUSH.
    Mpush,
}

/// Limits and switches from push.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Providers res_push serves (others get 555).
    pub providers: Vec<Provider>,
    /// Longest token accepted.
    pub max_token_len: usize,
    /// Read `X-MPUSH`.
    pub mpush: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            providers: vec![Provider::Apns, Provider::Fcm],
            max_token_len: 256,
            mpush: false,
        }
    }
}

const MAX_APP_ID_LEN: usize = 255;

/// Every push parameter this module reads or strips starts with one of these: RFC 8599's
/// `pn-*` (and Linphone's legacy `pn-type`, `pn-tok`, `pn-msg-str`...), and `push-token-*`.
/// The REGISTER prefilter ([`may_concern`]), the Request-URI stripper ([`strip_push_params`])
/// and the parser all go through this one table, so none of them can drift from the others.
pub const PARAM_PREFIXES: [&str; 2] = ["pn-", "push-token-"];

/// Legacy parameters without a push prefix; only meaningful next to a prefixed one
/// (`app-id` goes with `pn-type`).
pub const COMPANION_PARAMS: [&str; 1] = ["app-id"];

/// Mizu's header (`X-MPUSH: ...`).
pub const MPUSH_HEADER: &str = "X-MPUSH";

/// Whether a URI parameter name is a push parameter.
pub fn is_push_param(name: &str) -> bool {
    PARAM_PREFIXES.iter().any(|p| {
        name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    })
}

fn param<'a>(c: &'a Contact, name: &str) -> Option<Option<&'a str>> {
    debug_assert!(
        is_push_param(name) || COMPANION_PARAMS.contains(&name),
        "{name} is read by the parser but unknown to the prefilter and the stripper"
    );
    c.uri_param(name).map(|(_, v)| v.as_deref())
}

/// The REGISTER prefilter: false only when the raw message provably carries nothing
/// [`crate::registrar::decide`] acts on, so desk phones' REGISTERs skip all copying and
/// parsing. It passes anything it cannot judge: a push prefix or `X-MPUSH` anywhere
/// (case-insensitive; false positives only cost the full path), any `%` (an escaped
/// parameter name such as `pn%2Dprid` is unescaped by pjsip before `decide` sees it), and
/// any `*` in a Contact header (`Contact: *` unregisters every binding).
pub fn may_concern(raw: &[u8]) -> bool {
    if memchr::memchr(b'%', raw).is_some() {
        return true;
    }
    // Every REGISTER passes here, so one vectorised scan: each needle holds a '-', and a
    // REGISTER holds few of those (header names such as Call-ID, Max-Forwards), so the needles
    // are compared only around them.
    let needles = PARAM_PREFIXES.iter().copied().chain([MPUSH_HEADER]);
    let dashed = needles
        .clone()
        .filter_map(|n| Some((n.as_bytes(), n.find('-')?)));
    let dash_hit = memchr::memchr_iter(b'-', raw).any(|at| {
        dashed.clone().any(|(needle, dash)| {
            at >= dash
                && raw
                    .get(at - dash..at - dash + needle.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(needle))
        })
    });
    if dash_hit
        || needles
            .filter(|n| !n.contains('-'))
            .any(|n| contains_ci(raw, n.as_bytes()))
    {
        return true;
    }
    memchr::memchr(b'*', raw).is_some() && star_contact(raw)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let first = needle[0].to_ascii_lowercase();
    hay.len() >= needle.len()
        && (0..=hay.len() - needle.len()).any(|i| {
            hay[i].to_ascii_lowercase() == first
                && hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
        })
}

/// The raw lines of a message's Contact headers (`Contact:` or compact `m:`, folded
/// continuation lines included), in order, up to the end of the header section. Two REGISTERs
/// with the same lines have contacts that pjsip parses, and so prints, alike: the REGISTER hook
/// keys what it remembers of a REGISTER on them, without having pjsip print anything.
pub fn contact_lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    // One vectorised newline search per line, stopping at the blank line that ends the
    // header section (no search for it first); only lines starting with `c`, `m` or white
    // space (a continuation) are looked at further. Each line keeps its `\r`.
    let mut rest = raw;
    let mut in_contact = false;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            match line.first() {
                None | Some(b'\r') if line.len() <= 1 => {
                    rest = &[];
                    return None;
                }
                Some(b' ' | b'\t') => {}
                Some(b'c' | b'C' | b'm' | b'M') => {
                    in_contact = memchr::memchr(b':', line).is_some_and(|colon| {
                        let name = line[..colon].trim_ascii();
                        name.eq_ignore_ascii_case(b"contact") || name.eq_ignore_ascii_case(b"m")
                    });
                }
                _ => in_contact = false,
            }
            if in_contact {
                return Some(line);
            }
        }
        None
    })
}

/// A `Contact:` or compact `m:` header line (folded continuation lines included) holding `*`.
fn star_contact(raw: &[u8]) -> bool {
    let mut in_contact = false;
    for line in raw.split(|&b| b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            in_contact = false;
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                let name = line[..colon].trim_ascii();
                in_contact =
                    name.eq_ignore_ascii_case(b"contact") || name.eq_ignore_ascii_case(b"m");
                if in_contact && line[colon + 1..].contains(&b'*') {
                    return true;
                }
                continue;
            }
        }
        if in_contact && line.contains(&b'*') {
            return true;
        }
    }
    false
}

/// The URI without its push parameters (what an INVITE's Request-URI should carry: a 64-byte
/// token and more make UDP INVITEs and their ACKs fragment-prone), or `None` when it has
/// none. Other parameters (`transport`, `ob`, ...) and `?headers` stay as written.
pub fn strip_push_params(uri: &str) -> Option<String> {
    // Parameters start after the host part; the user part may hold ';' but never '@'.
    let host_at = uri.rfind('@').map_or(0, |i| i + 1);
    let (head, headers) = match uri[host_at..].find('?') {
        Some(q) => uri.split_at(host_at + q),
        None => (uri, ""),
    };
    let params_at = host_at + head[host_at..].find(';')?;
    let (base, params) = head.split_at(params_at);
    let names = |p: &str| p.split('=').next().unwrap_or("").trim().to_string();
    let parts: Vec<&str> = params[1..].split(';').collect();
    let pushy = parts.iter().any(|p| is_push_param(&names(p)));
    if !pushy {
        return None;
    }
    let kept: String = parts
        .iter()
        .filter(|p| {
            let n = names(p);
            !is_push_param(&n) && !COMPANION_PARAMS.iter().any(|c| c.eq_ignore_ascii_case(&n))
        })
        .map(|p| format!(";{p}"))
        .collect();
    Some(format!("{base}{kept}{headers}"))
}

/// Parses a provider name. `Ok(None)`: valid syntax, unknown service (→ 555).
fn provider(raw: &str) -> Result<(Option<Provider>, Option<Environment>), String> {
    let lower = raw.to_ascii_lowercase();
    if lower.is_empty()
        || lower.len() > 32
        || !lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err("Invalid pn-provider".into());
    }
    Ok(match lower.as_str() {
        "apns" | "apple" | "ios" => (Some(Provider::Apns), None),
        "apns.dev" => (Some(Provider::Apns), Some(Environment::Sandbox)),
        "fcm" | "firebase" | "google" | "android" => (Some(Provider::Fcm), None),
        _ => (None, None),
    })
}

fn check_app_id(app: &str) -> Result<(), String> {
    if app.is_empty() {
        return Err("Missing pn-param".into());
    }
    if app.len() > MAX_APP_ID_LEN {
        return Err("pn-param too long".into());
    }
    if !app
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    {
        return Err("Invalid character in pn-param".into());
    }
    Ok(())
}

fn check_token(provider: Provider, token: &str, rules: &Rules) -> Result<(), String> {
    if token.is_empty() {
        return Err("Empty pn-prid".into());
    }
    if token.len() > rules.max_token_len {
        return Err(format!(
            "pn-prid longer than {} characters",
            rules.max_token_len
        ));
    }
    let ok = match provider {
        Provider::Apns => token.bytes().all(|b| b.is_ascii_hexdigit()),
        // FCM registration tokens: base64url-ish with ':' separators.
        Provider::Fcm => token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)),
    };
    if !ok {
        return Err(match provider {
            Provider::Apns => "pn-prid is not an APNs device token (hex expected)".into(),
            Provider::Fcm => "Invalid character in pn-prid".into(),
        });
    }
    Ok(())
}

/// Flexisip: `TEAM.bundle.voip&remote` → `TEAM.bundle.voip`.
fn flexisip_app(app: &str) -> &str {
    app.split('&').next().unwrap_or(app)
}

/// Flexisip: `tok1:voip&tok2:remote` → `tok1` (the VoIP token rings calls); plain tokens as is.
fn flexisip_token(token: &str) -> &str {
    if !token.contains('&') && !token.ends_with(":voip") && !token.ends_with(":remote") {
        return token;
    }
    let parts: Vec<(&str, &str)> = token
        .split('&')
        .filter_map(|p| p.rsplit_once(':'))
        .collect();
    parts
        .iter()
        .find(|(_, kind)| *kind == "voip")
        .or_else(|| parts.first())
        .map_or(token, |(t, _)| t)
}

/// Flexisip: `tok1:voip&tok2:remote` → `tok2`, the token for alerts; `None` unless both kinds
/// are there (a lone token serves every push).
fn flexisip_alert_token(token: &str) -> Option<&str> {
    if !token.contains('&') {
        return None;
    }
    let parts: Vec<(&str, &str)> = token
        .split('&')
        .filter_map(|p| p.rsplit_once(':'))
        .collect();
    if !parts.iter().any(|(_, kind)| *kind == "voip") {
        return None;
    }
    parts
        .iter()
        .find(|(t, kind)| *kind == "remote" && !t.is_empty())
        .map(|(t, _)| *t)
}

/// Linphone `app-id=org.example.app.prod` → (`org.example.app`, production).
fn legacy_app_env(app: &str) -> (&str, Option<Environment>) {
    if let Some(a) = app.strip_suffix(".dev") {
        (a, Some(Environment::Sandbox))
    } else if let Some(a) = app.strip_suffix(".prod") {
        (a, Some(Environment::Production))
    } else {
        (app, None)
    }
}

/// What one Contact asks for.
pub fn from_contact(c: &Contact, rules: &Rules) -> Request {
    if let Some(p) = param(c, "pn-provider") {
        return rfc8599(c, p, rules);
    }
    if param(c, "pn-prid").is_some() || param(c, "pn-param").is_some() {
        return Request::Malformed("pn-prid or pn-param without pn-provider".into());
    }
    for (form, type_name, app_name, tok_name) in [
        (Form::PnType, "pn-type", "app-id", "pn-tok"),
        (
            Form::PushToken,
            "push-token-type",
            "push-token-app",
            "push-token-id",
        ),
    ] {
        if let Some(t) = param(c, type_name) {
            let app = param(c, app_name).flatten().unwrap_or("");
            let tok = param(c, tok_name).flatten().unwrap_or("");
            return legacy(form, t.unwrap_or(""), app, tok, type_name, rules);
        }
    }
    Request::None
}

fn finish(
    provider: Provider,
    app: &str,
    (token, alert_token): (&str, Option<&str>),
    env: Option<Environment>,
    form: Form,
    purr: Option<String>,
    rules: &Rules,
) -> Request {
    if let Err(e) = check_app_id(app) {
        return Request::Malformed(e);
    }
    if token.eq_ignore_ascii_case("null") {
        return Request::Unbind(Unbind::App {
            provider,
            app_id: app.to_string(),
        });
    }
    if let Err(e) = check_token(provider, token, rules) {
        return Request::Malformed(e);
    }
    if !rules.providers.contains(&provider) {
        return Request::Unsupported(format!("{provider:?}").to_ascii_lowercase());
    }
    // A malformed alert token is no reason to refuse the VoIP one: alerts then use that.
    let alert_token = alert_token
        .filter(|t| *t != token && check_token(provider, t, rules).is_ok())
        .map(str::to_string);
    Request::Bind(PushParams {
        provider,
        app_id: app.to_string(),
        token: token.to_string(),
        alert_token,
        environment: env,
        form,
        purr,
    })
}

fn rfc8599(c: &Contact, raw_provider: Option<&str>, rules: &Rules) -> Request {
    let raw_provider = raw_provider.unwrap_or("");
    let (provider, env) = match provider(raw_provider) {
        Ok(p) => p,
        Err(e) => return Request::Malformed(e),
    };
    let prid = param(c, "pn-prid");
    let app = param(c, "pn-param");
    let Some(provider) = provider else {
        return Request::Unsupported(raw_provider.to_string());
    };
    if prid.is_none() && app.is_none() {
        return if rules.providers.contains(&provider) {
            Request::Query(provider)
        } else {
            Request::Unsupported(raw_provider.to_string())
        };
    }
    let Some(Some(prid)) = prid else {
        return Request::Malformed("Missing pn-prid".into());
    };
    let app = app.flatten().map(flexisip_app).unwrap_or("");
    let purr = param(c, "pn-purr").flatten().map(str::to_string);
    finish(
        provider,
        app,
        (flexisip_token(prid), flexisip_alert_token(prid)),
        env,
        Form::Rfc8599,
        purr,
        rules,
    )
}

fn legacy(
    form: Form,
    raw_type: &str,
    app: &str,
    tok: &str,
    type_name: &str,
    rules: &Rules,
) -> Request {
    let (provider, env) = match provider(raw_type) {
        Ok(p) => p,
        Err(_) => return Request::Malformed(format!("Invalid {type_name}")),
    };
    let Some(provider) = provider else {
        return Request::Unsupported(raw_type.to_string());
    };
    if tok.is_empty() {
        return Request::Malformed(format!("Missing token for {type_name}"));
    }
    let (app, app_env) = legacy_app_env(app);
    finish(
        provider,
        app,
        (flexisip_token(tok), flexisip_alert_token(tok)),
        env.or(app_env),
        form,
        None,
        rules,
    )
}

/// What an `X-MPUSH` header asks for (applied to the REGISTER's contacts without pn params).
pub fn from_mpush(value: &str, rules: &Rules) -> Request {
    let value = value.trim();
    if value.eq_ignore_ascii_case("null") {
        return Request::Unbind(Unbind::Mpush);
    }
    let (env, rest) = match value.split_once(':') {
        Some(("s", r)) => (Some(Environment::Sandbox), r),
        Some(("p", r)) => (Some(Environment::Production), r),
        Some(("d", r)) => (None, r),
        _ => (None, value),
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(kind), Some(app), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Request::Malformed("X-MPUSH must be PROVIDER:PACKAGE:TOKEN".into());
    };
    let provider = match kind {
        "i" => Provider::Apns,
        "a" | "j" => Provider::Fcm,
        "w" => return Request::Unsupported("webpush".into()),
        _ => return Request::Malformed("Unknown X-MPUSH provider".into()),
    };
    finish(provider, app, (token, None), env, Form::Mpush, None, rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_contact;

    #[test]
    fn prefilter_judges_raw_registers() {
        let plain = b"REGISTER sip:pbx SIP/2.0\r\nContact: <sip:desk@192.0.2.9:5060>\r\nExpires: 600\r\n\r\n";
        assert!(!may_concern(plain));
        assert!(may_concern(b"Contact: <sip:a@h;PN-PRID=abc>\r\n"));
        assert!(may_concern(b"Contact: <sip:a@h;push-token-id=abc>\r\n"));
        assert!(may_concern(b"x-mpush: i:app:tok\r\n"));
        assert!(may_concern(b"Contact: *\r\nExpires: 0\r\n"));
        assert!(may_concern(b"m:*\r\n"));
        assert!(may_concern(b"Contact:\r\n  *\r\n"));
        assert!(may_concern(b"Contact: <sip:a@h;pn%2Dprid=1>\r\n"));
        assert!(!may_concern(b"From: *\r\n"));
        assert!(!may_concern(b""));
        // The scan around each '-': needles at either end of the buffer, cut short, or next to
        // dashes of their own.
        assert!(may_concern(b"pn-"));
        assert!(may_concern(b"X-MPUSH"));
        assert!(!may_concern(b"X-MPUS"));
        assert!(!may_concern(b";p-n-"));
        assert!(may_concern(b"--pn--"));
        assert!(may_concern(
            b"Max-Forwards: 70\r\nContact: <sip:a@h;PUSH-TOKEN-ID=x>"
        ));
        assert!(!may_concern(b"Contact: <sip:a@h;push-token>\r\n"));
        // Every needle holds a '-' (the scan relies on it; one without would still be found
        // by the slow path, but every REGISTER would pay for it).
        assert!(
            PARAM_PREFIXES
                .iter()
                .chain([&MPUSH_HEADER])
                .all(|n| n.contains('-'))
        );
    }

    #[test]
    fn contact_lines_are_the_contact_headers_folded_lines_included() {
        let raw = b"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContact: <sip:a@h;pn-prid=1>\r\n\
            \t;expires=60\r\nTo: <sip:a@pbx>\r\nm: <sip:b@h>\r\nCONTACT : *\r\n\r\nContact: body\r\n";
        let lines: Vec<&[u8]> = contact_lines(raw).collect();
        assert_eq!(
            lines,
            [
                &b"Contact: <sip:a@h;pn-prid=1>\r"[..],
                b"\t;expires=60\r",
                b"m: <sip:b@h>\r",
                // The header section ends at the blank line.
                b"CONTACT : *\r",
            ]
        );
        assert_eq!(
            contact_lines(b"REGISTER sip:pbx SIP/2.0\r\n\r\n").count(),
            0
        );
    }

    #[test]
    fn strips_push_params_only() {
        let uri = format!(
            "sip:alice@192.0.2.1:5062;transport=tcp;pn-provider=apns;pn-param=T.b.voip;pn-prid={APNS_TOK};ob"
        );
        assert_eq!(
            strip_push_params(&uri).as_deref(),
            Some("sip:alice@192.0.2.1:5062;transport=tcp;ob")
        );
        assert_eq!(
            strip_push_params("sip:a;x@h;pn-type=apple;app-id=com.x;pn-tok=ab?X-H=1").as_deref(),
            Some("sip:a;x@h?X-H=1")
        );
        assert_eq!(
            strip_push_params("sip:a@h;app-id=x;transport=udp"),
            None,
            "app-id alone is no push parameter"
        );
        assert_eq!(strip_push_params("sip:a@h"), None);
        assert_eq!(
            strip_push_params("sip:a@h;push-token-id=1;lr").as_deref(),
            Some("sip:a@h;lr")
        );
    }

    const APNS_TOK: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

    fn req(contact: &str) -> Request {
        from_contact(&parse_contact(contact), &Rules::default())
    }

    fn bind(contact: &str) -> PushParams {
        match req(contact) {
            Request::Bind(p) => p,
            other => panic!("{contact}: {other:?}"),
        }
    }

    #[test]
    fn rfc8599_apns_and_fcm() {
        let p = bind(&format!(
            "<sip:a@h;pn-provider=apns;pn-param=DEF123GHIJ.com.example.myapp.voip;pn-prid={APNS_TOK}>"
        ));
        assert_eq!(p.provider, Provider::Apns);
        assert_eq!(p.app_id, "DEF123GHIJ.com.example.myapp.voip");
        assert_eq!(p.token, APNS_TOK);
        assert_eq!(p.form, Form::Rfc8599);
        assert_eq!(p.environment, None);
        let p = bind(
            "<sip:a@h;pn-provider=fcm;pn-param=my-project;pn-prid=dXf3:APA91bH-x_y;pn-purr=ab12>",
        );
        assert_eq!(p.provider, Provider::Fcm);
        assert_eq!(p.token, "dXf3:APA91bH-x_y");
        assert_eq!(p.purr.as_deref(), Some("ab12"));
    }

    #[test]
    fn flexisip_values() {
        let p = bind(&format!(
            "<sip:a@h;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-prid={APNS_TOK}:voip&aa11:remote>"
        ));
        assert_eq!(p.environment, Some(Environment::Sandbox));
        assert_eq!(p.app_id, "ABCD1234.org.linphone.phone.voip");
        assert_eq!(p.token, APNS_TOK);
        // Linphone for iOS: the remote token carries alerts (messages, voicemail, cancels).
        let remote = "ab".repeat(32);
        let p = bind(&format!(
            "<sip:a@h;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-prid={APNS_TOK}:voip&{remote}:remote>"
        ));
        assert_eq!(p.token, APNS_TOK);
        assert_eq!(p.alert_token.as_deref(), Some(remote.as_str()));
        // A lone token, or a remote one that is no token, leaves alerts on the VoIP token.
        assert_eq!(
            bind(&format!(
                "<sip:a@h;pn-provider=apns;pn-param=A.b.voip;pn-prid={APNS_TOK}:voip>"
            ))
            .alert_token,
            None
        );
        assert_eq!(
            bind(&format!(
                "<sip:a@h;pn-provider=apns;pn-param=A.b.voip;pn-prid={APNS_TOK}:voip&zz:remote>"
            ))
            .alert_token,
            None
        );
        assert_eq!(
            bind(&format!(
                "<sip:a@h;pn-provider=apns;pn-param=A.b.voip;pn-prid={APNS_TOK}>"
            ))
            .alert_token,
            None
        );
    }

    #[test]
    fn legacy_forms() {
        let p = bind(&format!(
            "<sip:a@h;pn-type=apple;app-id=org.linphone.phone.dev;pn-tok={APNS_TOK}>"
        ));
        assert_eq!(
            (p.provider, p.app_id.as_str(), p.environment, p.form),
            (
                Provider::Apns,
                "org.linphone.phone",
                Some(Environment::Sandbox),
                Form::PnType
            )
        );
        let p =
            bind("<sip:a@h;push-token-type=fcm;push-token-app=com.example;push-token-id=tok123>");
        assert_eq!((p.provider, p.form), (Provider::Fcm, Form::PushToken));
        let p = bind("<sip:a@h;pn-type=firebase;app-id=com.example.prod;pn-tok=tok>");
        assert_eq!(p.environment, Some(Environment::Production));
    }

    #[test]
    fn query_unsupported_unbind() {
        assert_eq!(
            req("<sip:a@h;pn-provider=apns>"),
            Request::Query(Provider::Apns)
        );
        assert_eq!(
            req("<sip:a@h;pn-provider=webpush;pn-param=x;pn-prid=y>"),
            Request::Unsupported("webpush".into())
        );
        assert_eq!(
            req("<sip:a@h;pn-provider=webpush>"),
            Request::Unsupported("webpush".into())
        );
        assert_eq!(
            req("<sip:a@h;pn-provider=fcm;pn-param=proj;pn-prid=null>"),
            Request::Unbind(Unbind::App {
                provider: Provider::Fcm,
                app_id: "proj".into()
            })
        );
        assert_eq!(req("<sip:a@h;transport=tcp>;expires=60"), Request::None);
    }

    #[test]
    fn provider_not_enabled_is_unsupported() {
        let rules = Rules {
            providers: vec![Provider::Fcm],
            ..Rules::default()
        };
        let c = parse_contact(&format!(
            "<sip:a@h;pn-provider=apns;pn-param=x.y;pn-prid={APNS_TOK}>"
        ));
        assert_eq!(
            from_contact(&c, &rules),
            Request::Unsupported("apns".into())
        );
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        let cases = [
            (
                "<sip:a@h;pn-provider=apns;pn-prid=abcd>",
                "Missing pn-param",
            ),
            ("<sip:a@h;pn-provider=apns;pn-param=a.b>", "Missing pn-prid"),
            (
                "<sip:a@h;pn-provider=apns;pn-param=a.b;pn-prid=xyz>",
                "pn-prid is not an APNs device token (hex expected)",
            ),
            (
                "<sip:a@h;pn-provider=fcm;pn-param=a%20b;pn-prid=t>",
                "Invalid character in pn-param",
            ),
            (
                "<sip:a@h;pn-provider=fcm;pn-param=p;pn-prid=t%22x>",
                "Invalid character in pn-prid",
            ),
            (
                "<sip:a@h;pn-provider=ap%00ns;pn-param=p;pn-prid=t>",
                "Invalid pn-provider",
            ),
            (
                "<sip:a@h;pn-prid=abc>",
                "pn-prid or pn-param without pn-provider",
            ),
            (
                "<sip:a@h;pn-type=apple;app-id=x>",
                "Missing token for pn-type",
            ),
        ];
        for (contact, reason) in cases {
            assert_eq!(req(contact), Request::Malformed(reason.into()), "{contact}");
        }
        let long = format!(
            "<sip:a@h;pn-provider=apns;pn-param=a.b;pn-prid={}>",
            "a".repeat(300)
        );
        assert_eq!(
            req(&long),
            Request::Malformed("pn-prid longer than 256 characters".into())
        );
    }

    #[test]
    fn mpush() {
        let r = Rules {
            mpush: true,
            ..Rules::default()
        };
        let tok = "9C2F93A6D1319D3CB5712B469226A719B78C3BE37CCB6E8FD27985F0A0285DF9";
        match from_mpush(&format!("s:i:com.voip.phone:{tok}"), &r) {
            Request::Bind(p) => {
                assert_eq!(
                    (p.provider, p.app_id.as_str(), p.token.as_str()),
                    (Provider::Apns, "com.voip.phone", tok)
                );
                assert_eq!(
                    (p.environment, p.form),
                    (Some(Environment::Sandbox), Form::Mpush)
                );
            }
            other => panic!("{other:?}"),
        }
        match from_mpush("a:com.voip.phone:dXf3:APA91b", &r) {
            Request::Bind(p) => assert_eq!(
                (p.provider, p.token.as_str(), p.environment),
                (Provider::Fcm, "dXf3:APA91b", None)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(from_mpush("null", &r), Request::Unbind(Unbind::Mpush));
        assert_eq!(
            from_mpush("w:pkg:tok", &r),
            Request::Unsupported("webpush".into())
        );
        assert!(matches!(from_mpush("i:pkg", &r), Request::Malformed(_)));
        assert!(matches!(from_mpush("z:pkg:tok", &r), Request::Malformed(_)));
    }
}
