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

// ------------------------------------------------------------------ the intermediate host and its root

use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::profile::{IssueRequest, Issued, IssuerRef, Profile};
use time::OffsetDateTime;

/// A shipped template, by file name.
pub fn shipped_template(name: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name)).expect("template")
}

pub fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut s).expect("rng");
    s
}

/// The offline root, made the way the root ceremony makes it (but with a
/// software key, in memory), and its signing of intermediate requests.
pub struct OfflineRoot {
    pub key: SoftKey,
    pub cert: Issued,
}

impl OfflineRoot {
    /// A root valid from `not_before` (`templates/root-ca.toml`).
    pub fn new(not_before: OffsetDateTime) -> OfflineRoot {
        let key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("root key");
        let t = shipped_template("root-ca.toml");
        let not_before = not_before.replace_nanosecond(0).expect("whole second");
        let cert = keyrite::profile::issue(
            &IssueRequest {
                profile: &t,
                subject: None,
                subject_spki: key.spki_der(),
                sans: vec![],
                serial: random_serial(),
                not_before,
                not_after: t.not_after_for(not_before),
                issuer: IssuerRef::SelfSigned,
            },
            &key,
        )
        .expect("root");
        OfflineRoot { key, cert }
    }

    /// The offline ceremony's signing, as the library does it: the CSR is
    /// parsed and checked against `template`, then issued (for
    /// `spki_override` instead of the CSR's key when a test forges one).
    pub fn sign(
        &self,
        csr_pem: &[u8],
        template: &Profile,
        spki_override: Option<&[u8]>,
        not_before: OffsetDateTime,
    ) -> Issued {
        let csr = keyrite::transfer::csr::parse_csr(csr_pem).expect("csr");
        csr.check_against(template).expect("csr fits the template");
        let not_before = not_before.replace_nanosecond(0).expect("whole second");
        keyrite::profile::issue(
            &IssueRequest {
                profile: template,
                subject: Some(csr.subject().clone()),
                subject_spki: spki_override.unwrap_or(csr.spki_der()),
                sans: vec![],
                serial: random_serial(),
                not_before,
                not_after: template.not_after_for(not_before),
                issuer: IssuerRef::Certificate { der: &self.cert.der },
            },
            &self.key,
        )
        .expect("intermediate")
    }

    /// Writes the response bundle the offline side hands back.
    pub fn response(&self, dir: &Path, int: &Issued) {
        use keyrite::transfer::{BundleKind, BundleWriter};
        let mut w = BundleWriter::create(dir).expect("bundle");
        w.add("intermediate.pem", int.pem.as_bytes()).expect("int");
        w.add("chain.pem", format!("{}{}", int.pem, self.cert.pem).as_bytes()).expect("chain");
        w.add("root.pem", self.cert.pem.as_bytes()).expect("root");
        w.finish(BundleKind::IntermediateResponse, "root ceremony 2026-01", Default::default()).expect("finish");
    }
}

/// An intermediate host: a SoftHSM token of its own, an environment file
/// naming it (`env.toml`, PIN from an environment variable), and the
/// working directory the keyrite binary runs in. The binary makes the
/// request (the issuing key and its audit key are born on the token) and
/// installs the response into `issuer/`.
pub struct IntermediateHost {
    pub hsm: SoftHsm,
    pub work: tempfile::TempDir,
    pub token: String,
    pub pin_var: &'static str,
    pub pin: &'static str,
}

impl IntermediateHost {
    /// A fresh token `token` whose user PIN is `pin`, read by keyrite from
    /// the environment variable `pin_var`.
    pub fn new(token: &str, pin_var: &'static str, pin: &'static str) -> IntermediateHost {
        let hsm = SoftHsm::new();
        hsm.init_token(token, "host-so-pin-0815", pin);
        let work = tempfile::tempdir().expect("work");
        let env = format!(
            "output_dir = \"issuer\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token}\"\npin = {{ env = \"{pin_var}\" }}\n",
            hsm.module.display()
        );
        std::fs::write(work.path().join("env.toml"), env).expect("env");
        IntermediateHost { hsm, work, token: token.to_string(), pin_var, pin }
    }

    /// A host whose intermediate (key `label`, subject `cn`) is requested,
    /// signed by a fresh root with `template`, and installed into `issuer/`.
    pub fn installed(
        token: &str,
        pin_var: &'static str,
        pin: &'static str,
        label: &str,
        cn: &str,
        template: &Profile,
    ) -> (IntermediateHost, OfflineRoot) {
        let host = IntermediateHost::new(token, pin_var, pin);
        let out =
            host.request(label, &["--subject-cn", cn, "--subject-o", "keyrite Test", "--requester", "ops@test-host"]);
        assert!(out.status.success(), "intermediate request: {}{}", stdout(&out), stderr(&out));
        let root = OfflineRoot::new(OffsetDateTime::now_utc() - time::Duration::hours(1));
        let int = root.sign(&host.csr(), template, None, OffsetDateTime::now_utc() - time::Duration::hours(1));
        root.response(&host.path("usb-response"), &int);
        let out = host.install("usb-response", &root.cert.fingerprint.hex);
        assert!(out.status.success(), "intermediate install: {}{}", stdout(&out), stderr(&out));
        (host, root)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    /// The keyrite binary in the host's directory, with the token and PIN.
    pub fn keyrite(&self) -> Command {
        let mut c = keyrite();
        c.current_dir(self.work.path()).env("SOFTHSM2_CONF", &self.hsm.conf).env(self.pin_var, self.pin);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.keyrite().args(args).output().expect("run keyrite")
    }

    /// `keyrite intermediate request` for key `label` into `usb-request`,
    /// with the subject and requester arguments in `extra`.
    pub fn request(&self, label: &str, extra: &[&str]) -> Output {
        let mut args = vec!["intermediate", "request", "--env", "env.toml", "--out", "usb-request", "--label", label];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `keyrite intermediate install` of bundle `response`, pinning the root.
    pub fn install(&self, response: &str, root_sha256: &str) -> Output {
        self.run(&[
            "intermediate",
            "install",
            response,
            "--env",
            "env.toml",
            "--root-sha256",
            root_sha256,
            "--out",
            "issuer",
        ])
    }

    pub fn csr(&self) -> Vec<u8> {
        std::fs::read(self.path("usb-request/csr.pem")).expect("csr.pem")
    }

    pub fn root_pem(&self) -> PathBuf {
        self.path("issuer/root.pem")
    }

    pub fn intermediate_pem(&self) -> PathBuf {
        self.path("issuer/intermediate.pem")
    }

    /// The audit key's SPKI SHA-256, as `issuer.toml` records it (what an
    /// auditor pins).
    pub fn audit_key_sha256(&self) -> String {
        let text = std::fs::read_to_string(self.path("issuer/issuer.toml")).expect("issuer.toml");
        let v: toml::Value = toml::from_str(&text).expect("toml");
        v["audit_key_sha256"].as_str().expect("issuer.toml names the audit key").to_string()
    }
}
