//! The unsafe edge: bindgen's view of the Asterisk headers and of `asterisk-headers/shim.h`.
//!
//! Generated into `OUT_DIR` by the root `build.rs`, never edited. Only the `ast` wrappers and
//! `entry` use it directly; the rest of the crate goes through them.

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;
