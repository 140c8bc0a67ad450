//! A share card file as `shares verify` and the restore ceremony read it:
//! the words are picked out of the card's layout, then parsed. Nothing may
//! panic, whatever the file holds.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let card = keyrite::secret::Secret::new(data.to_vec());
        let words = keyrite::shares::words_from_card(&card);
        if let Some(text) = words.expose_str() {
            let _ = keyrite::shares::Share::parse(text);
        }
    });
}
