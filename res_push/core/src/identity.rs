//! Which Asterisk and pjproject `res_push.so` was built for, and the load-time check against the
//! Asterisk that loads it.
//!
//! The C shim reads pjproject structs (`pjsip_rx_data`, ...) whose layout depends on the exact
//! pjproject version and `config_site.h` of the Asterisk it was compiled against, and Asterisk's
//! own `buildopt_sum` check does not cover pjproject. So `build.rs` records the Asterisk version
//! and the pjproject version of the headers it was given, and at load the module compares them
//! with what the running Asterisk reports (`ast_get_version()`, `pj_get_version()`): when they
//! differ it declines to load instead of corrupting memory.
//!
//! The record is a fixed-size, marked byte array compiled into the library ([`encode`]), so that
//! a test can alter it in a built `res_push.so` ([`find`], then [`encode`] again) and see the
//! refusal.

use std::fmt;

/// Starts the record in the library's read-only data.
pub const MARKER: &[u8; 20] = b"RES_PUSH_BUILT_FOR:\0";
/// Bytes per recorded version (NUL-padded).
pub const SLOT: usize = 64;
/// The whole record: marker, Asterisk version, pjproject version.
pub const RECORD_LEN: usize = MARKER.len() + 2 * SLOT;

/// An Asterisk and the pjproject inside it, by version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Asterisk's version, as `ast_get_version()` reports it or as the headers' package says
    /// (e.g. `22.10.1+dfsg+~cs6.17.60671434-1`, `18.0.24`).
    pub asterisk: String,
    /// pjproject's version, as `pj_get_version()` reports it (e.g. `2.17`).
    pub pjproject: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Asterisk {}, pjproject {}",
            self.asterisk, self.pjproject
        )
    }
}

/// The record compiled into the library. Fails when a version does not fit its slot.
pub fn encode(id: &Identity) -> Result<[u8; RECORD_LEN], String> {
    let mut out = [0u8; RECORD_LEN];
    out[..MARKER.len()].copy_from_slice(MARKER);
    for (i, v) in [&id.asterisk, &id.pjproject].into_iter().enumerate() {
        let b = v.as_bytes();
        if b.is_empty() || b.len() >= SLOT || b.contains(&0) {
            return Err(format!("version '{v}' does not fit a {SLOT}-byte slot"));
        }
        let at = MARKER.len() + i * SLOT;
        out[at..at + b.len()].copy_from_slice(b);
    }
    Ok(out)
}

/// Reads a record written by [`encode`]; `None` if it is not one.
pub fn decode(record: &[u8]) -> Option<Identity> {
    if record.len() < RECORD_LEN || !record.starts_with(MARKER) {
        return None;
    }
    let slot = |i: usize| {
        let at = MARKER.len() + i * SLOT;
        let s = &record[at..at + SLOT];
        let end = s.iter().position(|b| *b == 0)?;
        // NUL-padded to the end: anything else is not a record (the marker alone also sits in
        // the library's constants, followed by other data).
        if s[end..].iter().any(|b| *b != 0) {
            return None;
        }
        let v = std::str::from_utf8(&s[..end]).ok()?;
        (!v.is_empty()).then(|| v.to_string())
    };
    Some(Identity {
        asterisk: slot(0)?,
        pjproject: slot(1)?,
    })
}

/// Offset of the (only) record in a built library, for tests that alter it.
pub fn find(library: &[u8]) -> Option<usize> {
    let mut hits = library
        .windows(MARKER.len())
        .enumerate()
        .filter(|(i, w)| w == MARKER && decode(&library[*i..]).is_some())
        .map(|(i, _)| i);
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// The release an Asterisk version string names: an optional epoch and any packaging suffix
/// (`+dfsg…`, `~deb11u4`, a Debian revision) dropped, pre-release tags (`-rc2`, `-cert4`) kept.
/// `22.10.1+dfsg+~cs6.17.60671434-1` → `22.10.1`; `1:16.28.0~dfsg-0+deb11u4` → `16.28.0`.
pub fn asterisk_release(version: &str) -> Option<String> {
    let v = version.trim();
    let v = match v.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        _ => v,
    };
    let v = v.strip_prefix("certified/").unwrap_or(v);
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, rest) = v.split_at(end);
    let parts: Vec<&str> = num.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut release = num.to_string();
    for tag in ["-rc", "-cert", "-beta", "-alpha"] {
        if let Some(after) = rest.strip_prefix(tag) {
            let n: String = after.chars().take_while(char::is_ascii_digit).collect();
            release.push_str(tag);
            release.push_str(&n);
            break;
        }
    }
    Some(release)
}

