//! The counters of `p2ptgt stats` in the Prometheus text format, from an HTTP listener
//! (`--metrics [ADDR:]PORT`; a bare port binds 127.0.0.1). Everything is read at
//! scrape time from the same atomics the data path updates: scraping costs the data
//! path nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::Report;
use crate::core::stats::IoStats;

type Labels = Vec<(String, String)>;

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One metric family: its samples, each with its labels.
fn family<M: EncodeMetric>(encoder: &mut DescriptorEncoder, name: &str, help: &str, kind: MetricType, samples: Vec<(Labels, M)>) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(samples: impl IntoIterator<Item = (Labels, u64)>) -> Vec<(Labels, ConstCounter<u64>)> {
    samples.into_iter().map(|(labels, value)| (labels, ConstCounter::new(value))).collect()
}

fn gauges(samples: impl IntoIterator<Item = (Labels, u64)>) -> Vec<(Labels, ConstGauge<i64>)> {
    samples.into_iter().map(|(labels, value)| (labels, ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)))).collect()
}

/// Command, byte and error counters of one namespace or queue, under `prefix`.
fn io_families(encoder: &mut DescriptorEncoder, prefix: &str, of: &[(Labels, &IoStats)]) -> Result<(), std::fmt::Error> {
    let with = |labels: &Labels, extra: (&str, &str)| {
        let mut labels = labels.clone();
        labels.push((extra.0.to_string(), extra.1.to_string()));
        labels
    };
    let commands = of.iter().flat_map(|(labels, stats)| {
        [("read", stats.read_commands.get()), ("write", stats.write_commands.get()), ("other", stats.other_commands.get())]
            .map(|(kind, value)| (with(labels, ("kind", kind)), value))
    });
    family(encoder, &format!("{prefix}_commands"), "Commands completed", MetricType::Counter, counters(commands))?;
    let bytes = of.iter().flat_map(|(labels, stats)| {
        [("read", stats.read_bytes.get()), ("write", stats.write_bytes.get())].map(|(direction, value)| (with(labels, ("direction", direction)), value))
    });
    family(encoder, &format!("{prefix}_bytes"), "Payload bytes moved", MetricType::Counter, counters(bytes))?;
    let errors = of.iter().map(|(labels, stats)| (labels.clone(), stats.errors.get()));
    family(encoder, &format!("{prefix}_errors"), "Commands that failed", MetricType::Counter, counters(errors))?;
    Ok(())
}

