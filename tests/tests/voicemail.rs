//! Voicemail pushes end to end: a caller (SIPp, streaming audio) leaves a message with the real
//! app_voicemail; Asterisk publishes the mailbox's MWI state; res_push sends the devices of the
//! endpoints (and AORs) whose `mailboxes` list it one alert push with the counts, collapsed per
//! mailbox, through the sidecar to the mock APNs and FCM.

use std::time::Duration;

use res_push_itests::push_env::{Mocks, setup_with};
use res_push_itests::{Asterisk, Options, Register, field, free_udp_port, wait_for};
use res_push_mocks::RecordedRequest;

const APNS_TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const FCM_TOKEN: &str = "fcm-token-dave-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// The caller: INVITE, stream audio until Asterisk hangs up (the end of the recording).
const CALLER: &str = include_str!("../sipp/voicemail-caller.xml");

/// carol's endpoint lists mailbox 1000@default; dave's AOR lists it too (without a context:
/// `default` is implied), through the AOR option.
const PJSIP: &str = "
[carol]
type = endpoint
context = default
disallow = all
allow = ulaw
aors = carol
mailboxes = 1000@default

[carol]
type = aor
max_contacts = 5

[dave]
type = endpoint
context = default
disallow = all
allow = ulaw
aors = dave

[dave]
type = aor
max_contacts = 5
mailboxes = 1000

[erin]
type = endpoint
context = default
disallow = all
allow = ulaw
aors = erin

[erin]
type = aor
max_contacts = 5
";

const MODULES: &str = "load = app_voicemail.so\nload = format_wav.so\n";

fn options() -> Options {
    Options {
        pjsip_append: PJSIP.into(),
        modules_append: MODULES.into(),
        ..Options::default()
    }
}

fn apns_pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

fn fcm_pn(mocks: &Mocks, token: &str) -> String {
    format!(
        ";pn-provider=fcm;pn-param={};pn-prid={token}",
        mocks.fcm.project_id()
    )
}

/// Registers a device and waits for its binding.
fn bind(a: &Asterisk, aor: &str, params: &str, tail: &str) {
    assert!(a.register(&Register::new(aor, params)).ok, "REGISTER {aor}");
    wait_for(WAIT, || {
        a.cli(&format!("push show bindings {aor}"))
            .contains(tail)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("binding of {aor}"));
}

/// A µ-law WAV of `secs` seconds of a 400 Hz tone, for SIPp's rtp_stream (written where SIPp,
/// which runs in the chroot, reads it).
fn audio(a: &Asterisk, secs: u32) -> String {
    let samples = 8000 * secs;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(4 + 8 + 16 + 8 + samples).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&samples.to_le_bytes());
    for i in 0..samples {
        let x = (f64::from(i) * 2.0 * std::f64::consts::PI * 400.0 / 8000.0).sin() * 8000.0;
        wav.push(mulaw(x as i16));
    }
    std::fs::write(a.host_dir.join("run/tone.wav"), wav).expect("audio file");
    format!("{}/run/tone.wav", a.dir)
}

/// G.711 µ-law encoding of one sample.
fn mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(0x7fff);
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// A caller leaves a message in mailbox 1000; returns once the call is over.
fn leave_message(a: &Asterisk, audio: &str) {
    let scenario = CALLER.replace("@AUDIO@", audio);
    let run = a
        .sipp(
            "vm-caller",
            &scenario,
            free_udp_port(),
            &["-s", "vmleave1000"],
        )
        .wait();
    assert!(run.ok, "caller:\n{}\n{}", run.trace, a.log());
}

fn is_voicemail(r: &RecordedRequest) -> bool {
    r.json.as_ref().is_some_and(|j| {
        j.get("kind") == Some(&"voicemail".into())
            || j.pointer("/message/data/kind") == Some(&"voicemail".into())
    })
}

fn apns_voicemail(mocks: &Mocks) -> Vec<RecordedRequest> {
    mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| r.device_token.as_deref() == Some(APNS_TOKEN) && is_voicemail(r))
        .collect()
}

