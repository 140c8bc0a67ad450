//! One SLIP-0039 mnemonic as a custodian types it. Property: a share that
//! parses spells itself back as the same words (case and spacing aside),
//! and those words parse to the same share.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        if let Ok(share) = keyrite::shares::Share::parse(text) {
            let again = share.to_mnemonic();
            let words = again.expose_str().expect("a mnemonic is text");
            let typed: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
            assert_eq!(words.split(' ').collect::<Vec<_>>(), typed.iter().map(String::as_str).collect::<Vec<_>>());
            let reparsed = keyrite::shares::Share::parse(words).expect("its own words parse");
            assert_eq!(reparsed.value().expose(), share.value().expose());
            assert_eq!(reparsed.identifier(), share.identifier());
            assert_eq!(reparsed.member_index(), share.member_index());
        }
    });
}
