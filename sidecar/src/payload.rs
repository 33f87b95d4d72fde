//! What a push says: a default payload per kind, or an app's JSON template with `{{placeholder}}`
//! substitution (the idea of Mizu's `fcmmessage.txt` / `pushkitmessage.txt`, with named
//! placeholders that cannot collide with ordinary words).
//!
//! Values are JSON-escaped when substituted, so a caller name with quotes cannot break the JSON
//! or inject keys; placeholders therefore belong inside JSON strings, except the numeric ones
//! (`ttl`, `timestamp`). Templates are checked when the app is configured, by rendering them
//! with awkward sample values and parsing the result, so a broken file is reported at `module
//! reload` rather than at the first call.

use std::{borrow::Cow, fmt::Write as _};

use res_push_proto::{Provider, PushData, PushKind, VoicemailPush};
use serde_json::{Map, Value, json};

/// Placeholders a template may use, each `{{name}}`.
pub const PLACEHOLDERS: &[&str] = &[
    "kind",
    "caller_number",
    "caller_name",
    "caller",
    "call_uuid",
    "call_id",
    "endpoint",
    "text",
    "title",
    "body",
    "app",
    "timestamp",
    "ttl",
    "mailbox",
    "new_messages",
    "old_messages",
    "urgent_messages",
];

/// Placeholders that always expand to digits and so may stand outside a JSON string.
const NUMERIC: &[&str] = &[
    "timestamp",
    "ttl",
    "new_messages",
    "old_messages",
    "urgent_messages",
];

/// The kind name of voicemail pushes (a job of its own, not a [`PushKind`]).
pub const VOICEMAIL: &str = "voicemail";

/// The protocol name of a kind (`call`, `cancel`, ...), as used in payloads and option names.
pub fn kind_name(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Call => "call",
        PushKind::Cancel => "cancel",
        PushKind::Missed => "missed",
        PushKind::Refresh => "refresh",
        PushKind::Message => "message",
    }
}

/// Every kind, in the order templates are listed.
pub const KINDS: [PushKind; 5] = [
    PushKind::Call,
    PushKind::Cancel,
    PushKind::Missed,
    PushKind::Refresh,
    PushKind::Message,
];

/// The values substituted into one push's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    kind: &'static str,
    caller_number: Option<String>,
    caller_name: Option<String>,
    caller: String,
    call_uuid: Option<String>,
    call_id: Option<String>,
    endpoint: Option<String>,
    text: Option<String>,
    title: String,
    body: String,
    app: String,
    timestamp: u64,
    ttl: u64,
    /// Voicemail pushes only; other kinds see an empty mailbox and zero counts.
    mailbox: Option<String>,
    new_messages: u32,
    old_messages: u32,
    urgent_messages: u32,
}

/// What a voicemail notification says (`title`, `body`).
pub fn voicemail_text(new_messages: u32) -> (String, String) {
    let body = match new_messages {
        0 => "No new voicemail messages".to_owned(),
        1 => "1 new voicemail message".to_owned(),
        n => format!("{n} new voicemail messages"),
    };
    ("Voicemail".to_owned(), body)
}

impl Values {
    /// Values for a voicemail push by `app`.
    pub fn voicemail(app: &str, vm: &VoicemailPush, ttl: u64, now_unix: u64) -> Self {
        let (title, body) = voicemail_text(vm.new_messages);
        Self {
            kind: VOICEMAIL,
            caller: String::new(),
            endpoint: vm.endpoint.clone().filter(|s| !s.is_empty()),
            title,
            body,
            app: app.to_owned(),
            timestamp: now_unix,
            ttl,
            mailbox: Some(vm.mailbox.clone()),
            new_messages: vm.new_messages,
            old_messages: vm.old_messages,
            urgent_messages: vm.urgent_messages,
            ..Default::default()
        }
    }

