//! `aigate provenance …` through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn aigate(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigate"));
    c.env_remove("AIGATE_CONFIG")
        .env("RUST_LOG", "off")
        .arg("provenance");
    c.env("AIGATE_CONFIG", config);
    c
}

/// The shipped policy with its state in `state`.
fn config_in(dir: &Path) -> std::path::PathBuf {
    let state = dir.join("state");
    let text = aigate::config::DEFAULT_CONFIG.replace(
        "state_dir = \"./aigate-data\"",
        &format!("state_dir = {:?}", state.display().to_string()),
    );
    let path = dir.join("aigate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn baseline_creates_the_key_and_grows_the_stop_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let code = dir.path().join("vendored");
    std::fs::create_dir_all(code.join("target")).unwrap();
    std::fs::write(code.join("lib.rs"), include_str!("common.rs")).unwrap();
    // Ignored by .gitignore, and a binary: neither is read.
    std::fs::write(code.join(".gitignore"), "target/\n").unwrap();
    std::fs::write(code.join("target/gen.rs"), include_str!("cli.rs")).unwrap();
    std::fs::write(code.join("blob.bin"), b"\x00\x01binary").unwrap();
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // lib.rs is read; target/ is ignored, .gitignore is hidden, the binary is skipped.
    assert!(stdout.contains(" from 1 file ("), "{stdout}");
    assert!(stdout.contains("1 skipped"), "{stdout}");
    let state = dir.path().join("state/provenance");
    let key = std::fs::read_to_string(state.join("key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    let first = std::fs::metadata(state.join("stoplist")).unwrap().len();
    assert!(first > 8 + 8 * 100, "{first}");
    // Again with more code: the list grows, the key stays.
    std::fs::write(code.join("more.rs"), include_str!("data_path.rs")).unwrap();
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    assert!(out.status.success());
    assert!(std::fs::metadata(state.join("stoplist")).unwrap().len() > first);
    assert_eq!(std::fs::read_to_string(state.join("key")).unwrap(), key);
}

#[test]
fn baseline_of_a_missing_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = aigate(&config)
        .args(["baseline", "/nonexistent/aigate-code"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/aigate-code: no such file or directory"),
        "{stderr}"
    );
}
