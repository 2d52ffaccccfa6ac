//! Manifest validation (spec §4.3): one test per rule, each changing one
//! field of a valid manifest and matching the exact variant; the file-table
//! lookup for this platform; and the filesystem checks of `from_dir`.

use std::path::{Path, PathBuf};

use holdfast_plugin::{ContractRef, ManifestData, ManifestDependency, ManifestError};
use holdfast_plugin_abi::{BundleId, GuestContractId, Version};
use proptest::prelude::*;

const VALID: &str = r#"
loader = "native"
name = "reload-plugin"
id = "0x6650a858cfffb358"
version = "2.0.0"
file = { linux = "libreload_plugin_v2.so", macos = "libreload_plugin_v2.dylib", windows = "reload_plugin_v2.dll" }
provides = ["reload.test@1"]
needs_reinit_on_dep_reload = false
bundle_dependencies = []

[function_count]
"reload.test@1" = 1

[[dependency]]
contract = "log.Sink@1"
min_version = "1.2"
optional = true
"#;

fn parse(text: &str) -> Result<ManifestData, ManifestError> {
    ManifestData::parse(text, Path::new("/bundles/reload-plugin"))
}

/// `VALID` with the line starting with `key` replaced by `line` (or removed
/// when `line` is empty).
fn with_line(key: &str, line: &str) -> String {
    let mut replaced = false;
    let lines: Vec<&str> = VALID
        .lines()
        .map(|current| {
            if !replaced && current.starts_with(key) {
                replaced = true;
                line
            } else {
                current
            }
        })
        .collect();
    assert!(replaced, "no line starts with {key:?}");
    lines.join("\n")
}

fn refused(key: &str, line: &str) -> ManifestError {
    parse(&with_line(key, line)).expect_err("the changed manifest must be refused")
}

fn contract(name: &str, major: u32) -> ContractRef {
    ContractRef {
        name: name.to_owned(),
        major,
    }
}

#[test]
fn valid_manifest_parses_to_its_fields() {
    let manifest = parse(VALID).unwrap();
    assert_eq!(manifest.loader, "native");
    assert_eq!(manifest.name, "reload-plugin");
    assert_eq!(manifest.id, BundleId::new("reload-plugin"));
    assert_eq!(manifest.version, Version::new(2, 0, 0));
    assert_eq!(manifest.provides, vec![contract("reload.test", 1)]);
    assert_eq!(manifest.function_count.get(&contract("reload.test", 1)), Some(&1));
    assert_eq!(
        manifest.dependencies,
        vec![ManifestDependency {
            contract: contract("log.Sink", 1),
            min_minor: 2,
            optional: true
        }]
    );
    assert_eq!(manifest.dir, PathBuf::from("/bundles/reload-plugin"));
    assert_eq!(
        contract("reload.test", 1).id(),
        GuestContractId::new("reload.test", 1)
    );
    assert_eq!(contract("reload.test", 1).to_string(), "reload.test@1");
    assert_eq!(
        "reload.test@1".parse::<ContractRef>(),
        Ok(contract("reload.test", 1))
    );
}

