//! Optional OpenTelemetry trace export over OTLP/HTTP (cargo feature `otlp`).
//!
//! Configured the OpenTelemetry way, by the standard environment variables, so a collector sidecar or an
//! operator's existing settings work unchanged: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is appended), and `OTEL_SERVICE_NAME`
//! (default `clickpath`). Without an endpoint nothing is exported. The run loop opens a `batch` span per
//! batch (stage, records, outputs) and `restore` spans for changelog restores; they are exported with every
//! other span at the log level in force (`RUST_LOG`).

/// Where to send spans and under which service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Full URL of the OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub traces_endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl OtlpSettings {
    /// The settings of the standard `OTEL_*` variables read through `var`; `None` when no endpoint is set.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let traces_endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            set("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })?;
        Some(OtlpSettings {
            traces_endpoint,
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| "clickpath".into()),
        })
    }

    /// The settings of this process's environment.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }
}

/// Whether this build can export spans (the `otlp` feature).
pub const OTLP_BUILT_IN: bool = cfg!(feature = "otlp");

#[cfg(feature = "otlp")]
pub use export::{OtlpGuard, otlp_layer};

/// Most links one batch span gets (the OpenTelemetry SDK's default limit per span).
pub const MAX_LINKS: usize = 128;

/// Links the current span (the run loop's batch span) to the span that produced a record it
/// processes, as the OpenTelemetry messaging conventions ask of a batch's `process` span. Without
/// the `otlp` feature there are no exported spans to link, and this does nothing.
pub fn link_current_span(producer: &crate::trace_context::TraceParent) {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        tracing::Span::current().add_link(SpanContext::new(
            TraceId::from(producer.trace_id),
            SpanId::from(producer.span_id),
            TraceFlags::new(producer.flags),
            true,
            TraceState::default(),
        ));
    }
    #[cfg(not(feature = "otlp"))]
    let _ = producer;
}

#[cfg(feature = "otlp")]
mod export {
    use super::OtlpSettings;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Keeps the exporter alive; dropping it flushes the spans not yet sent and stops the exporter.
    pub struct OtlpGuard {
        provider: SdkTracerProvider,
    }

    impl Drop for OtlpGuard {
        fn drop(&mut self) {
            if let Err(e) = self.provider.shutdown() {
                eprintln!("OTLP exporter shutdown: {e}");
            }
        }
    }

    /// A `tracing` layer that exports spans to `settings.traces_endpoint` (OTLP/HTTP, protobuf) in batches
    /// from a background thread, and the guard that flushes them at exit.
    pub fn otlp_layer<S>(
        settings: &OtlpSettings,
    ) -> anyhow::Result<(
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        OtlpGuard,
    )>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_endpoint.clone())
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("clickpath");
        Ok((
            tracing_opentelemetry::layer().with_tracer(tracer),
            OtlpGuard { provider },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn settings_follow_the_standard_variables() {
        assert_eq!(OtlpSettings::from_vars(vars(&[])), None);
        assert_eq!(
            OtlpSettings::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
        let base = OtlpSettings::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/",
        )]))
        .unwrap();
        assert_eq!(base.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(base.service_name, "clickpath");
        let full = OtlpSettings::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/traces"),
            ("OTEL_SERVICE_NAME", "clickpath-scorer"),
        ]))
        .unwrap();
        assert_eq!(full.traces_endpoint, "http://c:9999/traces");
        assert_eq!(full.service_name, "clickpath-scorer");
    }
}
