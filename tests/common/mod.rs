//! Test harness: a real SoftHSM token directory per test, the real keyrite
//! binary, and the real openssl and pkcs11-tool to check what it makes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM module; fails the test (never skips) when it is missing.
pub fn softhsm_module() -> PathBuf {
    MODULE_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("SoftHSM is not installed: apt-get install softhsm2 opensc (tests need a real token)")
    })
}

/// Checks a command-line tool is installed, failing with what to install.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success());
    assert!(matches!(found, Ok(true)), "{tool} is not installed: apt-get install {package}");
}

/// A SoftHSM token directory of its own, so tests never share a token.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
}

impl SoftHsm {
    pub fn new() -> Self {
        let module = softhsm_module();
        require_tool("softhsm2-util", "softhsm2");
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("tokens dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
        )
        .expect("conf");
        SoftHsm { dir, conf, module }
    }

    /// Initialises a token. The PINs are throwaway test values; softhsm2-util
    /// only takes them on argv, which is acceptable for test tokens alone.
    pub fn init_token(&self, label: &str, so_pin: &str, user_pin: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin])
            .output()
            .expect("softhsm2-util");
        assert!(out.status.success(), "init token: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs pkcs11-tool against this token directory.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        require_tool("pkcs11-tool", "opensc");
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .arg("--module")
            .arg(&self.module)
            .args(args)
            .output()
            .expect("pkcs11-tool")
    }
}

/// The keyrite binary built for these tests.
pub fn keyrite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyrite"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `openssl` with arguments, returning its output.
pub fn openssl(args: &[&str]) -> Output {
    require_tool("openssl", "openssl");
    Command::new("openssl").args(args).output().expect("openssl")
}

/// Copies the repository's ceremony and template files into `dir`, keeping
/// their relative layout, so a test can change them without touching the repo.
pub fn copy_plan_files(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["ceremonies", "templates"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(root.join(sub)).expect("read repo dir") {
            let entry = entry.expect("entry");
            if entry.path().is_file() {
                std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name())).expect("copy");
            }
        }
    }
}

/// Lists a directory's entries (names), sorted: "nothing written" checks.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A path as the `&str` a command's argument wants (test paths are UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The note SHA-256 (hex) of the last final or abort checkpoint a ceremony
/// printed: what the witnesses copy into the paper log, and what a later
/// ceremony or `keyrite audit verify --checkpoint` is given back.
pub fn paper_checkpoint(transcript: &str) -> String {
    let at = transcript.rfind("audit checkpoint").expect("the ceremony printed a checkpoint");
    let rest = &transcript[at..];
    let note = rest.find("note SHA-256 ").expect("note SHA-256 printed") + "note SHA-256 ".len();
    rest[note..].split_whitespace().next().expect("hex").to_string()
}

/// Rewrites the log at `path` entry by entry under `key`, a fresh audit key
/// the forger holds: every announcement names it instead, every checkpoint
/// is signed again, every other entry keeps its fields (the share
/// commitments among them). The result verifies on its own; only what the
/// paper or the key store pinned tells it from the original.
pub fn resign_log(path: &Path, key: &keyrite::hsm::soft::SoftKey) {
    use keyrite::audit::{entry::Entry, succession::QuorumKey, AuditLog, Event};
    use keyrite::hsm::Signer;
    let text = std::fs::read_to_string(path).expect("log");
    let entries: Vec<Entry> = text.lines().map(|l| Entry::parse_line(l.as_bytes()).expect("entry").0).collect();
    std::fs::remove_file(path).expect("rm");
    let mut log = AuditLog::create(path, &entries[0].ceremony_id).expect("create");
    let mut name = String::new();
    for e in entries {
        let mut log_as = |id: &str| {
            if log.ceremony_id() != id {
                // One writer per ceremony id, as keyrite writes it.
                let (next, _) =
                    AuditLog::open_append(path, id, &keyrite::audit::VerifyOptions::unpinned()).expect("reopen");
                log = next;
            }
        };
        log_as(&e.ceremony_id);
        match e.event.as_str() {
            "audit-key-announced" => {
                name = e.details["name"].as_str().expect("name").to_string();
                log.announce_key(&name, key.spki_der(), key.signature_algorithm()).expect("announce");
            }
            "checkpoint" => {
                log.checkpoint(key, &name).expect("checkpoint");
            }
            "audit-quorum-key-announced" => {
                log.announce_quorum_key(&QuorumKey::from_entry(&e).expect("quorum")).expect("quorum");
            }
            "audit-key-succession" => {}
            _ => {
                let mut event = Event::new(e.step, e.event).result(e.result);
                event.role = e.role;
                event.actor = e.actor;
                event.inputs = e.inputs;
                event.outputs = e.outputs;
                event.details = e.details;
                log.append(event).expect("append");
            }
        }
    }
}

/// The plan hash's read-back words, as `keyrite ceremony print` shows them
/// to the witness; `input_dir` holds the files the plan reads (a request
/// bundle, a restore's inputs), which the plan hash covers.
pub fn plan_words(plan: &Path, input_dir: Option<&Path>) -> String {
    let plan = keyrite::config::Plan::load(plan).expect("plan");
    let digest = keyrite::ceremony::inputs::plan_digest(&plan, input_dir).expect("plan digest");
    digest.fingerprint().read_back_words()
}

/// A read-back that agrees with `words` (the value on screen) on its first
/// `same` words, each 10 bits, and differs in every word after: what an
/// insider who ground a second value to match a prefix would have printed.
pub fn near_miss(words: &str, same: usize) -> String {
    words
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i < same {
                w
            } else {
                keyrite::words::wordlist()[(usize::from(keyrite::words::index_of(w).expect("a list word")) + 1) % 1024]
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `Plan SHA-256` and `Plan read-back` rows of a printed script.
pub fn printed_row(script: &str, row: &str) -> String {
    let prefix = format!("| {row} | ");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.trim_end_matches(" |").to_string())
        .unwrap_or_else(|| panic!("no {row:?} row in the printed script:\n{script}"))
}

/// Runs `keyrite ceremony print` in `dir`.
pub fn print_script(dir: &Path, args: &[&str]) -> Output {
    keyrite().current_dir(dir).args(["ceremony", "print"]).args(args).output().expect("keyrite")
}
