//! The values acme-serve's options and files share: durations, address
//! ranges, fractions. Parsing only; what a value means is decided where it
//! is used.

use std::net::IpAddr;

/// Refuses a start fraction outside (0, 1): 0 would renew at issuance, 1
/// at expiry.
pub fn check_fraction(f: f64) -> Result<(), String> {
    if f.is_finite() && f > 0.0 && f < 1.0 {
        Ok(())
    } else {
        Err(format!("the ARI window start must be a fraction strictly between 0 and 1, not {f}"))
    }
}

/// Parses `0.6667` or `2/3`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let f = match s.split_once('/') {
        Some((n, d)) => {
            let n: f64 = n.trim().parse().map_err(|_| format!("{s:?} is not a fraction"))?;
            let d: f64 = d.trim().parse().map_err(|_| format!("{s:?} is not a fraction"))?;
            n / d
        }
        None => s.trim().parse().map_err(|_| format!("{s:?} is not a fraction"))?,
    };
    check_fraction(f)?;
    Ok(f)
}

/// Seconds in `30s`, `15m`, `3h` or `7d` (the durations of acme-serve's
/// options and of the rate limits file).
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 15m, 3h or 7d");
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)
}

/// Parses `10.0.0.0/8`, or a single address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{text:?} is not an address range like 10.0.0.0/8");
    let (addr, len) = text.split_once('/').map_or((text, None), |(a, l)| (a, Some(l)));
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.map_or(Ok(max), |l| l.parse::<u8>().map_err(|_| bad()))?;
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

/// Whether `ip` lies in `net`/`len` (same family only).
pub fn ip_in(ip: &IpAddr, net: &IpAddr, len: u8) -> bool {
    fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
        (0..usize::from(len)).all(|i| {
            let bit = |x: &[u8]| x.get(i / 8).map(|byte| byte >> (7 - i % 8) & 1);
            bit(a) == bit(b)
        })
    }
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => len <= 32 && prefix_eq(&a.octets(), &b.octets(), len),
        (IpAddr::V6(a), IpAddr::V6(b)) => len <= 128 && prefix_eq(&a.octets(), &b.octets(), len),
        _ => false,
    }
}
