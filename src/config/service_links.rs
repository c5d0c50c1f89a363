//! Kubernetes' service-link variables, which are not configuration.
//!
//! Unless a pod sets `enableServiceLinks: false`, the kubelet gives every container
//! docker-link style variables for each Service of its namespace, so a Service named `housekeep`
//! or `housekeep-…` puts `HOUSEKEEP_…` variables into every pod (kubelet `envvars.FromServices`).
//! They are recognised here by name and by value, exactly as the kubelet writes them, so that any
//! other unknown `HOUSEKEEP_*` variable — a misspelt key — is still refused.
//!
//! For a Service whose name becomes `S` (upper case, `-` → `_`), with cluster IP `IP`, and for
//! each of its ports the number `N`, the protocol `P` (TCP, UDP or SCTP; `p` in lower case) and,
//! when the port is named, `NAME`:
//!
//! | variable | value |
//! |---|---|
//! | `S_SERVICE_HOST` | `IP` |
//! | `S_SERVICE_PORT` | the first port's `N` |
//! | `S_SERVICE_PORT_NAME` | `N` |
//! | `S_PORT` | the first port's `p://IP:N` (an IPv6 address in brackets) |
//! | `S_PORT_N_P` | `p://IP:N` |
//! | `S_PORT_N_P_PROTO` | `p` |
//! | `S_PORT_N_P_PORT` | `N` |
//! | `S_PORT_N_P_ADDR` | `IP` |

use std::net::{IpAddr, SocketAddr};

const PREFIX: &str = "HOUSEKEEP";
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// What the value of a service-link variable is, as far as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    /// A cluster IP.
    Ip,
    /// A port number; the one in the name when given.
    Port(Option<u16>),
    /// `p://IP:N`; the protocol and port in the name when given.
    Url(Option<(&'a str, u16)>),
    /// The protocol in the name, in lower case.
    Protocol(&'a str),
}

/// Whether `name=value` is a variable the kubelet sets for a Service named `housekeep…`.
pub(super) fn is_service_link(name: &str, value: &str) -> bool {
    readings(name).into_iter().any(|v| v.accepts(value))
}

/// Every way `name` reads as a service-link variable (a Service's name may itself contain
/// `-port-80-tcp`, so one name can have several readings; the value decides).
fn readings(name: &str) -> Vec<Value<'_>> {
    let mut out = Vec::new();
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return out;
    };
    if rest.strip_suffix("_SERVICE_HOST").is_some_and(service) {
        out.push(Value::Ip);
    }
    if rest.strip_suffix("_SERVICE_PORT").is_some_and(service) {
        out.push(Value::Port(None));
    }
    let named_port = rest
        .match_indices("_SERVICE_PORT_")
        .any(|(i, m)| service(&rest[..i]) && port_name(&rest[i + m.len()..]));
    if named_port {
        out.push(Value::Port(None));
    }
    if rest.strip_suffix("_PORT").is_some_and(service) {
        out.push(Value::Url(None));
    }
    for (suffix, field) in [("", 0), ("_PROTO", 1), ("_PORT", 2), ("_ADDR", 3)] {
        let Some((protocol, port)) = rest.strip_suffix(suffix).and_then(docker_port) else {
            continue;
        };
        out.push(match field {
            0 => Value::Url(Some((protocol, port))),
            1 => Value::Protocol(protocol),
            2 => Value::Port(Some(port)),
            _ => Value::Ip,
        });
    }
    out
}

/// `S_PORT_N_P` (after the prefix): the protocol and the port.
fn docker_port(rest: &str) -> Option<(&str, u16)> {
    let (head, protocol) = rest.rsplit_once('_')?;
    let (head, port) = head.rsplit_once('_')?;
    let port = port_number(port)?;
    (PROTOCOLS.contains(&protocol) && head.strip_suffix("_PORT").is_some_and(service))
        .then_some((protocol, port))
}

/// The rest of a Service's name after `housekeep`, as the kubelet spells it: nothing, or `_`
/// and more letters, digits and underscores.
fn service(rest: &str) -> bool {
    rest.is_empty()
        || rest.strip_prefix('_').is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// A port name (IANA service name: at most 15 letters, digits and dashes, one letter at least).
fn port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && s.bytes().any(|b| b.is_ascii_uppercase())
}

/// A port number as the kubelet writes it (1 to 65535, no sign, no leading zero).
fn port_number(s: &str) -> Option<u16> {
    let n: u16 = s.parse().ok()?;
    (n != 0 && n.to_string() == s).then_some(n)
}

