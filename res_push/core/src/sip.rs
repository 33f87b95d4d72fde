//! Just enough SIP text parsing for push parameters: a Contact header value split into its
//! URI, URI parameters and header parameters.
//!
//! pjsip has already parsed and validated the message; the shim hands us each Contact as pjsip
//! prints it, so this only has to split well-formed text — but it must never panic on anything,
//! since the text comes from the network (see the property tests and the fuzz target).

/// One `name[=value]` parameter, value percent-decoded and unquoted.
pub type Param = (String, Option<String>);

/// A parsed Contact header value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    /// `Contact: *` (only meaningful with `Expires: 0`).
    pub star: bool,
    /// The URI as written, without angle brackets.
    pub uri: String,
    /// Parameters of the URI (`;pn-provider=apns` inside the brackets).
    pub uri_params: Vec<Param>,
    /// Parameters of the header (`;expires=60;+sip.instance="<urn:...>"` after the brackets).
    pub header_params: Vec<Param>,
}

impl Contact {
    /// Value of a URI parameter (names compare case-insensitively, as RFC 3261 says).
    pub fn uri_param(&self, name: &str) -> Option<&Param> {
        self.uri_params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Value of a header parameter.
    pub fn header_param(&self, name: &str) -> Option<&Param> {
        self.header_params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The `expires` header parameter, if present and numeric.
    pub fn expires(&self) -> Option<u32> {
        self.header_param("expires")?
            .1
            .as_deref()?
            .trim()
            .parse()
            .ok()
    }

    /// The `+sip.instance` value without quotes and angle brackets.
    pub fn instance(&self) -> Option<String> {
        let v = self.header_param("+sip.instance")?.1.as_deref()?;
        Some(v.trim_matches(|c| c == '<' || c == '>').to_string())
    }
}

/// Splits a Contact header value (without the `Contact:` name).
pub fn parse_contact(value: &str) -> Contact {
    let Some((uri, rest)) = split_contact(value) else {
        return Contact {
            star: true,
            ..Default::default()
        };
    };
    Contact {
        star: false,
        uri: uri.to_string(),
        uri_params: uri_params(uri),
        header_params: split_params(rest),
    }
}

/// (trimmed URI, header parameter text) of a Contact header value; `None` for `*`.
fn split_contact(value: &str) -> Option<(&str, &str)> {
    let value = value.trim();
    if value == "*" {
        return None;
    }
    // The URI is between the first '<' outside a quoted display name and the next '>'
    // (a URI cannot contain an unescaped '>'; header parameters such as +sip.instance can).
    let open = {
        let mut quoted = false;
        value.char_indices().find_map(|(i, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            (c == '<' && !quoted).then_some(i)
        })
    };
    let close = open.and_then(|o| value[o..].find('>').map(|c| o + c));
    let (uri, rest) = match (open, close) {
        (Some(open), Some(close)) => (&value[open + 1..close], &value[close + 1..]),
        // Without brackets, RFC 3261 makes every parameter a header parameter.
        _ => match value.split_once(';') {
            Some((u, r)) => (u, r),
            None => (value, ""),
        },
    };
    Some((uri.trim(), rest))
}

/// The parameters of a SIP URI: after the host part, up to any `?headers`.
pub fn uri_params(uri: &str) -> Vec<Param> {
    // The user part may hold ';' (telephone-subscriber), never an unescaped '@'.
    let after_user = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    let without_headers = after_user.split_once('?').map_or(after_user, |(p, _)| p);
    match without_headers.split_once(';') {
        Some((_, params)) => split_params(params),
        None => Vec::new(),
    }
}

fn split_params(text: &str) -> Vec<Param> {
    params_iter(text)
        .map(|(n, v)| (n.to_string(), v.map(param_value)))
        .collect()
}

/// The non-empty `name[=value]` parameters of `text` (split on `;` outside quotes), names and
/// raw values trimmed.
fn params_iter(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_outside_quotes(text).filter_map(|p| {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        Some(match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p, None),
        })
    })
}