fn fcm_voicemail(mocks: &Mocks) -> Vec<RecordedRequest> {
    mocks
        .fcm
        .requests()
        .into_iter()
        .filter(|r| {
            is_voicemail(r)
                && r.json.as_ref().and_then(|j| j.pointer("/message/token"))
                    == Some(&FCM_TOKEN.into())
        })
        .collect()
}

/// Waits until `mocks` recorded `n` voicemail pushes to the APNs device.
fn wait_apns(mocks: &Mocks, n: usize) -> Vec<RecordedRequest> {
    wait_for(WAIT, || {
        let got = apns_voicemail(mocks);
        (got.len() >= n).then_some(got)
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} voicemail push(es) to APNs: {:?}",
            apns_voicemail(mocks)
        )
    })
}

/// Waits for AMI's `MessageWaiting` event (one per MWI publication) of mailbox 1000 with `new`
/// messages, published from a call to `exten`.
fn wait_mwi(ami: &mut res_push_itests::Ami, new: u32, exten: &str) {
    let ev = ami.wait_event(WAIT, |p| {
        field(p, "Event") == Some("MessageWaiting")
            && field(p, "Mailbox") == Some("1000@default")
            && field(p, "New") == Some(&new.to_string())
            && field(p, "Exten") == Some(exten)
    });
    assert!(ev.is_some(), "MessageWaiting New: {new} from {exten}");
}

#[test]
fn leaving_a_voicemail_pushes_each_device_once_per_change() {
    let (mocks, a, _sidecar) = setup_with("voicemail", "", options());
    let mut ami = a.ami();
    bind(&a, "carol", &apns_pn(APNS_TOKEN), "…1de8f0");
    bind(&a, "dave", &fcm_pn(&mocks, FCM_TOKEN), "…456789");
    // erin has a device but no mailbox: she hears nothing.
    bind(&a, "erin", &apns_pn(&"ee".repeat(32)), "…eeeeee");
    let tone = audio(&a, 6);

    leave_message(&a, &tone);
    wait_mwi(&mut ami, 1, "vmleave1000");
    let first = wait_apns(&mocks, 1);
    let push = &first[0];
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-collapse-id"), Some("mwi-1000@default"));
    assert_eq!(push.header("apns-topic"), Some("com.example.phone"));
    let body = push.json.clone().expect("payload");
    assert_eq!(
        body["aps"]["alert"]["body"], "1 new voicemail message",
        "{body}"
    );
    assert_eq!(body["new_messages"], "1");
    assert_eq!(body["old_messages"], "0");
    assert_eq!(body["mailbox"], "1000@default");
    assert_eq!(body["endpoint"], "carol");

    // dave's AOR lists the mailbox: his Android phone gets the FCM form, collapse key included.
    let fcm = wait_for(WAIT, || {
        let got = fcm_voicemail(&mocks);
        (!got.is_empty()).then_some(got)
    })
    .expect("voicemail push to FCM");
    let msg = fcm[0].json.clone().expect("FCM body");
    assert_eq!(
        msg["message"]["android"]["collapse_key"],
        "mwi-1000@default"
    );
    assert_eq!(msg["message"]["android"]["priority"], "high");
    assert_eq!(msg["message"]["data"]["new_messages"], "1");
    assert_eq!(msg["message"]["data"]["endpoint"], "dave");

    // Logging in to the mailbox changes nothing, yet app_voicemail publishes its counts again:
    // no push. Then a second message: one push with the new counts.
    let main = a
        .sipp(
            "vm-main",
            &CALLER.replace("@AUDIO@", &tone),
            free_udp_port(),
            &["-s", "vmcheck1000"],
        )
        .wait();
    assert!(
        main.ok,
        "VoiceMailMain caller:\n{}\n{}",
        main.trace,
        a.log()
    );
    wait_mwi(&mut ami, 1, "vmcheck1000");
    leave_message(&a, &tone);
    wait_mwi(&mut ami, 2, "vmleave1000");
    let second = wait_apns(&mocks, 2);
    let counts: Vec<String> = second
        .iter()
        .map(|r| r.json.as_ref().unwrap()["new_messages"].to_string())
        .collect();
    assert_eq!(
        counts,
        ["\"1\"", "\"2\""],
        "one push per change, none for the repeat"
    );
    assert_eq!(
        second[1].json.as_ref().unwrap()["aps"]["alert"]["body"],
        "2 new voicemail messages"
    );
    assert_eq!(
        second[1].header("apns-collapse-id"),
        Some("mwi-1000@default")
    );
    let fcm = wait_for(WAIT, || {
        let got = fcm_voicemail(&mocks);
        (got.len() >= 2).then_some(got)
    })
    .expect("second voicemail push to FCM");
    let counts: Vec<String> = fcm
        .iter()
        .map(|r| r.json.as_ref().unwrap()["message"]["data"]["new_messages"].to_string())
        .collect();
    assert_eq!(counts, ["\"1\"", "\"2\""], "dave: one per change too");

    assert_eq!(
        a.log().matches("mailbox 1000@default: ").count(),
        2,
        "two changes decided on, the repeat ignored"
    );

    // Nobody without the mailbox was pushed, and nothing was a VoIP push.
    let erin = mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| r.device_token.as_deref() == Some(&"ee".repeat(32)))
        .count();
    assert_eq!(erin, 0);
    assert!(
        mocks
            .apns
            .requests()
            .iter()
            .all(|r| r.header("apns-push-type") != Some("voip"))
    );
}

