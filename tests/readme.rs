//! README.md's first command is the one a newcomer types first, and often
//! twice: it must run a whole rehearsal every time, not only the first.

mod common;

use common::{keyrite, stderr, stdout};

/// The commands of README.md's first `sh` block.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let block = readme.split("```sh\n").nth(1).expect("README.md has a sh block").split("```").next().unwrap_or("");
    block.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn the_readmes_rehearsal_command_runs_a_whole_rehearsal_each_time_it_is_run() {
    let commands = readme_commands();
    let first = commands.first().expect("a first command");
    let args = first.strip_prefix("cargo run --release -- ").expect("the first command runs keyrite");
    let args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"rehearse"), "{first}");
    let tmp = tempfile::tempdir().expect("TMPDIR");
    let mut dirs = Vec::new();
    for run in 1..=2 {
        let out = keyrite().env("TMPDIR", tmp.path()).args(&args).output().expect("keyrite rehearse");
        assert!(out.status.success(), "run {run} of `{first}` failed:\n{}{}", stdout(&out), stderr(&out));
        let text = stdout(&out);
        let dir = text
            .lines()
            .find_map(|l| l.strip_prefix("Rehearsal directory: "))
            .unwrap_or_else(|| panic!("run {run} did not say where it rehearsed:\n{text}"))
            .to_string();
        assert!(dir.starts_with(tmp.path().to_str().expect("utf-8")), "{dir} is not under TMPDIR");
        assert!(std::path::Path::new(&dir).join("rehearsal.json").is_file(), "run {run}: no rehearsal.json in {dir}");
        dirs.push(dir);
    }
    assert_ne!(dirs[0], dirs[1], "the second run reused the first run's directory");
}

#[test]
fn the_readmes_test_command_installs_what_is_missing_before_testing() {
    let commands = readme_commands();
    let test = commands.get(1).expect("a second command");
    assert_eq!(test, "tests/install-deps.sh && cargo test --locked");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).expect(".ci/run");
    assert!(ci.contains("grep -m1 -E '^[^#]*cargo test' README.md"), ".ci/run must run README.md's test command");
    // The script is idempotent: on this machine everything is present, so
    // it installs nothing and says so.
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/install-deps.sh"))
        .output()
        .expect("tests/install-deps.sh");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("installing:"), "a second run installed something: {}", stdout(&out));
    assert!(stdout(&out).contains("test dependencies: present"));
}