    /// Values for a push of `kind` by `app`, with `ttl` seconds left before its deadline and the
    /// wall clock at `now_unix`.
    pub fn new(app: &str, kind: PushKind, data: &PushData, ttl: u64, now_unix: u64) -> Self {
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let caller_number = non_empty(&data.caller_number);
        let caller_name = non_empty(&data.caller_name);
        let caller = match (&caller_name, &caller_number) {
            (Some(name), Some(number)) if name != number => format!("{name} ({number})"),
            (Some(name), _) => name.clone(),
            (None, Some(number)) => number.clone(),
            (None, None) => "Unknown caller".to_owned(),
        };
        let text = non_empty(&data.text);
        let known = caller_name.is_some() || caller_number.is_some();
        let (title, body) = match kind {
            PushKind::Call => ("Incoming call".to_owned(), caller.clone()),
            PushKind::Cancel => ("Call ended".to_owned(), caller.clone()),
            PushKind::Missed => ("Missed call".to_owned(), caller.clone()),
            PushKind::Message if known => (
                format!("Message from {caller}"),
                text.clone().unwrap_or_default(),
            ),
            PushKind::Message => ("New message".to_owned(), text.clone().unwrap_or_default()),
            PushKind::Refresh => (String::new(), String::new()),
        };
        Self {
            kind: kind_name(kind),
            caller_number,
            caller_name,
            caller,
            call_uuid: non_empty(&data.call_uuid),
            call_id: non_empty(&data.call_id),
            endpoint: non_empty(&data.endpoint),
            text,
            title,
            body,
            app: app.to_owned(),
            timestamp: now_unix,
            ttl,
            ..Default::default()
        }
    }

    /// The call UUID, which also serves as the APNs collapse id.
    pub fn call_uuid(&self) -> Option<&str> {
        self.call_uuid.as_deref()
    }

    fn get(&self, name: &str) -> Cow<'_, str> {
        let opt = |v: &Option<String>| Cow::Owned(v.clone().unwrap_or_default());
        match name {
            "kind" => Cow::Borrowed(self.kind),
            "caller_number" => opt(&self.caller_number),
            "caller_name" => opt(&self.caller_name),
            "caller" => Cow::Borrowed(&self.caller),
            "call_uuid" => opt(&self.call_uuid),
            "call_id" => opt(&self.call_id),
            "endpoint" => opt(&self.endpoint),
            "text" => opt(&self.text),
            "title" => Cow::Borrowed(&self.title),
            "body" => Cow::Borrowed(&self.body),
            "app" => Cow::Borrowed(&self.app),
            "timestamp" => Cow::Owned(self.timestamp.to_string()),
            "ttl" => Cow::Owned(self.ttl.to_string()),
            "mailbox" => opt(&self.mailbox),
            "new_messages" => Cow::Owned(self.new_messages.to_string()),
            "old_messages" => Cow::Owned(self.old_messages.to_string()),
            "urgent_messages" => Cow::Owned(self.urgent_messages.to_string()),
            // Unreachable: templates are checked against PLACEHOLDERS when parsed.
            _ => Cow::Borrowed(""),
        }
    }

    /// The string-valued custom keys a default payload carries: only those with a value.
    fn custom_keys(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("kind".into(), self.kind.into());
        for (key, value) in [
            ("caller_number", &self.caller_number),
            ("caller_name", &self.caller_name),
            ("call_uuid", &self.call_uuid),
            ("call_id", &self.call_id),
            ("endpoint", &self.endpoint),
            ("text", &self.text),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value.clone().into());
            }
        }
        if let Some(mailbox) = &self.mailbox {
            // Strings, as FCM data values must be, and the same on APNs so that one app
            // reads both alike.
            map.insert("mailbox".into(), mailbox.clone().into());
            for (key, n) in [
                ("new_messages", self.new_messages),
                ("old_messages", self.old_messages),
                ("urgent_messages", self.urgent_messages),
            ] {
                map.insert(key.into(), n.to_string().into());
            }
        }
        map
    }

    /// Awkward values for checking templates: quotes, backslashes, control characters and
    /// non-ASCII, so that a placeholder outside a JSON string makes the check fail.
    fn samples() -> Self {
        let data = PushData {
            caller_number: Some("+1 \"555\" 0100".into()),
            caller_name: Some("Zoë \\ O'Brien\n\t{}".into()),
            call_uuid: Some("0b6d6f0e-54d4-4b1c-9a4e-8c6e2a9f3b11".into()),
            call_id: Some("a84b4c76e66710@pbx \"x\"".into()),
            endpoint: Some("alice,bob".into()),
            text: Some("line 1\nline \"2\" \u{1F4DE}".into()),
        };
        Self::new("sample-app", PushKind::Message, &data, 30, 1_700_000_000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Field(&'static str),
}

/// A parsed template file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    quoted[1..quoted.len() - 1].to_owned()
}

impl Template {
    /// Parses `source`, refusing unknown or unterminated placeholders.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "unterminated placeholder at byte {}",
                    offset + start
                ));
            };
            let name = after[..end].trim();
            let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name) else {
                return Err(format!(
                    "unknown placeholder {{{{{name}}}}} (known: {})",
                    PLACEHOLDERS.join(", ")
                ));
            };
            segments.push(Segment::Field(known));
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    /// The template with every placeholder replaced by its JSON-escaped value.
    pub fn render(&self, values: &Values) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Field(name) => out.push_str(&json_escape(&values.get(name))),
            }
        }
        out
    }

    fn render_object(&self, values: &Values) -> Result<Map<String, Value>, String> {
        match serde_json::from_str::<Value>(&self.render(values)) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("is not a JSON object".to_owned()),
            Err(e) => Err(format!("is not valid JSON after substitution: {e}")),
        }
    }

    fn uses_text_placeholders(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Field(n) if !NUMERIC.contains(n)))
    }

    /// Checks that the template renders to a payload `provider` accepts, whatever the values.
    pub fn validate(&self, provider: Provider) -> Result<(), String> {
        let rendered = self.render_object(&Values::samples()).map_err(|e| {
            let hint = if self.uses_text_placeholders() {
                " (placeholders other than {{ttl}} and {{timestamp}} must be inside JSON strings)"
            } else {
                ""
            };
            format!("{e}{hint}")
        })?;
        match provider {
            Provider::Apns => match rendered.get("aps") {
                None | Some(Value::Object(_)) => Ok(()),
                Some(_) => Err("\"aps\" must be a JSON object".to_owned()),
            },
            Provider::Fcm => {
                let message = fcm_message_object(rendered)?;
                match message.get("data") {
                    None => Ok(()),
                    Some(Value::Object(data)) => match data.iter().find(|(_, v)| !v.is_string()) {
                        Some((key, _)) => Err(format!(
                            "FCM data values must be strings, and \"data.{key}\" is not"
                        )),
                        None => Ok(()),
                    },
                    Some(_) => Err("\"data\" must be a JSON object".to_owned()),
                }
            }
        }
    }
}