impl Value<'_> {
    fn accepts(self, value: &str) -> bool {
        match self {
            Value::Ip => value.parse::<IpAddr>().is_ok(),
            Value::Port(None) => port_number(value).is_some(),
            Value::Port(Some(n)) => port_number(value) == Some(n),
            Value::Protocol(p) => value == p.to_ascii_lowercase(),
            Value::Url(expected) => {
                let Some((scheme, address)) = value.split_once("://") else {
                    return false;
                };
                let Some(protocol) = PROTOCOLS.iter().find(|p| p.to_ascii_lowercase() == scheme)
                else {
                    return false;
                };
                let Ok(address) = address.parse::<SocketAddr>() else {
                    return false;
                };
                address.port() != 0
                    && expected.is_none_or(|(p, n)| p == *protocol && n == address.port())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables the kubelet sets for a Service `name` with cluster IP `ip` and ports
    /// (name, number, protocol), as `envvars.FromServices` builds them.
    /// A Service port: name (empty when unnamed), number, protocol.
    type Port<'a> = (&'a str, u16, &'a str);

    fn kubelet_variables(
        name: &str,
        ip: &str,
        ports: &[(&str, u16, &str)],
    ) -> Vec<(String, String)> {
        let s = name.to_uppercase().replace('-', "_");
        let host_port = |n: u16| {
            if ip.contains(':') {
                format!("[{ip}]:{n}")
            } else {
                format!("{ip}:{n}")
            }
        };
        let mut out = vec![
            (format!("{s}_SERVICE_HOST"), ip.to_string()),
            (format!("{s}_SERVICE_PORT"), ports[0].1.to_string()),
        ];
        for (port_name, n, _) in ports {
            if !port_name.is_empty() {
                out.push((
                    format!(
                        "{s}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    n.to_string(),
                ));
            }
        }
        for (i, (_, n, p)) in ports.iter().enumerate() {
            let url = format!("{}://{}", p.to_lowercase(), host_port(*n));
            if i == 0 {
                out.push((format!("{s}_PORT"), url.clone()));
            }
            let pp = format!("{s}_PORT_{n}_{}", p.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), p.to_lowercase()));
            out.push((format!("{pp}_PORT"), n.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
        }
        out
    }

    #[test]
    fn every_variable_the_kubelet_sets_for_a_housekeep_service_is_a_service_link() {
        let services: &[(&str, &str, &[Port])] = &[
            ("housekeep", "10.96.0.12", &[("http", 9718, "TCP")]),
            (
                "housekeep",
                "10.96.0.13",
                &[
                    ("web", 9718, "TCP"),
                    ("dns-udp", 53, "UDP"),
                    ("sctp", 3868, "SCTP"),
                ],
            ),
            (
                "housekeep-worker",
                "fd00:10:96::4a1",
                &[("metrics", 80, "TCP")],
            ),
            ("housekeep-2", "192.168.0.1", &[("", 65535, "TCP")]),
            (
                "housekeep-port-80-tcp",
                "10.0.0.1",
                &[("service-port-ab", 80, "TCP")],
            ),
        ];
        for (name, ip, ports) in services {
            for (k, v) in kubelet_variables(name, ip, ports) {
                assert!(is_service_link(&k, &v), "{k}={v}");
            }
        }
    }

    #[test]
    fn other_housekeep_variables_are_not_service_links() {
        for (k, v) in [
            // Misspelt keys.
            ("HOUSEKEEP_TASKS_EXPIRE_BACH_SIZE", "1"),
            ("HOUSEKEEP_LISTEN_PORT", "9718"),
            ("HOUSEKEEP_STORE_URL_PORT", "9718"),
            // The right names with values the kubelet never writes.
            ("HOUSEKEEP_SERVICE_HOST", "db.internal"),
            ("HOUSEKEEP_SERVICE_PORT", "http"),
            ("HOUSEKEEP_SERVICE_PORT", "0"),
            ("HOUSEKEEP_SERVICE_PORT", "09718"),
            ("HOUSEKEEP_SERVICE_PORT", "+9718"),
            ("HOUSEKEEP_SERVICE_PORT_HTTP", "65536"),
            ("HOUSEKEEP_PORT", "9718"),
            ("HOUSEKEEP_PORT", "http://10.0.0.1:9718"),
            ("HOUSEKEEP_PORT", "TCP://10.0.0.1:9718"),
            ("HOUSEKEEP_PORT", "tcp://fd00::1:9718"),
            ("HOUSEKEEP_PORT_9718_TCP", "tcp://10.0.0.1:9719"),
            ("HOUSEKEEP_PORT_9718_TCP", "udp://10.0.0.1:9718"),
            ("HOUSEKEEP_PORT_9718_TCP_PROTO", "udp"),
            ("HOUSEKEEP_PORT_9718_TCP_PORT", "9719"),
            ("HOUSEKEEP_PORT_9718_TCP_ADDR", "localhost"),
            ("HOUSEKEEP_PORT_9718_HTTP", "http://10.0.0.1:9718"),
            // Names the kubelet never builds.
            ("HOUSEKEEP__SERVICE_HOST", "10.0.0.1"),
            ("HOUSEKEEPER_SERVICE_HOST", "10.0.0.1"),
            ("HOUSEKEEP_x_SERVICE_HOST", "10.0.0.1"),
            ("HOUSEKEEP_SERVICE_PORT_", "80"),
            ("HOUSEKEEP_SERVICE_PORT_1234", "80"),
            ("HOUSEKEEP_SERVICE_PORT_A_VERY_LONG_NAME", "80"),
            ("HOUSEKEEP_PORT_0_TCP_PORT", "0"),
        ] {
            assert!(!is_service_link(k, v), "{k}={v}");
        }
    }

    #[test]
    fn no_configuration_key_reads_as_a_service_link() {
        for key in crate::config::known_keys().keys() {
            let name = crate::config::env_name(key);
            assert_eq!(readings(&name), [], "{name}");
        }
    }
}