#[derive(Debug)]
struct Scrape(Arc<Report>);

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report").field("ports", &self.listeners.addresses()).finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = &self.0;
        let target = report.runtime.target();
        let payload = [("host", target.payload.payload_bytes_host.get()), ("cmb", target.payload.payload_bytes_cmb.get())].map(|(buffer, value)| (label(&[("buffer", buffer)]), value));
        family(&mut encoder, "p2ptgt_payload_bytes", "Payload bytes through host memory and through the CMB", MetricType::Counter, counters(payload))?;

        let subsystems = target.subsystems();
        let namespaces: Vec<_> = subsystems.iter().flat_map(|s| s.namespaces().values().map(|n| (s.nqn.clone(), n.clone())).collect::<Vec<_>>()).collect();
        let per_namespace: Vec<(Labels, &IoStats)> =
            namespaces.iter().map(|(nqn, n)| (label(&[("subsystem", nqn), ("nsid", &n.id.to_string())]), &n.stats)).collect();
        io_families(&mut encoder, "p2ptgt_namespace", &per_namespace)?;
        let through = namespaces.iter().flat_map(|(nqn, n)| {
            let provider = report.provider_of(n).unwrap_or_default();
            [("host", "", n.payload.payload_bytes_host.get()), ("cmb", provider.as_str(), n.payload.payload_bytes_cmb.get())]
                .map(|(buffer, provider, value)| (label(&[("subsystem", nqn), ("nsid", &n.id.to_string()), ("buffer", buffer), ("provider", provider)]), value))
        });
        family(&mut encoder, "p2ptgt_namespace_payload_bytes", "A namespace's payload bytes through host memory and through its provider's memory", MetricType::Counter, counters(through))?;
        let sizes = namespaces.iter().map(|(nqn, n)| (label(&[("subsystem", nqn), ("nsid", &n.id.to_string())]), n.backend.size_bytes()));
        family(&mut encoder, "p2ptgt_namespace_size_bytes", "Namespace size", MetricType::Gauge, gauges(sizes))?;

        let queues = report.listeners.queue_reports();
        let per_queue: Vec<(Labels, &IoStats)> = queues
            .iter()
            .map(|q| (label(&[("queue", &q.queue_id.to_string()), ("peer", q.peer.as_deref().unwrap_or("")), ("cmb", if q.uses_cmb { "1" } else { "0" })]), q.stats.as_ref()))
            .collect();
        io_families(&mut encoder, "p2ptgt_queue", &per_queue)?;
        let waits = per_queue.iter().map(|(labels, stats)| (labels.clone(), stats.buffer_waits.get()));
        family(&mut encoder, "p2ptgt_queue_buffer_waits", "Commands that waited for a data buffer", MetricType::Counter, counters(waits))?;
        {
            let mut latency = encoder.encode_descriptor("p2ptgt_queue_latency_seconds", "Capsule arrival to response, I/O queues", None, MetricType::Histogram)?;
            // Admin queues have no latency histogram (their AERs wait for events).
            for ((labels, stats), _) in per_queue.iter().zip(&queues).filter(|(_, queue)| queue.queue_id != 0) {
                let mut cumulative = 0u64;
                let buckets: Vec<(f64, u64)> = stats
                    .latency
                    .buckets()
                    .map(|(bound, count)| {
                        cumulative = cumulative.saturating_add(count);
                        // The encoder writes f64::MAX as le="+Inf".
                        (bound.map_or(f64::MAX, |us| us as f64 / 1e6), cumulative)
                    })
                    .collect();
                let histogram = ConstHistogram { sum_seconds: stats.latency.sum_us() as f64 / 1e6, count: stats.latency.count(), buckets };
                histogram.encode(latency.encode_family(labels)?)?;
            }
        }

        let pools = report.pools.all().map(|(name, pool)| (name.replace("_pool", ""), pool.stats())).collect::<Vec<_>>();
        let pool_bytes = pools.iter().flat_map(|(name, stats)| {
            [("size", stats.size_bytes), ("in_use", stats.in_use_bytes), ("high_water", stats.high_water_bytes)].map(|(what, value)| (label(&[("pool", name), ("state", what)]), value))
        });
        family(&mut encoder, "p2ptgt_pool_bytes", "Buffer pool size, use and high-water mark", MetricType::Gauge, gauges(pool_bytes))?;
        let pool_waits = pools.iter().map(|(name, stats)| (label(&[("pool", name)]), stats.waits));
        family(&mut encoder, "p2ptgt_pool_waits", "Requests that waited for a buffer of the pool", MetricType::Counter, counters(pool_waits))?;
        let waiting = pools.iter().map(|(name, stats)| (label(&[("pool", name)]), stats.waiting as u64));
        family(&mut encoder, "p2ptgt_pool_waiting", "Requests waiting for a buffer of the pool now", MetricType::Gauge, gauges(waiting))?;

        let controllers = target.controllers();
        let mut per_subsystem: std::collections::BTreeMap<String, u64> = subsystems.iter().map(|s| (s.nqn.clone(), 0)).collect();
        for controller in &controllers {
            *per_subsystem.entry(controller.subsystem_nqn.clone()).or_default() += 1;
        }
        let connected = per_subsystem.into_iter().map(|(nqn, count)| (label(&[("subsystem", &nqn)]), count));
        family(&mut encoder, "p2ptgt_controllers", "Controllers connected, discovery ones under the discovery NQN", MetricType::Gauge, gauges(connected))?;
        Ok(())
    }
}

/// A histogram whose buckets are read at scrape time (cumulative counts, as the text
/// format wants them).
#[derive(Debug)]
struct ConstHistogram {
    sum_seconds: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(self.sum_seconds, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `PORT` binds 127.0.0.1; `ADDR:PORT` binds ADDR.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("{text:?}: expected PORT or ADDR:PORT"))
}

/// Serves `GET /metrics` on `address` from a thread of its own until the process ends.
pub(super) fn serve(address: SocketAddr, report: Arc<Report>) -> Result<(), std::io::Error> {
    let server = tiny_http::Server::http(address).map_err(std::io::Error::other)?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(report)));
    info!(%address, "metrics: Prometheus text format on http://{address}/metrics");
    let content_type = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..]).ok();
    std::thread::Builder::new().name("p2ptgt-metrics".into()).spawn(move || {
        for request in server.incoming_requests() {
            let response = if request.url() == "/metrics" && *request.method() == tiny_http::Method::Get {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => content_type.iter().fold(tiny_http::Response::from_string(text), |response, header| response.with_header(header.clone())),
                    Err(error) => {
                        warn!(%error, "metrics: encoding failed");
                        tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                    }
                }
            } else {
                tiny_http::Response::from_string("p2ptgt serves /metrics\n").with_status_code(404)
            };
            let _ = request.respond(response);
        }
    })?;
    Ok(())
}