/// An FCM template may be the whole request (`{"message": {...}}`) or just the message.
fn fcm_message_object(mut top: Map<String, Value>) -> Result<Map<String, Value>, String> {
    match top.remove("message") {
        None => Ok(top),
        Some(Value::Object(message)) => Ok(message),
        Some(_) => Err("\"message\" must be a JSON object".to_owned()),
    }
}

/// Per-kind templates of one app; a kind without one gets the default payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    by_kind: [Option<Template>; 5],
    voicemail: Option<Template>,
}

impl Templates {
    fn index(kind: PushKind) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// Sets the template for `kind`.
    pub fn set(&mut self, kind: PushKind, template: Template) {
        self.by_kind[Self::index(kind)] = Some(template);
    }

    /// The template for `kind`, if the app has one.
    pub fn get(&self, kind: PushKind) -> Option<&Template> {
        self.by_kind[Self::index(kind)].as_ref()
    }

    /// Sets the template of voicemail pushes (`template_voicemail`).
    pub fn set_voicemail(&mut self, template: Template) {
        self.voicemail = Some(template);
    }

    /// The APNs payload of a voicemail push: an alert, or with `background` a background push
    /// (whose `content-available` a template cannot drop, as for refresh pushes).
    pub fn apns_voicemail(&self, values: &Values, background: bool) -> Result<Vec<u8>, String> {
        let mut payload = match &self.voicemail {
            Some(t) => t.render_object(values)?,
            None => {
                let aps = if background {
                    json!({})
                } else {
                    json!({
                        "alert": {"title": values.title, "body": values.body},
                        "sound": "default",
                    })
                };
                let mut payload = values.custom_keys();
                payload.insert("aps".into(), aps);
                payload
            }
        };
        if background {
            let aps = payload
                .entry("aps")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(aps) = aps {
                aps.insert("content-available".into(), 1.into());
            }
        }
        serde_json::to_vec(&payload).map_err(|e| e.to_string())
    }

