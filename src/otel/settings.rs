//! Trace export settings, resolved from the standard `OTEL_*` variables (or their flags and
//! config-file keys) and validated at startup like every other setting: a typo in a sampler
//! name is exit code 2 with the field named, not a node that silently traces nothing.

use std::time::Duration;

use http::Uri;

/// A trace setting that does not parse; `field` is its config-file key.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidSetting {
    /// The setting's config-file key.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        field,
        reason: reason.into(),
    }
}

fn positive(field: &'static str, v: u64) -> Result<u64, InvalidSetting> {
    if v == 0 {
        Err(invalid(field, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

/// The trace settings as given (flags, variables, file), before validation.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds.
    pub otlp_timeout_ms: Option<u64>,
    /// `OTEL_SERVICE_NAME`.
    pub otel_service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub otel_resource_attributes: Option<String>,
    /// `OTEL_TRACES_SAMPLER`.
    pub otel_traces_sampler: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub otel_traces_sampler_arg: Option<String>,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`.
    pub otel_queue_size: Option<usize>,
    /// `OTEL_BSP_SCHEDULE_DELAY`, in milliseconds.
    pub otel_batch_delay_ms: Option<u64>,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP, protobuf bodies.
    HttpProtobuf,
}

/// A sampler's root decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// This share of traces, by trace id.
    Ratio(f64),
}

/// Which traces are recorded: a root decision, optionally deferring to the caller's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerChoice {
    /// The decision for traces that start here.
    pub root: SamplerKind,
    /// Whether an incoming `traceparent`'s decision is followed instead.
    pub parent_based: bool,
}

/// Validated trace export settings.
#[derive(Clone, Debug)]
pub struct TraceSettings {
    /// The URI the exporter sends to: for http/protobuf, already ending in `/v1/traces`.
    pub endpoint: Uri,
    /// The transport.
    pub protocol: Protocol,
    /// Bound on one export.
    pub timeout: Duration,
    /// `service.name`.
    pub service_name: String,
    /// Extra resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Which traces are recorded.
    pub sampler: SamplerChoice,
    /// Spans buffered for export.
    pub queue_size: usize,
    /// Longest wait before a finished span is exported.
    pub batch_delay: Duration,
}

impl TraceSettings {
    /// `Ok(None)` when no endpoint is set: tracing is off.
    pub fn resolve(o: &TraceOptions) -> Result<Option<TraceSettings>, InvalidSetting> {
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
fn endpoint_uri(s: &str, protocol: Protocol) -> Result<Uri, InvalidSetting> {
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

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerChoice, InvalidSetting> {
    let ratio = || -> Result<f64, InvalidSetting> {
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
fn parse_attributes(s: &str) -> Result<Vec<(String, String)>, InvalidSetting> {
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

    fn opts(endpoint: &str) -> TraceOptions {
        TraceOptions {
            otlp_endpoint: Some(endpoint.into()),
            ..Default::default()
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert!(TraceSettings::resolve(&TraceOptions::default())
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
        let cases: Vec<(TraceOptions, &str)> = vec![
            (opts("c:4317"), "otlp_endpoint"),
            (opts("https://c:4317"), "otlp_endpoint"),
            (
                TraceOptions {
                    otlp_protocol: Some("http/json".into()),
                    ..opts("http://c:1")
                },
                "otlp_protocol",
            ),
            (
                TraceOptions {
                    otel_traces_sampler: Some("sometimes".into()),
                    ..opts("http://c:1")
                },
                "otel_traces_sampler",
            ),
            (
                TraceOptions {
                    otel_traces_sampler: Some("traceidratio".into()),
                    otel_traces_sampler_arg: Some("1.5".into()),
                    ..opts("http://c:1")
                },
                "otel_traces_sampler_arg",
            ),
            (
                TraceOptions {
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
        let o = TraceOptions {
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
