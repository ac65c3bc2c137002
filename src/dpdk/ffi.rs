//! Raw DPDK bindings, generated at build time by bindgen from
//! `csrc/wrapper.h` (see `build.rs`); nothing here is written by hand.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, missing_docs)]
#![allow(clippy::all, unsafe_op_in_unsafe_fn, improper_ctypes)]

include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