    /// The FCM `message` of a voicemail push to `token`: a high-priority data message whose
    /// `android.collapse_key` is `collapse_id` (unless a template set its own), so a phone that
    /// was offline gets only the latest counts of a mailbox.
    pub fn fcm_voicemail(
        &self,
        values: &Values,
        token: &str,
        collapse_id: &str,
    ) -> Result<Value, String> {
        let mut message = match &self.voicemail {
            Some(t) => fcm_message_object(t.render_object(values)?)?,
            None => default_fcm(PushKind::Message, values),
        };
        let android = message
            .entry("android")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(android) = android else {
            return Err("\"android\" must be a JSON object".to_owned());
        };
        if !collapse_id.is_empty() {
            android
                .entry("collapse_key")
                .or_insert_with(|| collapse_id.into());
        }
        message.insert("token".into(), token.into());
        Ok(Value::Object(message))
    }

    /// The APNs payload for a push of `kind`.
    pub fn apns_payload(&self, kind: PushKind, values: &Values) -> Result<Vec<u8>, String> {
        let mut payload = match self.get(kind) {
            Some(t) => t.render_object(values)?,
            None => default_apns(kind, values),
        };
        if kind == PushKind::Refresh {
            // A background push without content-available is dropped by the device; the
            // template cannot be allowed to forget it.
            let aps = payload
                .entry("aps")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(aps) = aps {
                aps.insert("content-available".into(), 1.into());
            }
        }
        serde_json::to_vec(&payload).map_err(|e| e.to_string())
    }

    /// The FCM `message` object for a push of `kind` to `token`.
    pub fn fcm_message(
        &self,
        kind: PushKind,
        values: &Values,
        token: &str,
    ) -> Result<Value, String> {
        let mut message = match self.get(kind) {
            Some(t) => fcm_message_object(t.render_object(values)?)?,
            None => default_fcm(kind, values),
        };
        // The target is the binding's, whatever the template says.
        message.insert("token".into(), token.into());
        Ok(Value::Object(message))
    }
}

fn default_apns(kind: PushKind, values: &Values) -> Map<String, Value> {
    let aps = match kind {
        // VoIP pushes go to PushKit, which ignores `aps`; the app reads the custom keys.
        PushKind::Call => json!({}),
        PushKind::Refresh => json!({"content-available": 1}),
        PushKind::Cancel => json!({"alert": {"title": values.title, "body": values.body}}),
        PushKind::Missed | PushKind::Message => json!({
            "alert": {"title": values.title, "body": values.body},
            "sound": "default",
        }),
    };
    let mut payload = values.custom_keys();
    payload.insert("aps".into(), aps);
    payload
}

