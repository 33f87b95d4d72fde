//! Build script of `res_push` (the cdylib): bindings to the real Asterisk headers, and the C shim.
//!
//! Inputs (see asterisk-headers/prepare.sh, which prints them for Debian's Asterisk 22):
//! - `ASTERISK_INCLUDE_DIR`: folder holding `asterisk.h` and `asterisk/`;
//! - `PJPROJECT_INCLUDE_DIR`: folder holding the pjproject headers Asterisk was built with;
//! - `ASTERISK_VERSION`: the version of the Asterisk those headers come from (e.g. its
//!   `asterisk-dev` package's, `22.10.1+dfsg+~cs6.17.60671434-1`), needed when the headers do
//!   not define `ASTERISK_VERSION_NUM` (Debian's do not).
//!
//! The Asterisk and pjproject versions of those headers are recorded in the module
//! (`identity.rs` in `OUT_DIR`); at load it declines to run in any other (res_push_core::identity).
//!
//! bindgen and the shim get exactly the same defines and include paths, so the structs Rust sees
//! are the structs the shim and Asterisk use.

use std::env;
use std::path::{Path, PathBuf};

const MODULE_NAME: &str = "res_push";

fn include_dir(var: &str, must_contain: &str, hint: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let dir = env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "\n\n{var} is not set: it must name the folder holding {must_contain}.\n\
             {hint}\nRun asterisk-headers/prepare.sh to prepare them for Debian's Asterisk 22.\n\n"
        )
    });
    if !dir.join(must_contain).exists() {
        panic!(
            "\n\n{var}={} does not contain {must_contain}.\n{hint}\n\n",
            dir.display()
        );
    }
    dir
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shim_dir = root.join("asterisk-headers");
    let asterisk = include_dir(
        "ASTERISK_INCLUDE_DIR",
        "asterisk.h",
        "It is the include folder of asterisk-dev (only asterisk.h and asterisk/, not all of /usr/include).",
    );
    let pjproject = include_dir(
        "PJPROJECT_INCLUDE_DIR",
        "pjsip.h",
        "res_pjsip.h needs the headers of the pjproject bundled with that Asterisk, configured.",
    );

    const SHIM_SOURCES: [&str; 8] = [
        "shim_module.c",
        "shim_sorcery.c",
        "shim_identity.c",
        "shim_pjsip.c",
        "shim_manager.c",
        "shim_wake.c",
        "shim_mwi.c",
        "shim_message.c",
    ];
    for f in ["wrapper.h", "shim.h"].iter().chain(SHIM_SOURCES.iter()) {
        println!("cargo:rerun-if-changed={}", shim_dir.join(f).display());
    }

    // Shared by bindgen (clang) and cc (gcc). AST_MODULE and AST_MODULE_SELF_SYM are what
    // Asterisk's own build passes each module; asterisk.h refuses to compile without them.
    // PJ_AUTOCONF makes pjproject read the os_auto.h that prepare.sh generated, as Asterisk does.
    let defines = [
        "-D_GNU_SOURCE".to_string(),
        format!("-DAST_MODULE=\"{MODULE_NAME}\""),
        format!("-DAST_MODULE_SELF_SYM=__internal_{MODULE_NAME}_self"),
        "-DPJ_AUTOCONF=1".to_string(),
        "-DPJ_IS_LITTLE_ENDIAN=1".to_string(),
        "-DPJ_IS_BIG_ENDIAN=0".to_string(),
    ];
    let includes = [&shim_dir, &asterisk, &pjproject].map(|d| format!("-I{}", d.display()));
    let flags: Vec<&str> = defines
        .iter()
        .chain(includes.iter())
        .map(String::as_str)
        .collect();

    let bindings = bindgen::Builder::default()
        .header(shim_dir.join("wrapper.h").to_string_lossy())
        .clang_args(&flags)
        // Asterisk's headers use clang blocks under clang; gcc (the shim) needs no such flag.
        .clang_arg("-fblocks")
        .allowlist_function(
            "rp_.*|ast_.*|__ast_.*|ao2_.*|__ao2_.*|pthread_join|pthread_self|pthread_setname_np",
        )
        .allowlist_type("rp_.*|ast_.*")
        .allowlist_var("PJSIP_.*")
        .allowlist_var("RP_.*|AST_.*|__LOG_.*|RESULT_.*|option_debug")
        // Variadic printf-style entry points: Rust never passes a format, the shim does ("%s").
        .blocklist_function("ast_log|ast_cli|ast_verbose|__ast_verbose|ast_log_safe")
        // Implemented in Rust (entry.rs); the shim only declares them for its own use.
        .blocklist_function(
            "rp_module_.*|rp_cli_describe|rp_cli_exec|rp_sip_on_.*|rp_ami_exec|rp_mwi_on_state|rp_wake_local_destination|rp_wake_devicestate|rp_wake_app|rp_msg_send|rp_msg_status",
        )
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on asterisk-headers/wrapper.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");

    let mut shim = cc::Build::new();
    for f in SHIM_SOURCES {
        shim.file(shim_dir.join(f));
    }
    shim.warnings(true).extra_warnings(false).pic(true);
    for f in &flags {
        shim.flag(f);
    }
    // Nothing in Rust references the module info or its constructor; without whole-archive the
    // linker would drop them and Asterisk would never see the module register.
    shim.link_lib_modifier("+whole-archive");
    shim.compile("res_push_shim");

    record_identity(&flags, &out);
}

