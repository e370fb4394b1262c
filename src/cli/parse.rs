//! Value parsers and address rules behind the flags: durations, byte sizes, locality tiers,
//! the `--hot` metric, and how listen flags become bind and advertised addresses.

use std::net::SocketAddr;
use std::time::Duration;

use crate::services::load::LoadMetric;

/// Parses `300ms`, `30s`, `5m`, `2h`, `7d` (and plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 30s, 5m, 168h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {text:?} (use ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a duration that must not be zero (a deadline of zero would close every connection).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("invalid timeout {:?}: must be more than zero", text.trim()));
    }
    Ok(duration)
}

/// Parses a byte size: `65536`, `64KiB`, `512MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("invalid size {text:?} (examples: 65536, 64KiB, 512MiB)"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("invalid size unit {unit:?} in {text:?}")),
    };
    value.checked_mul(factor).filter(|v| *v > 0).ok_or_else(|| format!("invalid size {text:?}"))
}

/// Parses `k=v,k2=v2` locality tiers.
pub fn parse_locality(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|tier| {
            let (key, value) =
                tier.split_once('=').ok_or_else(|| format!("invalid locality tier {tier:?}: expected key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(format!("invalid locality tier {tier:?}: expected key=value"));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Turns `:PORT` into `0.0.0.0:PORT` and resolves the address to bind.
pub fn bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') { format!("0.0.0.0{text}") } else { text.to_string() };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|err| format!("invalid address {text:?}: {err}"))?
        .next()
        .ok_or_else(|| format!("address {text:?} resolves to nothing"))
}

/// The address to advertise for a listener given as `flag` and bound to `bound`: an explicit
/// host is kept; an unspecified one (`:PORT`, `0.0.0.0`) becomes this machine's host name.
/// Port 0 becomes the port actually bound.
pub fn advertised(flag: &str, bound_port: u16) -> String {
    let (host, port) = match flag.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (flag.to_string(), bound_port.to_string()),
    };
    let port = if port == "0" || port.is_empty() { bound_port.to_string() } else { port };
    let host = if host.is_empty() || host == "0.0.0.0" || host == "[::]" {
        sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_string())
    } else {
        host
    };
    format!("{host}:{port}")
}

/// Parses `--hot`: the API's `sort_by` names, with `-` or `_` between words.
pub fn parse_hot_metric(text: &str) -> Result<LoadMetric, String> {
    text.replace('-', "_").parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("168h").unwrap(), Duration::from_secs(168 * 3600));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn locality_parses_tiers_in_order() {
        assert_eq!(
            parse_locality("region=us-east1,zone=b").unwrap(),
            vec![("region".into(), "us-east1".into()), ("zone".into(), "b".into())]
        );
        assert!(parse_locality("").unwrap().is_empty());
        assert!(parse_locality("region").is_err());
        assert!(parse_locality("=x").is_err());
    }

    #[test]
    fn addresses_bind_and_advertise() {
        assert_eq!(bind_address(":26357").unwrap().to_string(), "0.0.0.0:26357");
        assert_eq!(bind_address("127.0.0.1:0").unwrap().port(), 0);
        assert!(bind_address("nonsense").is_err());
        assert_eq!(advertised("127.0.0.1:0", 4567), "127.0.0.1:4567");
        assert_eq!(advertised("node1:26357", 1), "node1:26357");
        assert!(advertised(":26357", 26357).ends_with(":26357"));
        assert!(!advertised(":26357", 26357).starts_with(':'));
    }

    #[test]
    fn hot_metrics_take_dashes_or_underscores() {
        assert_eq!(parse_hot_metric("read-bytes").unwrap(), LoadMetric::ReadBytes);
        assert_eq!(parse_hot_metric("write_bytes").unwrap(), LoadMetric::WriteBytes);
        assert_eq!(parse_hot_metric("qps").unwrap(), LoadMetric::Queries);
        assert!(parse_hot_metric("latency").is_err());
    }
}
