//! One log entry: the event a caller records and the line it becomes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::canonical::to_canonical_string;
use crate::words::sha256_hex;

/// The line format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// `prev` of the first line.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Event names reserved for entries [`super::AuditLog`] writes itself, so a
/// verifier can trust their structure.
pub const EVENT_KEY_ANNOUNCED: &str = "audit-key-announced";
pub const EVENT_CHECKPOINT: &str = "checkpoint";
pub const EVENT_CEREMONY_CLOSED: &str = "ceremony-closed";
/// A ceremony stopped on a failure; its abort checkpoint follows when its
/// audit key existed.
pub const EVENT_CEREMONY_ABORTED: &str = "ceremony-aborted";

/// Substrings of `details` keys that suggest a secret. Matching is by
/// case-insensitive substring, so it errs towards refusing (`"spin"`
/// contains "pin"): a refused fact can be renamed, a logged PIN cannot be
/// unlogged.
pub const FORBIDDEN_DETAIL_KEYS: &[&str] =
    &["pin", "passphrase", "password", "secret", "share", "private_key", "mnemonic"];

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    Aborted,
}

/// A file or value an event consumed or produced, by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub name: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl Artifact {
    /// Names `bytes` by their SHA-256.
    pub fn of(name: impl Into<String>, bytes: &[u8]) -> Self {
        Artifact { name: name.into(), sha256: sha256_hex(bytes) }
    }
}

/// What a caller records; [`super::AuditLog::append`] adds `v`, `seq`, `ts`,
/// `ceremony_id` and `prev`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub step: String,
    pub role: Option<String>,
    pub actor: Option<String>,
    pub event: String,
    pub inputs: Vec<Artifact>,
    pub outputs: Vec<Artifact>,
    pub result: Outcome,
    pub details: Map<String, Value>,
}

impl Event {
    /// An event at `step` named `event` (kebab-case, e.g. "key-generated"),
    /// with result "ok" and nothing else yet.
    pub fn new(step: impl Into<String>, event: impl Into<String>) -> Self {
        Event {
            step: step.into(),
            role: None,
            actor: None,
            event: event.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            result: Outcome::Ok,
            details: Map::new(),
        }
    }

    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn input(mut self, artifact: Artifact) -> Self {
        self.inputs.push(artifact);
        self
    }

    pub fn output(mut self, artifact: Artifact) -> Self {
        self.outputs.push(artifact);
        self
    }

    pub fn result(mut self, result: Outcome) -> Self {
        self.result = result;
        self
    }

    /// Adds one non-secret fact to `details`.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// A log line as stored. Field order here is irrelevant: lines are
/// canonical JSON, keys sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub ceremony_id: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub event: String,
    pub inputs: Vec<Artifact>,
    pub outputs: Vec<Artifact>,
    pub result: Outcome,
    pub details: Map<String, Value>,
    pub prev: String,
}

impl Entry {
    /// The entry `event` becomes at a log's end: its place (`seq`, the
    /// previous line's hash), its time and the ceremony (or log) it belongs to.
    pub fn at(event: Event, seq: u64, ts: String, ceremony_id: String, prev: String) -> Entry {
        Entry {
            v: FORMAT_VERSION,
            seq,
            ts,
            ceremony_id,
            step: event.step,
            role: event.role,
            actor: event.actor,
            event: event.event,
            inputs: event.inputs,
            outputs: event.outputs,
            result: event.result,
            details: event.details,
            prev,
        }
    }

    /// The entry's canonical line, without newline.
    pub fn to_line(&self) -> Result<String, String> {
        let value = serde_json::to_value(self).map_err(|e| format!("cannot serialise entry: {e}"))?;
        to_canonical_string(&value).map_err(|e| e.0)
    }

    /// Parses a line (without newline), insisting that it is exactly the
    /// canonical form of a well-formed entry. Returns the parsed JSON too, for
    /// checks that need to remove a field and re-serialise.
    pub fn parse_line(line: &[u8]) -> Result<(Entry, Value), String> {
        let text = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8".to_string())?;
        let value: Value = serde_json::from_str(text).map_err(|e| format!("the line is not JSON: {e}"))?;
        let canonical = to_canonical_string(&value).map_err(|e| format!("the line has no canonical form: {e}"))?;
        if canonical != text {
            return Err("the line is JSON but not canonical JSON (key order, spacing, escaping or a duplicate key differ from what keyrite writes)".into());
        }
        if let Some(v) = value.get("v") {
            if v != &Value::from(FORMAT_VERSION) {
                return Err(format!("unknown format version {v}: this keyrite reads version {FORMAT_VERSION}"));
            }
        }
        // The one form serde accepts that keyrite never writes: an optional
        // field given as null (it reads as absent, so the line would not
        // round-trip). Checked on the value instead of serialising the entry
        // again, which would double the cost of verifying a long log.
        if ["role", "actor"].iter().any(|k| value.get(*k).is_some_and(Value::is_null)) {
            return Err("the line's fields are not in the form keyrite writes (e.g. an explicit null)".into());
        }
        let entry = Entry::deserialize(&value).map_err(|e| format!("the line is not a keyrite audit entry: {e}"))?;
        entry.check_fields()?;
        Ok((entry, value))
    }