/// Reads the Asterisk and pjproject versions from the headers (through the C preprocessor, with
/// the flags the shim is compiled with) and writes `identity.rs`: the record the module checks
/// at load. Its layout is res_push_core::identity::encode's.
fn record_identity(flags: &[&str], out: &Path) {
    println!("cargo:rerun-if-env-changed=ASTERISK_VERSION");
    let probe = out.join("identity_probe.c");
    std::fs::write(
        &probe,
        "#include \"asterisk.h\"\n#include <pj/config.h>\n\
         res_push_ast_num ASTERISK_VERSION_NUM\n\
         res_push_ast_pkg PACKAGE_VERSION\n\
         res_push_pj PJ_VERSION_NUM_MAJOR PJ_VERSION_NUM_MINOR PJ_VERSION_NUM_REV PJ_VERSION_NUM_EXTRA\n",
    )
    .expect("writing identity_probe.c");
    let mut cpp = cc::Build::new();
    cpp.file(&probe).cargo_metadata(false);
    for f in flags {
        cpp.flag(f);
    }
    let expanded = cpp.expand();
    let expanded = String::from_utf8_lossy(&expanded);
    let tagged = |tag: &str| -> Vec<String> {
        expanded
            .lines()
            .find_map(|l| l.trim().strip_prefix(tag))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };

    let pj = tagged("res_push_pj ");
    let num = |i: usize| -> u32 {
        pj.get(i)
            .and_then(|v| v.trim_matches(|c| c == '(' || c == ')').parse().ok())
            .unwrap_or_else(|| {
                panic!("\n\nthe pjproject headers define no PJ_VERSION_NUM_MAJOR/MINOR/REV (pj/config.h): {pj:?}\n\n")
            })
    };
    let extra = pj.get(3..).map(|e| e.concat()).unwrap_or_default();
    let extra = extra.trim_matches('"');
    let pjproject = pjproject_version(num(0), num(1), num(2), extra);

    let from_num = tagged("res_push_ast_num ")
        .first()
        .and_then(|v| v.parse::<u64>().ok())
        .and_then(|n| (n >= 10000).then(|| format!("{}.{}.{}", n / 10000, n / 100 % 100, n % 100)));
    let package = tagged("res_push_ast_pkg ")
        .first()
        .map(|v| v.trim_matches('"').to_string());
    let given = env::var("ASTERISK_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let asterisk = match (&from_num, &given) {
        (Some(n), Some(g)) => {
            let unepoched = g.split_once(':').map_or(g.as_str(), |(_, r)| r);
            let release: String = unepoched
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if release != *n {
                panic!(
                    "\n\nASTERISK_VERSION={g} but the headers say ASTERISK_VERSION_NUM {n}: they are from another Asterisk.\n\n"
                );
            }
            g.clone()
        }
        (Some(n), None) => n.clone(),
        (None, Some(g)) => g.clone(),
        (None, None) => panic!(
            "\n\nThe Asterisk headers do not define ASTERISK_VERSION_NUM, so set ASTERISK_VERSION to the \
             version of the Asterisk they come from (e.g. `dpkg-query -W -f '${{Version}}' asterisk-dev`).\n\
             asterisk-headers/prepare.sh prints it for Debian's Asterisk.\n\n"
        ),
    };
    // autoconfig.h's PACKAGE_VERSION is the major ("22") in release builds: a cheap guard
    // against pairing headers with the version of another Asterisk.
    if let Some(major) = package
        .as_deref()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let v = asterisk
            .split_once(':')
            .map_or(asterisk.as_str(), |(_, r)| r);
        if v.split('.').next() != Some(major) {
            panic!(
                "\n\nASTERISK_VERSION={asterisk} but the headers are Asterisk {major}'s (PACKAGE_VERSION in autoconfig.h).\n\n"
            );
        }
    }
    let record = encode_identity(&asterisk, &pjproject);
    std::fs::write(
        out.join("identity.rs"),
        format!(
            "/// What this module was built for, as res_push_core::identity encodes it: \
             Asterisk {asterisk:?}, pjproject {pjproject:?}.\n\
             #[used]\npub static BUILT_FOR: [u8; {}] = *b\"{}\";\n",
            record.len(),
            record
                .iter()
                .map(|b| format!("\\x{b:02x}"))
                .collect::<String>()
        ),
    )
    .expect("writing identity.rs");
}

/// res_push_core::identity::pjproject_version (pjlib's spelling), repeated so that the build
/// script needs no build-dependency.
fn pjproject_version(major: u32, minor: u32, rev: u32, extra: &str) -> String {
    if rev == 0 {
        format!("{major}.{minor}{extra}")
    } else {
        format!("{major}.{minor}.{rev}{extra}")
    }
}

/// res_push_core::identity::encode, repeated here (see its docs): marker, then two 64-byte
/// NUL-padded slots. The unit tests of res_push_core and the foundation test read it back.
fn encode_identity(asterisk: &str, pjproject: &str) -> Vec<u8> {
    const MARKER: &[u8] = b"RES_PUSH_BUILT_FOR:\0";
    const SLOT: usize = 64;
    let mut out = MARKER.to_vec();
    for v in [asterisk, pjproject] {
        assert!(
            !v.is_empty() && v.len() < SLOT && !v.contains('\0'),
            "version '{v}' does not fit a {SLOT}-byte slot"
        );
        let mut slot = v.as_bytes().to_vec();
        slot.resize(SLOT, 0);
        out.extend_from_slice(&slot);
    }
    out
}