#[test]
fn file_table_picks_this_platform() {
    let manifest = parse(VALID).unwrap();
    let expected = match std::env::consts::OS {
        "linux" => "libreload_plugin_v2.so",
        "macos" => "libreload_plugin_v2.dylib",
        "windows" => "reload_plugin_v2.dll",
        other => panic!("untested platform {other}"),
    };
    assert_eq!(manifest.file, PathBuf::from(expected));
    assert_eq!(
        manifest.library_path(),
        Path::new("/bundles/reload-plugin").join(expected)
    );

    let os = std::env::consts::OS;
    let arch = std::env::consts::ARCH;
    let by_arch =
        format!(r#"file = {{ {os} = {{ {arch} = "lib/right.so", other_arch = "lib/wrong.so" }} }}"#);
    assert_eq!(
        parse(&with_line("file", &by_arch)).unwrap().file,
        PathBuf::from("lib/right.so")
    );
    assert_eq!(
        parse(&with_line("file", r#"file = "plain.so""#)).unwrap().file,
        PathBuf::from("plain.so")
    );
    assert_eq!(
        refused("file", r#"file = { plan9 = "x.so" }"#),
        ManifestError::NoFileForPlatform { os, arch }
    );
    let other_arch = format!(r#"file = {{ {os} = {{ other_arch = "x.so" }} }}"#);
    assert_eq!(
        refused("file", &other_arch),
        ManifestError::NoFileForPlatform { os, arch }
    );
}

#[test]
fn rule_1_syntax_types_and_unknown_keys() {
    assert!(matches!(parse("name = "), Err(ManifestError::Syntax { .. })));
    assert!(matches!(
        refused("version", "version = 2"),
        ManifestError::Syntax { .. }
    ));
    assert!(matches!(
        refused("id", "id = 7372655838862144344"),
        ManifestError::Syntax { .. }
    ));
    assert!(matches!(
        refused("bundle_dependencies", "colour = \"blue\""),
        ManifestError::Syntax { .. }
    ));
    assert!(matches!(
        refused("optional", "optional = \"yes\""),
        ManifestError::Syntax { .. }
    ));
    assert!(matches!(
        refused("\"reload.test@1\"", "\"reload.test@1\" = -1"),
        ManifestError::Syntax { .. }
    ));
}

#[test]
fn rule_2_required_fields() {
    for field in ["name", "id", "version", "file"] {
        assert_eq!(
            refused(&format!("{field} ="), ""),
            ManifestError::MissingField { field }
        );
    }
    assert_eq!(
        refused("contract", ""),
        ManifestError::MissingField {
            field: "dependency.contract"
        }
    );
    // `loader` is optional and defaults to native.
    assert_eq!(parse(&with_line("loader", "")).unwrap().loader, "native");
}

#[test]
fn rule_3_bundle_name() {
    for name in ["", "-leading", ".hidden", "has space", "ünï", &"n".repeat(129)] {
        let error = refused("name", &format!("name = {name:?}"));
        assert_eq!(
            error,
            ManifestError::InvalidName {
                name: name.to_owned()
            },
            "{name:?}"
        );
    }
}

#[test]
fn rule_4_loader_name() {
    for loader in ["", "Native", "na_tive", &"l".repeat(33)] {
        let error = refused("loader", &format!("loader = {loader:?}"));
        assert_eq!(
            error,
            ManifestError::InvalidLoader {
                loader: loader.to_owned()
            },
            "{loader:?}"
        );
    }
    assert_eq!(
        parse(&with_line("loader", r#"loader = "wasm-vm2""#))
            .unwrap()
            .loader,
        "wasm-vm2"
    );
}

#[test]
fn rule_5_id_format_and_hash() {
    for value in [
        "6650a858cfffb358",
        "0x6650a858cfffb35",
        "0x6650a858cfffb3580",
        "0x6650a858cfffb35g",
        "0X6650a858cfffb358",
    ] {
        assert_eq!(
            refused("id", &format!("id = {value:?}")),
            ManifestError::InvalidId {
                value: value.to_owned()
            }
        );
    }
    assert_eq!(
        refused("id", r#"id = "0x0000000000000001""#),
        ManifestError::IdMismatch {
            name: "reload-plugin".to_owned(),
            expected: BundleId::new("reload-plugin"),
            found: BundleId::from_u64(1),
        }
    );
    // Upper-case hex digits are accepted.
    assert!(parse(&with_line("id", r#"id = "0x6650A858CFFFB358""#)).is_ok());
}

#[test]
fn rule_6_versions() {
    for value in ["2", "02.0.0", "2.0.0-beta", "2.0.0.1", "4294967296.0"] {
        assert_eq!(
            refused("version", &format!("version = {value:?}")),
            ManifestError::InvalidVersion {
                field: "version".to_owned(),
                value: value.to_owned()
            }
        );
    }
    assert_eq!(
        parse(&with_line("version", r#"version = "2.1""#))
            .unwrap()
            .version,
        Version::new(2, 1, 0)
    );
    for value in ["1", "1.2.3", "1.02"] {
        assert_eq!(
            refused("min_version", &format!("min_version = {value:?}")),
            ManifestError::InvalidVersion {
                field: "dependency.min_version".to_owned(),
                value: value.to_owned()
            }
        );
    }
    // Without min_version, any minor of the major is accepted.
    assert_eq!(
        parse(&with_line("min_version", "")).unwrap().dependencies[0].min_minor,
        0
    );
}

#[test]
fn rule_7_library_paths() {
    let cases = [
        ("", "the path is empty"),
        ("/usr/lib/libx.so", "the path is absolute"),
        ("\\\\server\\x.dll", "the path is absolute"),
        ("C:\\x.dll", "the path has a drive prefix"),
        ("../outside.so", "the path leaves the bundle with `..`"),
        ("lib/../../outside.so", "the path leaves the bundle with `..`"),
    ];
    for (value, reason) in cases {
        let line = format!("file = {value:?}");
        assert_eq!(
            refused("file", &line),
            ManifestError::InvalidFile {
                value: value.to_owned(),
                reason
            },
            "{value:?}"
        );
    }
    // A bad path for another platform is refused too.
    let os = std::env::consts::OS;
    let line = format!(r#"file = {{ {os} = "ok.so", other = "/abs.so" }}"#);
    assert_eq!(
        refused("file", &line),
        ManifestError::InvalidFile {
            value: "/abs.so".to_owned(),
            reason: "the path is absolute"
        }
    );
}

#[test]
fn rule_8_contract_references() {
    for value in [
        "reload.test",
        "reload.test@",
        "reload.test@01",
        "1reload@1",
        "reload..test@1",
        "re-load@1",
        "@1",
    ] {
        let error = refused("provides", &format!("provides = [{value:?}]"));
        assert_eq!(
            error,
            ManifestError::InvalidContractRef {
                value: value.to_owned()
            },
            "{value:?}"
        );
    }
    let long = format!("{}@1", "a".repeat(129));
    assert_eq!(
        refused("provides", &format!("provides = [{long:?}]")),
        ManifestError::InvalidContractRef { value: long }
    );
    assert_eq!(
        refused("contract", r#"contract = "log sink@1""#),
        ManifestError::InvalidContractRef {
            value: "log sink@1".to_owned()
        }
    );
    assert_eq!(
        refused("\"reload.test@1\"", r#""reload.test" = 1"#),
        ManifestError::InvalidContractRef {
            value: "reload.test".to_owned()
        }
    );
}

#[test]
fn rule_9_provides_without_duplicates() {
    assert_eq!(
        refused("provides", r#"provides = ["reload.test@1", "reload.test@1"]"#),
        ManifestError::DuplicateProvides {
            contract: "reload.test@1".to_owned()
        }
    );
    let many: Vec<String> = (0..257).map(|i| format!("\"c{i}@1\"")).collect();
    let error = refused("provides", &format!("provides = [{}]", many.join(", ")));
    assert_eq!(
        error,
        ManifestError::DuplicateProvides {
            contract: "c256@1".to_owned()
        }
    );
}

#[test]
fn rule_10_function_counts() {
    assert_eq!(
        refused("provides", r#"provides = ["reload.test@1", "other@1"]"#),
        ManifestError::FunctionCountMissing {
            contract: "other@1".to_owned()
        }
    );
    assert_eq!(
        refused("\"reload.test@1\"", "\"reload.test@1\" = 1\n\"other@1\" = 2"),
        ManifestError::FunctionCountUnexpected {
            contract: "other@1".to_owned()
        }
    );
    assert_eq!(
        refused("\"reload.test@1\"", "\"reload.test@1\" = 65537"),
        ManifestError::FunctionCountTooLarge {
            contract: "reload.test@1".to_owned(),
            count: 65_537
        }
    );
    assert!(parse(&with_line("\"reload.test@1\"", "\"reload.test@1\" = 65536")).is_ok());
}

#[test]
fn rule_11_dependencies() {
    assert_eq!(
        refused("min_version", r#"min_version = "2.0""#),
        ManifestError::DependencyVersionMismatch {
            contract: "log.Sink@1".to_owned(),
            min_version: "2.0".to_owned()
        }
    );
    assert_eq!(
        refused("contract", r#"contract = "reload.test@1""#),
        ManifestError::SelfDependency {
            contract: "reload.test@1".to_owned()
        }
    );
}

#[test]
fn rule_12_bundle_dependencies() {
    for (line, name) in [
        (r#"bundle_dependencies = ["-bad"]"#, "-bad"),
        (r#"bundle_dependencies = ["reload-plugin"]"#, "reload-plugin"),
        (r#"bundle_dependencies = ["base", "base"]"#, "base"),
    ] {
        assert_eq!(
            refused("bundle_dependencies", line),
            ManifestError::InvalidBundleDependency {
                name: name.to_owned()
            }
        );
    }
    let manifest = parse(&with_line(
        "bundle_dependencies",
        r#"bundle_dependencies = ["base", "log"]"#,
    ))
    .unwrap();
    assert_eq!(manifest.bundle_dependencies, ["base", "log"]);
}

/// A bundle directory with `VALID` as manifest and a library file for this
/// platform.
fn bundle_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), VALID).unwrap();
    let library = dir.path().join(parse(VALID).unwrap().file);
    std::fs::write(&library, b"not really a library").unwrap();
    (dir, library)
}

#[test]
fn rule_13_filesystem_checks() {
    let (dir, library) = bundle_dir();
    let manifest = ManifestData::from_dir(dir.path()).unwrap();
    assert_eq!(manifest.dir, dir.path().canonicalize().unwrap());

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        ManifestData::from_dir(empty.path()),
        Err(ManifestError::NotFound {
            path: empty.path().join("manifest.toml")
        })
    );

    let unreadable = tempfile::tempdir().unwrap();
    std::fs::create_dir(unreadable.path().join("manifest.toml")).unwrap();
    assert!(matches!(
        ManifestData::from_dir(unreadable.path()),
        Err(ManifestError::Io { .. })
    ));

    std::fs::remove_file(&library).unwrap();
    let missing = ManifestData::from_dir(dir.path());
    assert_eq!(
        missing,
        Err(ManifestError::LibraryMissing {
            path: manifest.library_path()
        })
    );
    std::fs::create_dir(&library).unwrap();
    let directory = ManifestData::from_dir(dir.path());
    assert_eq!(
        directory,
        Err(ManifestError::LibraryMissing {
            path: manifest.library_path()
        })
    );
}

#[cfg(unix)]
#[test]
fn a_bundle_reached_through_a_symlink_and_dots_records_its_canonical_directory() {
    let (dir, _library) = bundle_dir();
    let canonical = dir.path().canonicalize().unwrap();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("current");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    let name = canonical.file_name().unwrap();
    for spelled in [
        link.clone(),
        link.join("."),
        link.join("..")
            .join(links.path().file_name().unwrap())
            .join("current"),
        dir.path().join("..").join(name),
    ] {
        let manifest = ManifestData::from_dir(&spelled).unwrap();
        assert_eq!(manifest.dir, canonical, "read through {}", spelled.display());
    }
}

/// The kernel names an unlinked directory "<path> (deleted)"; a live one
/// that is really called that must not be taken for one, so it is resolved
/// the slow way and still read.
#[cfg(unix)]
#[test]
fn a_bundle_directory_named_like_a_deleted_one_is_still_resolved() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("bundle (deleted)");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("manifest.toml"), VALID).unwrap();
    std::fs::write(dir.join(parse(VALID).unwrap().file), b"x").unwrap();
    let manifest = ManifestData::from_dir(&dir).unwrap();
    assert_eq!(manifest.dir, dir.canonicalize().unwrap());
}

#[cfg(unix)]
#[test]
fn rule_13_symlinks_out_of_the_bundle_and_non_utf8_paths() {
    use std::os::unix::ffi::OsStrExt;

    let (dir, library) = bundle_dir();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere.so");
    std::fs::write(&target, b"x").unwrap();
    std::fs::remove_file(&library).unwrap();
    std::os::unix::fs::symlink(&target, &library).unwrap();
    let canonical_library = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(library.file_name().unwrap());
    assert_eq!(
        ManifestData::from_dir(dir.path()),
        Err(ManifestError::LibraryOutsideBundle {
            path: canonical_library
        })
    );

    // A directory component that is a symlink out of the bundle: the last
    // component is a regular file, but the library still lies outside.
    let nested = tempfile::tempdir().unwrap();
    let in_subdir = VALID.replace(
        r#"linux = "libreload_plugin_v2.so""#,
        r#"linux = "sub/libreload_plugin_v2.so""#,
    );
    std::fs::write(nested.path().join("manifest.toml"), &in_subdir).unwrap();
    std::fs::write(outside.path().join("libreload_plugin_v2.so"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), nested.path().join("sub")).unwrap();
    assert_eq!(
        ManifestData::from_dir(nested.path()),
        Err(ManifestError::LibraryOutsideBundle {
            path: nested
                .path()
                .canonicalize()
                .unwrap()
                .join("sub/libreload_plugin_v2.so")
        })
    );

    let parent = tempfile::tempdir().unwrap();
    let non_utf8 = parent.path().join(std::ffi::OsStr::from_bytes(b"bundle-\xff"));
    std::fs::create_dir(&non_utf8).unwrap();
    std::fs::write(non_utf8.join("manifest.toml"), VALID).unwrap();
    std::fs::write(non_utf8.join(parse(VALID).unwrap().file), b"x").unwrap();
    assert_eq!(
        ManifestData::from_dir(&non_utf8),
        Err(ManifestError::NonUtf8Path {
            path: non_utf8.canonicalize().unwrap()
        })
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_values_in_a_valid_manifest_never_panic(
        key in prop::sample::select(vec!["name", "id", "version", "file", "provides", "loader", "min_version"]),
        value in "[ -~]{0,40}",
    ) {
        let _ = parse(&with_line(key, &format!("{key} = {value:?}")));
    }
}