    /// Field rules shared by writing and verifying.
    pub fn check_fields(&self) -> Result<(), String> {
        if self.v != FORMAT_VERSION {
            return Err(format!("unknown format version {}: this keyrite reads version {FORMAT_VERSION}", self.v));
        }
        check_timestamp(&self.ts)?;
        check_ceremony_id(&self.ceremony_id)?;
        check_text("step", &self.step, true)?;
        if let Some(role) = &self.role {
            check_text("role", role, true)?;
        }
        if let Some(actor) = &self.actor {
            check_text("actor", actor, true)?;
        }
        check_event_name(&self.event)?;
        for a in self.inputs.iter().chain(&self.outputs) {
            check_text("artifact name", &a.name, true)?;
            if !is_sha256_hex(&a.sha256) {
                return Err(format!("artifact {:?}: sha256 must be 64 lowercase hex digits", a.name));
            }
        }
        check_no_secrets(&self.details, "details")?;
        if !is_sha256_hex(&self.prev) {
            return Err("prev must be 64 lowercase hex digits".into());
        }
        Ok(())
    }
}

/// `ts` is UTC RFC 3339 to the second: `YYYY-MM-DDTHH:MM:SSZ`.
pub const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

fn check_timestamp(ts: &str) -> Result<(), String> {
    let parsed = time::PrimitiveDateTime::parse(ts, TS_FORMAT)
        .map_err(|_| format!("ts {ts:?} is not UTC RFC 3339 to the second (YYYY-MM-DDTHH:MM:SSZ)"))?;
    match parsed.format(TS_FORMAT) {
        Ok(again) if again == ts => Ok(()),
        _ => Err(format!("ts {ts:?} is not in canonical form")),
    }
}

/// Ceremony IDs become part of the checkpoint origin line, which must hold no
/// spaces or `+`; a tight alphabet also keeps them safe in file names.
pub fn check_ceremony_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!("ceremony id {id:?} must be 1 to 100 characters of A-Z a-z 0-9 - _ . :"))
    }
}

fn check_text(what: &str, s: &str, required: bool) -> Result<(), String> {
    if required && s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > 1000 {
        return Err(format!("{what} is longer than 1000 bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} {s:?} contains a control character"));
    }
    Ok(())
}

/// Short kebab-case names (BR 5.4.1 event types read like "key-generated").
pub fn check_event_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!("event name {name:?} must be short kebab-case, like \"key-generated\""))
    }
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses details that look like they hold a secret, at any depth.
pub fn check_no_secrets(map: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (key, value) in map {
        let lower = key.to_lowercase();
        if let Some(word) = FORBIDDEN_DETAIL_KEYS.iter().find(|w| lower.contains(*w)) {
            return Err(format!(
                "{at}.{key}: a key containing {word:?} may hold a secret, which must never enter the audit log; record its SHA-256 as an artifact or rename a harmless fact"
            ));
        }
        check_value_not_secret(value, &format!("{at}.{key}"))?;
    }
    Ok(())
}

fn check_value_not_secret(value: &Value, at: &str) -> Result<(), String> {
    match value {
        Value::Object(m) => check_no_secrets(m, at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_value_not_secret(v, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Value::String(s) if s.contains("PRIVATE KEY") => {
            Err(format!("{at}: the value looks like a PEM private key, which must never enter the audit log"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            v: 1,
            seq: 0,
            ts: "2025-03-01T10:00:00Z".into(),
            ceremony_id: "root-2025".into(),
            step: "1".into(),
            role: None,
            actor: Some("Alice".into()),
            event: "ceremony-started".into(),
            inputs: vec![Artifact::of("ceremony.toml", b"x")],
            outputs: vec![],
            result: Outcome::Ok,
            details: Map::new(),
            prev: GENESIS_PREV.into(),
        }
    }

    #[test]
    fn an_entry_line_is_canonical_and_round_trips() {
        let line = sample().to_line().expect("line");
        assert!(line.starts_with(r#"{"actor":"Alice","ceremony_id":"root-2025","details":{},"event":"ceremony-started","inputs":[{"name":"ceremony.toml","sha256":"2d711642"#));
        assert!(line.ends_with(r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","result":"ok","seq":0,"step":"1","ts":"2025-03-01T10:00:00Z","v":1}"#));
        let (back, _) = Entry::parse_line(line.as_bytes()).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn non_canonical_lines_are_refused() {
        let line = sample().to_line().expect("line");
        let spaced = line.replacen(':', ": ", 1);
        assert!(Entry::parse_line(spaced.as_bytes()).expect_err("spacing").contains("not canonical"));
        // Canonical JSON, but an explicit null where keyrite omits the field.
        let null_role = line.replacen("\"seq\"", "\"role\":null,\"seq\"", 1);
        assert!(Entry::parse_line(null_role.as_bytes()).expect_err("null role").contains("explicit null"));
        let v2 = line.replace("\"v\":1}", "\"v\":2}");
        assert!(Entry::parse_line(v2.as_bytes()).expect_err("v2").contains("version"));
    }

    #[test]
    fn secret_looking_details_are_refused_at_any_depth() {
        let mut m = Map::new();
        m.insert("operator_PIN".into(), Value::from("1234"));
        assert!(check_no_secrets(&m, "details").is_err());
        let mut inner = Map::new();
        inner.insert("Mnemonic".into(), Value::from("x"));
        let mut m = Map::new();
        m.insert("custody".into(), Value::Array(vec![Value::Object(inner)]));
        assert!(check_no_secrets(&m, "details").is_err());
        let mut m = Map::new();
        m.insert("threshold".into(), Value::from(3));
        m.insert("pem".into(), Value::from("-----BEGIN PRIVATE KEY-----"));
        assert!(check_no_secrets(&m, "details").is_err());
        let mut m = Map::new();
        m.insert("threshold".into(), Value::from(3));
        assert!(check_no_secrets(&m, "details").is_ok());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_event_name("key-generated").is_ok());
        assert!(check_event_name("Key-Generated").is_err());
        assert!(check_event_name("key--generated").is_err());
        assert!(check_ceremony_id("root-2025.1").is_ok());
        assert!(check_ceremony_id("root 2025").is_err());
        assert!(check_ceremony_id("a+b").is_err());
    }
}
