//! Build script of `res_push` (the cdylib): bindings to the real Asterisk headers, and the C shim.
//!
//! Inputs (see asterisk-headers/prepare.sh, which prints them for Debian's Asterisk 22):
//! - `ASTERISK_INCLUDE_DIR`: folder holding `asterisk.h` and `asterisk/`;
//! - `PJPROJECT_INCLUDE_DIR`: folder holding the pjproject headers Asterisk was built with.
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

    const SHIM_SOURCES: [&str; 4] = [
        "shim_module.c",
        "shim_pjsip.c",
        "shim_manager.c",
        "shim_wake.c",
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
            "rp_module_.*|rp_cli_describe|rp_cli_exec|rp_sip_on_.*|rp_ami_exec|rp_wake_local_destination|rp_wake_devicestate|rp_wake_app",
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
}