/// Asterisk's `ASTERISK_VERSION_NUM` (e.g. `221001`, `180500`) as a release (`22.10.1`).
pub fn asterisk_release_from_num(num: u64) -> Option<String> {
    (num >= 10000).then(|| format!("{}.{}.{}", num / 10000, num / 100 % 100, num % 100))
}

/// pjproject's version as pjlib spells it from `PJ_VERSION_NUM_MAJOR`, `_MINOR`, `_REV` and
/// `_EXTRA` (the revision only when non-zero): `2.17`, `2.14.1`, `2.15-dev`.
pub fn pjproject_version(major: u32, minor: u32, rev: u32, extra: &str) -> String {
    if rev == 0 {
        format!("{major}.{minor}{extra}")
    } else {
        format!("{major}.{minor}.{rev}{extra}")
    }
}

/// A pjproject version compared by value: `2.17`, `2.17.0` and `2.17.0.0` are the same.
fn pjproject_key(v: &str) -> Option<(Vec<u32>, String)> {
    let v = v.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, extra) = v.split_at(end);
    let mut parts = num
        .split('.')
        .map(|p| p.parse::<u32>().ok())
        .collect::<Option<Vec<u32>>>()?;
    if parts.len() < 2 {
        return None;
    }
    while parts.len() > 2 && parts.last() == Some(&0) {
        parts.pop();
    }
    Some((parts, extra.to_string()))
}

/// Why the module must not run in this Asterisk: one line naming both identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What the module was built for.
    pub built: Identity,
    /// What loads it.
    pub running: Identity,
    /// Which of the two differ (or could not be read): "Asterisk", "pjproject" or both.
    pub what: &'static str,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "built for {} but running in {} ({} differs): declining to load; \
             rebuild res_push against this Asterisk's own headers \
             (operator guide, \"Building for XiVO's Asterisk\")",
            self.built, self.running, self.what
        )
    }
}

