//! Finds DPDK with pkg-config, generates Rust bindings with bindgen over
//! `csrc/wrapper.h`, and compiles `csrc/shim.c` (DPDK's static-inline fast-path
//! functions made callable). Both use exactly the CFLAGS pkg-config gives for
//! libdpdk: they carry `-include rte_config.h -march=corei7`, and the shim does
//! not compile without them. We never add `-march=native`: the binary must run
//! on any machine the distribution's DPDK runs on.

use std::env;
use std::path::PathBuf;

const MIN_DPDK: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            // One readable line, then the details: the usual cause is a machine
            // without the development package.
            panic!(
                "\n\nhbgw needs DPDK >= {MIN_DPDK} found through pkg-config (libdpdk.pc): \
                 install it with `apt-get install libdpdk-dev pkg-config` \
                 (or set PKG_CONFIG_PATH to your DPDK build's pkgconfig directory).\n\
                 pkg-config said: {e}\n"
            );
        }
    };

    // The raw CFLAGS (include paths, -include rte_config.h, -march=...) as
    // pkg-config prints them; pkg-config-rs keeps only -I and -D.
    let cflags = pkg_config_cflags();

    let mut build = cc::Build::new();
    build.file("csrc/shim.c").include("csrc").opt_level(3).warnings(true);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("hbgw_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_arg("-Icsrc")
        .clang_args(&cflags)
        // Only DPDK's and the shim's names: the whole of libc and clang's
        // builtin AMX `__tile*` types would otherwise break the build.
        .allowlist_function("rte_.*")
        .allowlist_function("hbgw_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("rte_.*")
        .blocklist_function("rte_.*_cmpxchg.*")
        // Protocol headers hbgw never reads through DPDK (it parses frames in
        // Rust); their packed-with-aligned layouts are not representable.
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .opaque_type("rte_flow_item_gtp.*")
        .opaque_type("rte_flow_item_l2tpv2")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            panic!("bindgen could not read DPDK's headers ({e}): install `clang libclang-dev`")
        });
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write bindings");

    // rpath so the binary finds librte_* without LD_LIBRARY_PATH when DPDK
    // lives outside the default search path (a self-built DPDK).
    for path in &dpdk.link_paths {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", path.display());
    }
}

fn pkg_config_cflags() -> Vec<String> {
    let output = std::process::Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    assert!(output.status.success(), "pkg-config --cflags libdpdk failed");
    let text = String::from_utf8(output.stdout).expect("pkg-config prints UTF-8");
    // `-include rte_config.h` is two words that must stay together and in order.
    text.split_whitespace().map(str::to_owned).collect()
}