#[test]
fn background_push_on_ios_when_configured_and_the_switch_off() {
    let (mocks, a, _sidecar) = setup_with(
        "voicemail-bg",
        "mwi_background_push = yes\nmwi_push = no",
        options(),
    );
    let mut ami = a.ami();
    bind(&a, "carol", &apns_pn(APNS_TOKEN), "…1de8f0");
    bind(&a, "dave", &fcm_pn(&mocks, FCM_TOKEN), "…456789");
    let tone = audio(&a, 6);

    // Off: the change is seen and nobody is pushed.
    leave_message(&a, &tone);
    wait_mwi(&mut ami, 1, "vmleave1000");
    wait_for(WAIT, || {
        a.log()
            .contains("mailbox 1000@default: 1 new, 0 old; voicemail pushes are off")
            .then_some(())
    })
    .expect("the change seen with mwi_push = no");

    // On again (reload): the next message gives carol's iPhone an alert and a background push,
    // dave's Android phone one data message (FCM has no background kind to add).
    let conf = std::fs::read_to_string(a.etc("push.conf")).unwrap();
    std::fs::write(
        a.etc("push.conf"),
        conf.replace("mwi_push = no", "mwi_push = yes"),
    )
    .unwrap();
    a.cli("module reload res_push");
    leave_message(&a, &tone);
    wait_mwi(&mut ami, 2, "vmleave1000");
    let pushes = wait_apns(&mocks, 2);
    let kind = |r: &RecordedRequest| r.header("apns-push-type").unwrap_or("").to_string();
    let mut kinds: Vec<String> = pushes.iter().map(kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["alert", "background"]);
    for p in &pushes {
        assert_eq!(p.json.as_ref().unwrap()["new_messages"], "2");
    }
    let alert = pushes.iter().find(|p| kind(p) == "alert").unwrap();
    assert_eq!(alert.header("apns-collapse-id"), Some("mwi-1000@default"));
    let bg = pushes.iter().find(|p| kind(p) == "background").unwrap();
    // Not collapsed with the alert: an offline phone would be left with the silent one.
    assert_eq!(bg.header("apns-collapse-id"), None);
    assert_eq!(bg.header("apns-priority"), Some("5"));
    let aps = &bg.json.as_ref().unwrap()["aps"];
    assert_eq!(aps["content-available"], 1);
    assert!(
        aps.get("alert").is_none(),
        "a background push shows nothing"
    );
    let fcm = wait_for(WAIT, || {
        let got = fcm_voicemail(&mocks);
        (!got.is_empty()).then_some(got)
    })
    .expect("voicemail push to FCM");
    assert_eq!(fcm.len(), 1);
    assert_eq!(
        fcm[0].json.as_ref().unwrap()["message"]["data"]["new_messages"],
        "2"
    );
}
