//! REGISTER decisions on arbitrary input: each line is a Contact value; a line starting with
//! `X-MPUSH:` is the header; the first byte picks the Expires header. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use res_push_core::pn::Rules;
use res_push_core::registrar::{Policy, RegisterRequest, decide};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut req = RegisterRequest { expires: (first % 3 == 0).then_some(u32::from(first)), ..Default::default() };
    for line in text.lines() {
        match line.strip_prefix("X-MPUSH:") {
            Some(v) => req.x_mpush = Some(v.to_string()),
            None => req.contacts.push(line.to_string()),
        }
    }
    let policy = Policy { rules: Rules { mpush: true, ..Rules::default() }, ..Policy::default() };
    let _ = decide(&req, &policy);
});
