//! Parse + store cost of one REGISTER (target: ≤ 5 µs): `decide` on a realistic RFC 8599
//! Contact, then `Store::register`, over many distinct devices so the store grows as in the
//! field. Prints figures; asserts nothing about time.

use std::hint::black_box;
use std::time::Instant;

use res_push_core::binding::{Registration, Store};
use res_push_core::registrar::{Action, Policy, RegisterRequest, Verdict, decide};

fn main() {
    const DEVICES: usize = 10_000;
    const ROUNDS: usize = 5;
    let policy = Policy::default();
    let requests: Vec<RegisterRequest> = (0..DEVICES)
        .map(|i| RegisterRequest {
            contacts: vec![format!(
                "<sip:user{i}@198.51.100.{}:{};transport=tls;pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid={:064x}>;expires=600;+sip.instance=\"<urn:uuid:{i:08}-0000-0000-0000-000000000000>\"",
                i % 250,
                5060 + i % 1000,
                i as u128 * 0x9e37_79b9_7f4a_7c15
            )],
            expires: Some(600),
            x_mpush: None,
        })
        .collect();

    let mut store = Store::new();
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let start = Instant::now();
        for (i, req) in requests.iter().enumerate() {
            let Verdict::Accept { actions, .. } = decide(black_box(req), &policy) else {
                panic!("not accepted")
            };
            for a in actions {
                if let Action::Bind {
                    params,
                    contact_uri,
                    instance,
                    ua_pnsreg,
                    expires,
                } = a
                {
                    black_box(store.register(
                        Registration {
                            aor: format!("user{i}"),
                            params,
                            contact_uri,
                            user_agent: Some("Bench/1.0".into()),
                            instance,
                            ua_pnsreg,
                            expires: expires.unwrap_or(600),
                        },
                        1_000 + round as u64,
                    ));
                }
            }
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / DEVICES as f64;
        println!(
            "round {round} ({}): {per:.2} µs per REGISTER (parse + decide + store)",
            if round == 0 {
                "new bindings"
            } else {
                "refreshes"
            }
        );
        samples.push(per);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "parse+store per REGISTER: median {:.2} µs over {ROUNDS} rounds of {DEVICES} devices (target <= 5 µs); store holds {}",
        samples[ROUNDS / 2],
        store.len()
    );
}