fn default_fcm(kind: PushKind, values: &Values) -> Map<String, Value> {
    let mut data = values.custom_keys();
    if !values.title.is_empty() {
        data.insert("title".into(), values.title.clone().into());
        data.insert("body".into(), values.body.clone().into());
    }
    let mut android = Map::new();
    // Refresh needs no immediate wake-up; everything else is for a person, now.
    let priority = if kind == PushKind::Refresh {
        "normal"
    } else {
        "high"
    };
    android.insert("priority".into(), priority.into());
    if matches!(kind, PushKind::Call | PushKind::Cancel) {
        // A ring that arrives after the caller gave up is worse than none.
        let mut ttl = String::new();
        let _ = write!(ttl, "{}s", values.ttl);
        android.insert("ttl".into(), ttl.into());
    }
    let mut message = Map::new();
    message.insert("data".into(), Value::Object(data));
    message.insert("android".into(), Value::Object(android));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> PushData {
        PushData {
            caller_number: Some("1000".into()),
            caller_name: Some("Alice \"A\"".into()),
            call_uuid: Some("6f1c1b3a-0000-4000-8000-000000000001".into()),
            call_id: Some("abc@pbx".into()),
            endpoint: Some("bob".into()),
            text: None,
        }
    }

    fn values(kind: PushKind) -> Values {
        Values::new("ios", kind, &data(), 25, 1_700_000_000)
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn default_call_payload_carries_the_call() {
        let p = parse(
            &Templates::default()
                .apns_payload(PushKind::Call, &values(PushKind::Call))
                .unwrap(),
        );
        assert_eq!(p["aps"], json!({}));
        assert_eq!(p["kind"], "call");
        assert_eq!(p["caller_number"], "1000");
        assert_eq!(p["caller_name"], "Alice \"A\"");
        assert_eq!(p["call_uuid"], "6f1c1b3a-0000-4000-8000-000000000001");
        assert_eq!(p["call_id"], "abc@pbx");
        assert_eq!(p["endpoint"], "bob");
        assert!(p.get("text").is_none(), "absent values are left out");
    }

    #[test]
    fn default_alerts_and_background() {
        let t = Templates::default();
        let cancel = parse(
            &t.apns_payload(PushKind::Cancel, &values(PushKind::Cancel))
                .unwrap(),
        );
        assert_eq!(cancel["aps"]["alert"]["title"], "Call ended");
        assert_eq!(cancel["aps"]["alert"]["body"], "Alice \"A\" (1000)");
        let missed = parse(
            &t.apns_payload(PushKind::Missed, &values(PushKind::Missed))
                .unwrap(),
        );
        assert_eq!(missed["aps"]["alert"]["title"], "Missed call");
        assert_eq!(missed["aps"]["sound"], "default");
        let refresh = parse(
            &t.apns_payload(PushKind::Refresh, &values(PushKind::Refresh))
                .unwrap(),
        );
        assert_eq!(refresh["aps"], json!({"content-available": 1}));
        let msg = Values::new(
            "ios",
            PushKind::Message,
            &PushData {
                text: Some("hello".into()),
                ..Default::default()
            },
            0,
            0,
        );
        let msg = parse(&t.apns_payload(PushKind::Message, &msg).unwrap());
        assert_eq!(msg["aps"]["alert"]["title"], "New message");
        assert_eq!(msg["aps"]["alert"]["body"], "hello");
    }

    #[test]
    fn default_fcm_call_is_data_only_high_priority_with_ttl() {
        let m = Templates::default()
            .fcm_message(PushKind::Call, &values(PushKind::Call), "tok")
            .unwrap();
        assert_eq!(m["token"], "tok");
        assert!(m.get("notification").is_none());
        assert_eq!(m["android"], json!({"priority": "high", "ttl": "25s"}));
        assert_eq!(m["data"]["kind"], "call");
        assert_eq!(m["data"]["caller_number"], "1000");
        assert_eq!(m["data"]["title"], "Incoming call");
        assert!(
            m["data"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
        let r = Templates::default()
            .fcm_message(PushKind::Refresh, &values(PushKind::Refresh), "tok")
            .unwrap();
        assert_eq!(r["android"], json!({"priority": "normal"}));
    }

    #[test]
    fn template_values_are_json_escaped() {
        let t = Template::parse(r#"{"aps":{},"who":"{{ caller }}","n":{{ttl}},"k":"{{kind}}"}"#)
            .unwrap();
        t.validate(Provider::Apns).unwrap();
        let mut templates = Templates::default();
        templates.set(PushKind::Call, t);
        let p = parse(
            &templates
                .apns_payload(PushKind::Call, &values(PushKind::Call))
                .unwrap(),
        );
        assert_eq!(p["who"], "Alice \"A\" (1000)");
        assert_eq!(p["n"], 25);
        assert_eq!(p["k"], "call");
    }

    #[test]
    fn refresh_template_keeps_content_available() {
        let mut templates = Templates::default();
        templates.set(
            PushKind::Refresh,
            Template::parse(r#"{"x":"{{kind}}"}"#).unwrap(),
        );
        let p = parse(
            &templates
                .apns_payload(PushKind::Refresh, &values(PushKind::Refresh))
                .unwrap(),
        );
        assert_eq!(p["aps"]["content-available"], 1);
        assert_eq!(p["x"], "refresh");
    }

    #[test]
    fn fcm_template_may_wrap_message_and_token_is_forced() {
        let t =
            Template::parse(r#"{"message":{"token":"nope","data":{"from":"{{caller_number}}"}}}"#)
                .unwrap();
        t.validate(Provider::Fcm).unwrap();
        let mut templates = Templates::default();
        templates.set(PushKind::Call, t);
        let m = templates
            .fcm_message(PushKind::Call, &values(PushKind::Call), "real")
            .unwrap();
        assert_eq!(m, json!({"token": "real", "data": {"from": "1000"}}));
    }

    #[test]
    fn bad_templates_are_explained() {
        let err = Template::parse(r#"{"a":"{{nope}}"}"#).unwrap_err();
        assert!(err.contains("unknown placeholder {{nope}}"), "{err}");
        let err = Template::parse(r#"{"a":"{{caller"}"#).unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
        let err = Template::parse(r#"{"a":{{caller}}}"#)
            .unwrap()
            .validate(Provider::Apns)
            .unwrap_err();
        assert!(
            err.contains("not valid JSON") && err.contains("inside JSON strings"),
            "{err}"
        );
        let err = Template::parse(r#"{"a":1,}"#)
            .unwrap()
            .validate(Provider::Apns)
            .unwrap_err();
        assert!(
            err.contains("not valid JSON") && !err.contains("inside"),
            "{err}"
        );
        let err = Template::parse("[1]")
            .unwrap()
            .validate(Provider::Apns)
            .unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = Template::parse(r#"{"data":{"n":{{ttl}}}}"#)
            .unwrap()
            .validate(Provider::Fcm)
            .unwrap_err();
        assert!(err.contains("data.n"), "{err}");
        let err = Template::parse(r#"{"aps":"x"}"#)
            .unwrap()
            .validate(Provider::Apns)
            .unwrap_err();
        assert!(err.contains("aps"), "{err}");
    }

    #[test]
    fn caller_display() {
        let v = |name: Option<&str>, number: Option<&str>| {
            Values::new(
                "a",
                PushKind::Missed,
                &PushData {
                    caller_name: name.map(Into::into),
                    caller_number: number.map(Into::into),
                    ..Default::default()
                },
                0,
                0,
            )
            .caller
        };
        assert_eq!(v(Some("A"), Some("1")), "A (1)");
        assert_eq!(v(Some("1"), Some("1")), "1");
        assert_eq!(v(None, Some("1")), "1");
        assert_eq!(v(Some(""), None), "Unknown caller");
    }
    #[test]
    fn voicemail_payloads() {
        let vm = VoicemailPush {
            target: res_push_proto::PushTarget {
                provider: Provider::Fcm,
                app_id: "p".into(),
                token: "t".into(),
                environment: None,
            },
            mailbox: "1000@default".into(),
            new_messages: 1,
            old_messages: 3,
            urgent_messages: 0,
            endpoint: Some("alice".into()),
            collapse_id: "mwi-1000@default".into(),
            background: false,
        };
        let v = Values::voicemail("android", &vm, 30, 0);
        let t = Templates::default();
        let m = t.fcm_voicemail(&v, "tok", "mwi-1000@default").unwrap();
        assert_eq!(m["token"], "tok");
        assert_eq!(m["android"]["collapse_key"], "mwi-1000@default");
        assert_eq!(m["android"]["priority"], "high");
        assert_eq!(m["data"]["kind"], "voicemail");
        assert_eq!(m["data"]["body"], "1 new voicemail message");
        assert_eq!(m["data"]["old_messages"], "3");
        assert!(
            m["data"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
        let mut custom = Templates::default();
        let tpl = Template::parse(
            r#"{"aps":{"badge":{{new_messages}}},"box":"{{mailbox}}","n":{{new_messages}}}"#,
        )
        .unwrap();
        tpl.validate(Provider::Apns).unwrap();
        custom.set_voicemail(tpl);
        let p = parse(&custom.apns_voicemail(&v, true).unwrap());
        assert_eq!(p["aps"]["badge"], 1);
        assert_eq!(p["aps"]["content-available"], 1, "background keeps it");
        assert_eq!(p["box"], "1000@default");
        assert_eq!(voicemail_text(0).1, "No new voicemail messages");
        assert_eq!(voicemail_text(5).1, "5 new voicemail messages");
    }
}
