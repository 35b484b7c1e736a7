//! Trace export settings, resolved from the standard `OTEL_*` variables (or their flags and
//! config-file keys) and validated at startup like every other setting: a typo in a sampler
//! name is exit code 2 with the field named, not a node that silently traces nothing.

use std::time::Duration;

use http::Uri;

use crate::config::{invalid, positive, ConfigError, ServeOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// Which traces are recorded: a root decision, optionally deferring to the caller's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerChoice {
    pub root: SamplerKind,
    pub parent_based: bool,
}

#[derive(Clone, Debug)]
pub struct TraceSettings {
    /// The URI the exporter sends to: for http/protobuf, already ending in `/v1/traces`.
    pub endpoint: Uri,
    pub protocol: Protocol,
    pub timeout: Duration,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerChoice,
    pub queue_size: usize,
    pub batch_delay: Duration,
}

impl TraceSettings {
    /// `Ok(None)` when no endpoint is set: tracing is off.
    pub fn resolve(o: &ServeOptions) -> Result<Option<TraceSettings>, ConfigError> {
        let Some(endpoint) = o.otlp_endpoint.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if endpoint.is_empty() {
            return Ok(None);
        }
        let protocol = match o.otlp_protocol.as_deref().map(str::trim) {
            None | Some("") | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                return Err(invalid(
                    "otlp_protocol",
                    format!("{other:?} is not supported; use grpc or http/protobuf"),
                ))
            }
        };
        let endpoint = endpoint_uri(endpoint, protocol)?;
        let resource_attributes = match o.otel_resource_attributes.as_deref() {
            Some(s) => parse_attributes(s)?,
            None => Vec::new(),
        };
        let service_name = o
            .otel_service_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "raftnode".to_string());
        let sampler = parse_sampler(
            o.otel_traces_sampler.as_deref(),
            o.otel_traces_sampler_arg.as_deref(),
        )?;
        let queue_size = positive("otel_queue_size", o.otel_queue_size.unwrap_or(2048) as u64)?;
        Ok(Some(TraceSettings {
            endpoint,
            protocol,
            timeout: Duration::from_millis(positive(
                "otlp_timeout_ms",
                o.otlp_timeout_ms.unwrap_or(10_000),
            )?),
            service_name,
            resource_attributes,
            sampler,
            queue_size: queue_size as usize,
            batch_delay: Duration::from_millis(positive(
                "otel_batch_delay_ms",
                o.otel_batch_delay_ms.unwrap_or(5000),
            )?),
        }))
    }
}

/// Per the OTLP exporter specification, the HTTP transport posts to `<endpoint>/v1/traces`
/// while gRPC uses the endpoint as given.
fn endpoint_uri(s: &str, protocol: Protocol) -> Result<Uri, ConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|e| invalid("otlp_endpoint", format!("{s:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "otlp_endpoint",
                format!("{s:?}: TLS is not supported; export to a local collector over http://"),
            ))
        }
        _ => {
            return Err(invalid(
                "otlp_endpoint",
                format!("{s:?} must start with http://"),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("otlp_endpoint", format!("{s:?} names no host")));
    }
    if protocol == Protocol::Grpc {
        return Ok(uri);
    }
    let base = s.trim_end_matches('/');
    format!("{base}/v1/traces")
        .parse()
        .map_err(|e| invalid("otlp_endpoint", format!("{s:?}: {e}")))
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerChoice, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match arg.map(str::trim).filter(|a| !a.is_empty()) {
            None => Ok(1.0),
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(invalid(
                    "otel_traces_sampler_arg",
                    format!("{a:?} is not a ratio between 0.0 and 1.0"),
                )),
            },
        }
    };
    let (root, parent_based) = match name.map(str::trim).unwrap_or("") {
        "" | "parentbased_always_on" => (SamplerKind::AlwaysOn, true),
        "parentbased_always_off" => (SamplerKind::AlwaysOff, true),
        "parentbased_traceidratio" => (SamplerKind::Ratio(ratio()?), true),
        "always_on" => (SamplerKind::AlwaysOn, false),
        "always_off" => (SamplerKind::AlwaysOff, false),
        "traceidratio" => (SamplerKind::Ratio(ratio()?), false),
        other => {
            return Err(invalid(
                "otel_traces_sampler",
                format!(
                    "{other:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ),
            ))
        }
    };
    Ok(SamplerChoice { root, parent_based })
}

/// Parses `key=value,key=value`, percent-decoding values as the specification asks.
fn parse_attributes(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            invalid(
                "otel_resource_attributes",
                format!("{part:?} is not key=value"),
            )
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(invalid(
                "otel_resource_attributes",
                format!("{part:?} has an empty key"),
            ));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| {
            invalid(
                "otel_resource_attributes",
                format!("{part:?} has a bad percent-encoding"),
            )
        })?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoint: &str) -> ServeOptions {
        ServeOptions {
            otlp_endpoint: Some(endpoint.into()),
            ..Default::default()
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert!(TraceSettings::resolve(&ServeOptions::default())
            .unwrap()
            .is_none());
        assert!(TraceSettings::resolve(&opts("  ")).unwrap().is_none());
    }

    #[test]
    fn defaults_and_http_path() {
        let t = TraceSettings::resolve(&opts("http://c:4317"))
            .unwrap()
            .unwrap();
        assert_eq!(t.protocol, Protocol::Grpc);
        assert_eq!(t.service_name, "raftnode");
        assert_eq!(
            t.sampler,
            SamplerChoice {
                root: SamplerKind::AlwaysOn,
                parent_based: true
            }
        );
        let mut o = opts("http://c:4318/");
        o.otlp_protocol = Some("http/protobuf".into());
        let t = TraceSettings::resolve(&o).unwrap().unwrap();
        assert_eq!(t.endpoint.to_string(), "http://c:4318/v1/traces");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(ServeOptions, &str)> = vec![
            (opts("c:4317"), "otlp_endpoint"),
            (opts("https://c:4317"), "otlp_endpoint"),
            (
                ServeOptions {
                    otlp_protocol: Some("http/json".into()),
                    ..opts("http://c:1")
                },
                "otlp_protocol",
            ),
            (
                ServeOptions {
                    otel_traces_sampler: Some("sometimes".into()),
                    ..opts("http://c:1")
                },
                "otel_traces_sampler",
            ),
            (
                ServeOptions {
                    otel_traces_sampler: Some("traceidratio".into()),
                    otel_traces_sampler_arg: Some("1.5".into()),
                    ..opts("http://c:1")
                },
                "otel_traces_sampler_arg",
            ),
            (
                ServeOptions {
                    otel_resource_attributes: Some("a=1,b".into()),
                    ..opts("http://c:1")
                },
                "otel_resource_attributes",
            ),
        ];
        for (o, field) in cases {
            let e = TraceSettings::resolve(&o).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn attributes_decode_and_supply_the_service_name() {
        let o = ServeOptions {
            otel_resource_attributes: Some(
                "service.name=kv%20store, deployment.environment=prod".into(),
            ),
            ..opts("http://c:1")
        };
        let t = TraceSettings::resolve(&o).unwrap().unwrap();
        assert_eq!(t.service_name, "kv store");
        assert_eq!(t.resource_attributes[1].1, "prod");
    }
}
