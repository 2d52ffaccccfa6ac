//! The committed C header is exactly what cbindgen generates from this crate
//! (spec §3.8), and it compiles as C11 and as C++17 with every layout
//! assertion of its trailer, including `HF_EXPORT_ABI()`.

use std::path::PathBuf;
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed_header() -> PathBuf {
    crate_dir().join("include/holdfast_plugin.h")
}

fn generated_header() -> String {
    let config =
        cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_is_fresh() {
    let generated = generated_header();
    if std::env::var_os("HOLDFAST_BLESS_HEADER").is_some() {
        std::fs::write(committed_header(), &generated).expect("write the header");
    }
    let committed = std::fs::read_to_string(committed_header()).expect("the header is committed");
    assert!(
        committed == generated,
        "include/holdfast_plugin.h is stale: regenerate it with \
         HOLDFAST_BLESS_HEADER=1 cargo test -p holdfast-plugin-abi --test header"
    );
}

/// Compiles `source` with `compiler` and `flags` into an object file.
fn compile(compiler: &str, flags: &[&str], source: &str, extension: &str) {
    let dir = std::env::temp_dir().join(format!("holdfast-header-{}-{extension}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("check.{extension}"));
    std::fs::write(&file, source).unwrap();
    let include = crate_dir().join("include");
    let output = Command::new(compiler)
        .args(flags)
        .args(["-Wall", "-Wextra", "-Werror", "-c", "-o"])
        .arg(dir.join("check.o"))
        .arg("-I")
        .arg(&include)
        .arg(&file)
        .output()
        .unwrap_or_else(|error| panic!("{compiler} could not be run: {error}"));
    assert!(
        output.status.success(),
        "{compiler} {flags:?} refused the header:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const PLUGIN_SOURCE: &str = r#"
#include "holdfast_plugin.h"
HF_EXPORT_ABI()
static uint32_t answer(void) { return 42u; }
uint32_t use_types(const HfHostApi *host, HfGuestContractInterface *interface) {
    (void)host;
    interface->dispatch_type = HF_DISPATCH_NATIVE;
    return answer() + (uint32_t)sizeof(HfAbiError);
}
"#;

#[test]
fn header_compiles_as_c11_with_its_layout_assertions() {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    compile(&compiler, &["-std=c11", "-pedantic"], PLUGIN_SOURCE, "c");
}

#[test]
fn header_compiles_as_cpp17_with_its_layout_assertions() {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    compile(&compiler, &["-std=c++17", "-pedantic"], PLUGIN_SOURCE, "cpp");
}