/// The policy: the module runs only in the Asterisk release and the pjproject version it was
/// built for. Packaging suffixes (Debian revisions, `+dfsg`) are not compared; a version that
/// cannot be parsed never matches.
pub fn check(built: &Identity, running: &Identity) -> Result<(), Mismatch> {
    let ast_ok = match (
        asterisk_release(&built.asterisk),
        asterisk_release(&running.asterisk),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let pj_ok = match (
        pjproject_key(&built.pjproject),
        pjproject_key(&running.pjproject),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let what = match (ast_ok, pj_ok) {
        (true, true) => return Ok(()),
        (false, true) => "Asterisk",
        (true, false) => "pjproject",
        (false, false) => "Asterisk and pjproject",
    };
    Err(Mismatch {
        built: built.clone(),
        running: running.clone(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(a: &str, p: &str) -> Identity {
        Identity {
            asterisk: a.into(),
            pjproject: p.into(),
        }
    }

    #[test]
    fn releases() {
        let r = |v| asterisk_release(v);
        assert_eq!(
            r("22.10.1+dfsg+~cs6.17.60671434-1").as_deref(),
            Some("22.10.1")
        );
        assert_eq!(r("1:16.28.0~dfsg-0+deb11u4").as_deref(), Some("16.28.0"));
        assert_eq!(r("18.0.24").as_deref(), Some("18.0.24"));
        assert_eq!(r("22.11.0-rc2").as_deref(), Some("22.11.0-rc2"));
        assert_eq!(r("22.10.1-1").as_deref(), Some("22.10.1"));
        assert_eq!(r("certified/18.9-cert4").as_deref(), Some("18.9-cert4"));
        assert_eq!(r("GIT-master-abc123"), None);
        assert_eq!(r("22"), None);
        assert_eq!(r(""), None);
        assert_eq!(
            asterisk_release_from_num(221001).as_deref(),
            Some("22.10.1")
        );
        assert_eq!(asterisk_release_from_num(180500).as_deref(), Some("18.5.0"));
        assert_eq!(asterisk_release_from_num(12), None);
    }

    #[test]
    fn pjproject_spelling_follows_pjlib() {
        assert_eq!(pjproject_version(2, 17, 0, ""), "2.17");
        assert_eq!(pjproject_version(2, 14, 1, ""), "2.14.1");
        assert_eq!(pjproject_version(2, 15, 0, "-dev"), "2.15-dev");
    }

    #[test]
    fn same_release_and_pjproject_load() {
        let built = id("22.10.1+dfsg+~cs6.17.60671434-1", "2.17");
        assert_eq!(check(&built, &built), Ok(()));
        // The Debian revision and packaging suffixes are not compared.
        assert_eq!(check(&built, &id("22.10.1", "2.17.0")), Ok(()));
        assert_eq!(check(&id("22.10.1", "2.17"), &built), Ok(()));
    }

    #[test]
    fn another_asterisk_or_pjproject_is_refused_naming_both() {
        let built = id("22.10.1", "2.17");
        let e = check(&built, &id("22.10.2", "2.17")).unwrap_err();
        assert_eq!(e.what, "Asterisk");
        let line = e.to_string();
        assert!(
            line.starts_with(
                "built for Asterisk 22.10.1, pjproject 2.17 but running in Asterisk 22.10.2, pjproject 2.17 (Asterisk differs): declining to load"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert_eq!(
            check(&built, &id("22.10.1", "2.16")).unwrap_err().what,
            "pjproject"
        );
        assert_eq!(
            check(&built, &id("22.10.1", "2.17-dev")).unwrap_err().what,
            "pjproject"
        );
        assert_eq!(
            check(&built, &id("16.28.0", "2.10")).unwrap_err().what,
            "Asterisk and pjproject"
        );
        // Unreadable versions never match.
        assert!(check(&built, &id("", "")).is_err());
        assert!(check(&id("GIT-master", "2.17"), &id("GIT-master", "2.17")).is_err());
    }

    #[test]
    fn record_round_trips_and_is_found_once() {
        let i = id("22.10.1+dfsg+~cs6.17.60671434-1", "2.17");
        let rec = encode(&i).unwrap();
        assert_eq!(rec.len(), RECORD_LEN);
        assert_eq!(decode(&rec), Some(i.clone()));
        let mut lib = vec![0x7fu8; 1000];
        lib.extend_from_slice(&rec);
        lib.extend_from_slice(&[1, 2, 3]);
        assert_eq!(find(&lib), Some(1000));
        assert_eq!(decode(&lib[1000..]), Some(i.clone()));
        // Altered in place, as the test does with a built library.
        let other = encode(&id("21.0.0", "2.17")).unwrap();
        lib[1000..1000 + RECORD_LEN].copy_from_slice(&other);
        assert_eq!(decode(&lib[1000..]).unwrap().asterisk, "21.0.0");
        // The marker alone, followed by other data, is not a record.
        let mut with_const = MARKER.to_vec();
        with_const.extend_from_slice(b"other\0strings\0");
        with_const.resize(RECORD_LEN + 8, 0);
        assert_eq!(decode(&with_const), None);
        let mut two = with_const.clone();
        two.extend_from_slice(&rec);
        assert_eq!(find(&two), Some(with_const.len()));
        // Two records: ambiguous.
        lib.extend_from_slice(&rec);
        assert_eq!(find(&lib), None);
        assert_eq!(find(&[0; 10]), None);
        assert!(encode(&id(&"9".repeat(SLOT), "2.17")).is_err());
        assert!(encode(&id("22.10.1", "")).is_err());
        assert_eq!(decode(&rec[..RECORD_LEN - 1]), None);
    }
}
