//! Liveness, readiness and startup probes: parsing a container's probe spec, the pure
//! threshold state machine, and running one check (`httpGet`, `tcpSocket`).
//!
//! Semantics as Kubernetes: a check runs every `periodSeconds` after `initialDelaySeconds`,
//! fails after `timeoutSeconds`; the result flips to success after `successThreshold`
//! consecutive successes and to failure after `failureThreshold` consecutive failures.
//! Readiness starts as failure (not ready), liveness and startup start unknown. While a startup
//! probe has not succeeded, the other probes do not run.

use crate::runtime::ports::PortMap;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    HttpGet { path: String, port: u16, host: Option<String>, headers: Vec<(String, String)> },
    TcpSocket { port: u16, host: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn port_of(v: &Value, container: &Value) -> Result<u16, String> {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| format!("port {n} is out of range"));
    }
    let name = v.as_str().ok_or("a probe needs a port")?;
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("the container has no port named {name:?}"))
}

fn secs(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

impl Probe {
    /// The probe at `container[field]` (`livenessProbe`, `readinessProbe`, `startupProbe`).
    pub fn parse(container: &Value, field: &str) -> Result<Option<Probe>, String> {
        let p = &container[field];
        if p.is_null() {
            return Ok(None);
        }
        let err = |e: String| format!("{field}: {e}");
        let action = if p["httpGet"].is_object() {
            let h = &p["httpGet"];
            if h["scheme"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
                return Err(err("httpGet with scheme HTTPS is not supported; wasm pods serve plain HTTP".into()));
            }
            Action::HttpGet {
                path: h["path"].as_str().filter(|s| !s.is_empty()).unwrap_or("/").to_string(),
                port: port_of(&h["port"], container).map_err(err)?,
                host: h["host"].as_str().filter(|s| !s.is_empty()).map(String::from),
                headers: h["httpHeaders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| Some((x["name"].as_str()?.to_string(), x["value"].as_str()?.to_string())))
                    .collect(),
            }
        } else if p["tcpSocket"].is_object() {
            Action::TcpSocket {
                port: port_of(&p["tcpSocket"]["port"], container).map_err(err)?,
                host: p["tcpSocket"]["host"].as_str().filter(|s| !s.is_empty()).map(String::from),
            }
        } else if p["exec"].is_object() || p["grpc"].is_object() {
            return Err(err("only httpGet and tcpSocket probes are supported by wasm pods".into()));
        } else {
            return Err(err("needs httpGet or tcpSocket".into()));
        };
        Ok(Some(Probe {
            action,
            initial_delay: secs(&p["initialDelaySeconds"], 0),
            period: secs(&p["periodSeconds"], 10).max(Duration::from_secs(1)),
            timeout: secs(&p["timeoutSeconds"], 1).max(Duration::from_secs(1)),
            success_threshold: p["successThreshold"].as_u64().unwrap_or(1).max(1) as u32,
            failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
        }))
    }
}

/// Consecutive-result counting: the pure core of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// `None` until a threshold is first reached.
    pub result: Option<bool>,
}

impl Tracker {
    pub fn new(p: &Probe) -> Tracker {
        Tracker {
            success_threshold: p.success_threshold,
            failure_threshold: p.failure_threshold,
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Record one check; returns the new result when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if self.successes >= self.success_threshold {
            Some(true)
        } else if self.failures >= self.failure_threshold {
            Some(false)
        } else {
            self.result
        };
        let changed = next != self.result;
        self.result = next;
        if changed { next } else { None }
    }
}

/// Run one check against the pod at `pod_ip`, dialling its sockets where `ports` says they
/// are; `Err` says why it failed.
pub async fn check(action: &Action, pod_ip: &str, timeout: Duration, ports: &PortMap) -> Result<(), String> {
    match tokio::time::timeout(timeout, check_inner(action, pod_ip, ports)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// Where to connect for `addr` (`host:port`): its real socket when it is a mapped address.
fn dial_addr(addr: &str, ports: &PortMap) -> String {
    addr.parse::<std::net::SocketAddr>().map_or_else(|_| addr.to_string(), |a| ports.dialable(a).to_string())
}

async fn check_inner(action: &Action, pod_ip: &str, ports: &PortMap) -> Result<(), String> {
    match action {
        Action::TcpSocket { port, host } => {
            let addr = format!("{}:{port}", host.as_deref().unwrap_or(pod_ip));
            let at = dial_addr(&addr, ports);
            tokio::net::TcpStream::connect(&at).await.map(|_| ()).map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Action::HttpGet { path, port, host, headers } => {
            let addr = format!("{}:{port}", host.as_deref().unwrap_or(pod_ip));
            let at = dial_addr(&addr, ports);
            let mut s =
                tokio::net::TcpStream::connect(&at).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\nUser-Agent: wasmorch-probe/1.0\r\n");
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                req.push_str(&format!("Host: {addr}\r\n"));
            }
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 256];
            while !head.contains(&b'\n') && head.len() < 4096 {
                let n = s.read(&mut buf).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&head);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("Get \"http://{addr}{path}\": malformed HTTP response"))?;
            if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_kubernetes_fields_and_defaults() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}], "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X-A", "value": "b"}]},
            "initialDelaySeconds": 2, "failureThreshold": 1
        }, "readinessProbe": {"tcpSocket": {"port": 7000}}});
        let l = Probe::parse(&c, "livenessProbe").unwrap().unwrap();
        assert_eq!(
            l.action,
            Action::HttpGet {
                path: "/healthz".into(),
                port: 8080,
                host: None,
                headers: vec![("X-A".into(), "b".into())]
            }
        );
        assert_eq!(
            (l.initial_delay, l.period, l.timeout),
            (Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(1))
        );
        assert_eq!((l.success_threshold, l.failure_threshold), (1, 1));
        let r = Probe::parse(&c, "readinessProbe").unwrap().unwrap();
        assert_eq!(r.action, Action::TcpSocket { port: 7000, host: None });
        assert_eq!(r.failure_threshold, 3);
        assert!(Probe::parse(&c, "startupProbe").unwrap().is_none());
        let bad = json!({"livenessProbe": {"httpGet": {"port": "nope"}}});
        assert!(Probe::parse(&bad, "livenessProbe").unwrap_err().contains("no port named \"nope\""));
        let exec = json!({"livenessProbe": {"exec": {"command": ["true"]}}});
        assert!(Probe::parse(&exec, "livenessProbe").unwrap_err().contains("only httpGet and tcpSocket"));
    }

    #[test]
    fn thresholds_flip_the_result() {
        let p = Probe {
            action: Action::TcpSocket { port: 1, host: None },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
        };
        let mut t = Tracker::new(&p);
        assert_eq!(t.record(true), None, "one success is not enough");
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None, "no change");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.result, Some(true), "two failures keep it");
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(true), None, "a success resets failures but needs two");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }

    #[tokio::test]
    async fn checks_talk_to_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                n += 1;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let code = if n == 1 { "204 No Content" } else { "503 Service Unavailable" };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let http = Action::HttpGet { path: "/h".into(), port, host: None, headers: vec![] };
        let t = Duration::from_secs(2);
        let unmapped = PortMap::new(false);
        assert_eq!(check(&http, "127.0.0.1", t, &unmapped).await, Ok(()));
        let e = check(&http, "127.0.0.1", t, &unmapped).await.unwrap_err();
        assert_eq!(e, "HTTP probe failed with statuscode: 503");
        // Mapped pod ports: the pod's virtual address is dialled at its real socket.
        let mapped = PortMap::new(true);
        mapped.insert(format!("127.64.0.2:{port}").parse().unwrap(), format!("127.0.0.1:{port}").parse().unwrap());
        assert_eq!(check(&Action::TcpSocket { port, host: None }, "127.64.0.2", t, &mapped).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = check(&Action::TcpSocket { port: closed, host: None }, "127.0.0.1", t, &unmapped).await.unwrap_err();
        assert!(e.starts_with(&format!("dial tcp 127.0.0.1:{closed}")), "{e}");
    }
}