/// A raw parameter value percent-decoded, then unquoted.
fn param_value(v: &str) -> String {
    if v.contains('%') {
        unquote(&percent_decode(v)).to_string()
    } else {
        // Nothing to decode (and `v` is already UTF-8): skip the copies.
        unquote(v).to_string()
    }
}

fn split_outside_quotes(text: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut done = false;
    let mut chars = text.char_indices();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        for (i, c) in chars.by_ref() {
            match c {
                '"' => quoted = !quoted,
                ';' if !quoted => {
                    let part = &text[start..i];
                    start = i + 1;
                    return Some(part);
                }
                _ => {}
            }
        }
        done = true;
        Some(&text[start..])
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// `%41` → `A`. Invalid escapes are kept as written; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether a caller id presentation (Asterisk's `AST_PRES_*`, Q.931's presentation indicator
/// in bits 5-6, `AST_PRES_RESTRICTION` = 0x60) lets the caller's number and name be shown:
/// only "allowed" does; "restricted" and "unavailable" keep the caller anonymous.
pub fn presentation_allowed(presentation: i32) -> bool {
    presentation & 0x60 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: Option<&str>) -> Param {
        (n.to_string(), v.map(str::to_string))
    }

    #[test]
    fn rfc8599_contact() {
        let c = parse_contact(
            "<sip:alice@192.0.2.1:5060;transport=udp;pn-provider=apns;pn-param=ABCD.com.example.voip;pn-prid=00fc13adff78>;expires=600;+sip.instance=\"<urn:uuid:0001>\";+sip.pnsreg",
        );
        assert!(!c.star);
        assert_eq!(
            c.uri,
            "sip:alice@192.0.2.1:5060;transport=udp;pn-provider=apns;pn-param=ABCD.com.example.voip;pn-prid=00fc13adff78"
        );
        assert_eq!(
            c.uri_param("PN-PROVIDER"),
            Some(&p("pn-provider", Some("apns")))
        );
        assert_eq!(
            c.uri_param("pn-prid").and_then(|x| x.1.clone()).as_deref(),
            Some("00fc13adff78")
        );
        assert_eq!(c.expires(), Some(600));
        assert_eq!(c.instance().as_deref(), Some("urn:uuid:0001"));
        assert_eq!(c.header_param("+sip.pnsreg"), Some(&p("+sip.pnsreg", None)));
    }

    #[test]
    fn star_display_name_and_bare_uri() {
        assert!(parse_contact(" * ").star);
        let c = parse_contact("\"Bob; <the> builder\" <sip:bob@h;pn-prid=x%3Ay>;q=0.5");
        assert_eq!(
            c.uri_param("pn-prid").and_then(|x| x.1.clone()).as_deref(),
            Some("x:y")
        );
        assert_eq!(c.header_param("q"), Some(&p("q", Some("0.5"))));
        let bare = parse_contact("sip:carol@h;expires=30");
        assert_eq!(bare.uri, "sip:carol@h");
        assert!(bare.uri_params.is_empty());
        assert_eq!(bare.expires(), Some(30));
    }

    #[test]
    fn user_part_semicolons_are_not_params() {
        let ps =
            uri_params("sip:+331234;phone-context=example.com@h:5060;pn-provider=fcm?subject=x");
        assert_eq!(ps, vec![p("pn-provider", Some("fcm"))]);
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn only_allowed_presentations_show_the_caller() {
        // AST_PRES_ALLOWED_USER_NUMBER_NOT_SCREENED, ..._NETWORK_NUMBER, RESTRICTED (0x20 |
        // screening bits), UNAVAILABLE (0x43).
        assert!(presentation_allowed(0x00));
        assert!(presentation_allowed(0x03));
        assert!(!presentation_allowed(0x20));
        assert!(!presentation_allowed(0x23));
        assert!(!presentation_allowed(0x43));
    }
}
