//! One audit log line, as `audit verify` reads it. Property: whatever parses
//! is exactly canonical, so writing it back gives the same bytes (two
//! different byte strings can never be the same entry).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok((entry, _)) = keyrite::audit::Entry::parse_line(data) {
            let line = entry.to_line().expect("a parsed entry serialises");
            assert_eq!(line.as_bytes(), data, "a parsed line is not its own canonical form");
        }
    });
}
