//! `scripts/ensure-deps.sh` checks what the build needs, not only that binaries exist:
//! a protoc that cannot find the well-known `.proto` includes is caught and named.
//! Runs the script with `--dry-run`, so nothing is installed.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// One test at a time: a binary copied by one thread cannot be run while another
/// thread's fork still holds the copy open for writing ("Text file busy").
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-deps.sh")
}

/// The path of a tool on PATH; the test command installs protoc before the tests run.
fn which(tool: &str) -> PathBuf {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{tool} is not on PATH: run scripts/ensure-deps.sh first (scripts/test.sh does)"
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Runs the script in dry-run mode with `vars` set on top of a clean environment.
fn dry_run(vars: &[(&str, &Path)]) -> (i32, String) {
    let mut command = Command::new(which("bash"));
    command
        .arg(script())
        .arg("--dry-run")
        .env_remove("PROTOC")
        .env_remove("PROTOC_INCLUDE")
        .env("ETCD_BIN", testkit::etcd_binary());
    for (name, value) in vars {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
        ..
    } = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().expect("the script exited by itself"), text)
}

/// A real protoc copied away from the includes it finds next to its installed place.
fn protoc_without_includes(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let copy = bin.join("protoc");
    std::fs::copy(which("protoc"), &copy).unwrap();
    let probe = dir.join("probe.proto");
    std::fs::write(
        &probe,
        "syntax = \"proto3\";\nimport \"google/protobuf/descriptor.proto\";\n",
    )
    .unwrap();
    let direct = Command::new(&copy)
        .arg("-I")
        .arg(dir)
        .arg("--descriptor_set_out=/dev/null")
        .arg(&probe)
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "fixture: the copied protoc still finds the includes"
    );
    copy
}

/// The directory holding `google/protobuf/descriptor.proto` for the installed protoc.
fn real_includes() -> PathBuf {
    let protoc = which("protoc");
    let candidates = [
        protoc.parent().unwrap().join("../include"),
        PathBuf::from("/usr/include"),
        PathBuf::from("/usr/local/include"),
    ];
    candidates
        .into_iter()
        .find(|dir| dir.join("google/protobuf/descriptor.proto").is_file())
        .expect("the installed protoc's includes are somewhere standard")
}

#[test]
fn this_machine_has_everything() {
    let _serial = serial();
    let (code, text) = dry_run(&[]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_protoc_named_by_the_user_without_includes_is_an_error_saying_what_to_set() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let protoc = protoc_without_includes(dir.path());
    let (code, text) = dry_run(&[("PROTOC", &protoc)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("google/protobuf/descriptor.proto"), "{text}");
    assert!(text.contains("PROTOC_INCLUDE"), "{text}");
    assert!(
        text.contains("File not found") || text.contains("not found"),
        "protoc's own words are passed on: {text}"
    );
}

#[test]
fn protoc_include_set_by_the_user_is_honoured() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let protoc = protoc_without_includes(dir.path());
    let includes = real_includes();
    let (code, text) = dry_run(&[("PROTOC", &protoc), ("PROTOC_INCLUDE", &includes)]);
    assert_eq!(code, 0, "{text}");
}

/// A PATH holding the tools the script uses, plus `extra` (name, target) links.
fn path_with(dir: &Path, extra: &[(&str, &Path)]) -> PathBuf {
    let bin = dir.join("path");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["mktemp", "rm", "head", "id", "python3", "printf"] {
        symlink(which(tool), bin.join(tool)).unwrap();
    }
    for (name, target) in extra {
        symlink(target, bin.join(name)).unwrap();
    }
    bin
}

#[test]
fn a_protoc_on_path_without_includes_asks_for_libprotobuf_dev() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let protoc = protoc_without_includes(dir.path());
    let path = path_with(dir.path(), &[("protoc", &protoc)]);
    let (code, text) = dry_run(&[("PATH", &path)]);
    assert_eq!(code, 3, "{text}");
    assert_eq!(text.trim(), "would install: libprotobuf-dev");
}

#[test]
fn no_protoc_at_all_asks_for_the_compiler_and_its_includes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = path_with(dir.path(), &[]);
    let (code, text) = dry_run(&[("PATH", &path)]);
    assert_eq!(code, 3, "{text}");
    assert_eq!(
        text.trim(),
        "would install: protobuf-compiler libprotobuf-dev"
    );
}

#[test]
fn an_etcd_bin_that_does_not_run_is_named() {
    let _serial = serial();
    let (code, text) = dry_run(&[("ETCD_BIN", Path::new("/nonexistent/etcd"))]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ETCD_BIN=/nonexistent/etcd"), "{text}");
}
