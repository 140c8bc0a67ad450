//! Cross-check against the independent reference implementation, the PyPI
//! package `shamir-mnemonic` (trezor/python-shamir-mnemonic): shares made
//! here must recombine there and the other way round.
//!
//! The package is a hard requirement, as in CI: without it these tests fail
//! and say how to install it, since a skipped interoperability check looks
//! the same as a passing one in a summary.
//!
//! Mnemonics and secrets travel on stdin, never in argv (which other users
//! of the machine can read in the process table).

use std::io::Write;
use std::process::{Command, Stdio};

use keyrite::hsm::soft::SystemRng;
use keyrite::secret::Secret;
use keyrite::shares::{combine_mnemonics, reshare, split, Share};
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import json, sys
try:
    import shamir_mnemonic
except ImportError:
    sys.stderr.write("MISSING-SHAMIR-MNEMONIC\n")
    sys.exit(3)
req = json.load(sys.stdin)
if req["op"] == "combine":
    secret = shamir_mnemonic.combine_mnemonics(req["mnemonics"], req["passphrase"].encode())
    json.dump({"secret": secret.hex()}, sys.stdout)
elif req["op"] == "generate":
    groups = shamir_mnemonic.generate_mnemonics(
        req["group_threshold"],
        [tuple(g) for g in req["groups"]],
        bytes.fromhex(req["secret"]),
        req["passphrase"].encode(),
        extendable=req["extendable"],
        iteration_exponent=req["exponent"],
    )
    json.dump({"groups": groups}, sys.stdout)
"#;

const INSTALL_HINT: &str =
    "the cross-check needs Python 3 with the reference implementation: run `pip install shamir-mnemonic`";

/// Runs the helper script with `request` on stdin and returns its JSON answer.
fn python(request: &Value) -> Value {
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = Command::new(&interpreter)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {interpreter} ({e}): {INSTALL_HINT}"));
    // A write error means python already exited; its stderr says why.
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(request.to_string().as_bytes()));
    let out = child.wait_with_output().expect("wait for python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("MISSING-SHAMIR-MNEMONIC") {
        panic!("the Python package shamir_mnemonic is not installed: {INSTALL_HINT}");
    }
    assert!(out.status.success(), "python failed ({}): {stderr}", out.status);
    assert!(matches!(written, Some(Ok(()))), "could not send the request to python: {written:?}");
    serde_json::from_slice(&out.stdout).expect("python answers JSON")
}

fn python_combine(mnemonics: &[Secret], passphrase: &str) -> String {
    let list: Vec<&str> = mnemonics.iter().map(|m| m.expose_str().expect("ASCII words")).collect();
    let answer = python(&json!({"op": "combine", "mnemonics": list, "passphrase": passphrase}));
    answer["secret"].as_str().expect("secret hex").to_string()
}

fn python_generate(
    group_threshold: u8,
    groups: &[(u8, u8)],
    secret: &[u8],
    passphrase: &str,
    extendable: bool,
    exponent: u8,
) -> Vec<Vec<String>> {
    let answer = python(&json!({
        "op": "generate",
        "group_threshold": group_threshold,
        "groups": groups,
        "secret": hex::encode(secret),
        "passphrase": passphrase,
        "extendable": extendable,
        "exponent": exponent,
    }));
    serde_json::from_value(answer["groups"].clone()).expect("groups of mnemonics")
}

fn random_secret(len: usize) -> Secret {
    use keyrite::hsm::RandomSource;
    Secret::new(SystemRng.random_bytes(len).expect("random"))
}

#[test]
fn keyrite_shares_recombine_in_python() {
    for (t, n, len, passphrase, exponent, quorum) in [
        (1u8, 1u8, 16usize, "", 0u8, vec![0usize]),
        (2, 3, 16, "TREZOR", 0, vec![2, 0]),
        (3, 5, 32, "", 1, vec![4, 1, 3]),
        (5, 16, 32, "a longer passphrase, with punctuation!", 0, vec![15, 3, 7, 0, 9]),
        (4, 7, 20, "x", 2, vec![6, 5, 4, 3]),
    ] {
        let ms = random_secret(len);
        let shares = split(&ms, t, n, passphrase.as_bytes(), exponent, &SystemRng).expect("split");
        let mnemonics: Vec<Secret> = quorum.iter().map(|&i| shares[i].to_mnemonic()).collect();
        assert_eq!(python_combine(&mnemonics, passphrase), hex::encode(ms.expose()), "{t}-of-{n}");
    }
}

#[test]
fn reshared_keyrite_shares_recombine_in_python() {
    let ms = random_secret(16);
    let old = split(&ms, 2, 3, b"pp", 0, &SystemRng).expect("split");
    let new = reshare(&old[1..], b"pp", 3, 4, &SystemRng).expect("reshare");
    let mnemonics: Vec<Secret> = new[1..].iter().map(Share::to_mnemonic).collect();
    assert_eq!(python_combine(&mnemonics, "pp"), hex::encode(ms.expose()));
}

#[test]
fn python_shares_recombine_in_keyrite() {
    for (extendable, exponent, len, passphrase) in [(true, 0u8, 16usize, ""), (false, 1, 32, "TREZOR")] {
        let ms = random_secret(len);
        let groups = python_generate(1, &[(3, 5)], ms.expose(), passphrase, extendable, exponent);
        let members = &groups[0];
        assert_eq!(members.len(), 5);
        let quorum = [members[4].as_str(), members[0].as_str(), members[2].as_str()];
        let got = combine_mnemonics(&quorum, passphrase.as_bytes()).expect("combine python shares");
        assert!(got.ct_eq(&ms), "extendable {extendable}");
        // The parsed shares re-encode to the very same words.
        for m in members {
            assert_eq!(Share::parse(m).expect("parse").to_mnemonic().expose_str(), Some(m.as_str()));
        }
    }
}

#[test]
fn python_group_shares_recombine_in_keyrite() {
    let ms = random_secret(32);
    let groups = python_generate(2, &[(2, 3), (1, 1), (3, 5)], ms.expose(), "TREZOR", true, 0);
    // Groups 1 and 3: two of the first group's three, three of the third's five.
    let quorum = [
        groups[2][4].as_str(),
        groups[0][1].as_str(),
        groups[2][0].as_str(),
        groups[0][2].as_str(),
        groups[2][3].as_str(),
    ];
    assert!(combine_mnemonics(&quorum, b"TREZOR").expect("combine groups").ct_eq(&ms));
    // Groups 2 and 3: the single-member group counts as a whole group.
    let quorum = [groups[1][0].as_str(), groups[2][1].as_str(), groups[2][2].as_str(), groups[2][3].as_str()];
    assert!(combine_mnemonics(&quorum, b"TREZOR").expect("combine groups").ct_eq(&ms));
    // One group alone is not enough.
    let err = combine_mnemonics(&[groups[1][0].as_str()], b"TREZOR").expect_err("must fail");
    assert!(err.to_string().starts_with("too few groups"), "{err}");
}
