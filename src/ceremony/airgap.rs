//! The air-gap guard: a ceremony laptop has no network.
//!
//! Linux lists interfaces in `/sys/class/net`; an interface counts as up when
//! its `IFF_UP` flag is set, whatever its carrier, because a cable can be
//! plugged in mid-ceremony. Loopback is ignored.

use std::fs;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// Names of the non-loopback interfaces that are up, sorted.
pub fn interfaces_up() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut up = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let flags = fs::read_to_string(entry.path().join("flags"))
            .ok()
            .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        if flags & IFF_UP != 0 && flags & IFF_LOOPBACK == 0 {
            up.push(name);
        }
    }
    up.sort();
    up
}
