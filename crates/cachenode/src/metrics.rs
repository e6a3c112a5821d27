//! Counters, the GET latency histogram and their Prometheus text form
//! (exposition format 0.0.4, hand-written: a dozen series do not need a
//! metrics crate).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::TierHit;

/// Upper bounds of the GET latency buckets, in seconds: 10 us (a memory
/// hit, DESIGN.md: "cache server GET median < 50 us") to 100 ms (a flash
/// read stuck behind a busy disk), 1-2.5-5 steps.
const GET_BUCKETS: [f64; 13] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];

/// Lock-free counters, bumped on the request path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: [AtomicU64; 2],
    pub(crate) served_bytes: [AtomicU64; 2],
    pub(crate) stored_bytes: [AtomicU64; 2],
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) io_errors: AtomicU64,
    get_buckets: [AtomicU64; GET_BUCKETS.len()],
    get_count: AtomicU64,
    get_nanos: AtomicU64,
}

pub(crate) fn tier_slot(tier: TierHit) -> usize {
    match tier {
        TierHit::Memory => 0,
        TierHit::Flash => 1,
    }
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn observe_get(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(bucket) = GET_BUCKETS.iter().position(|&le| secs <= le) {
            bump(&self.get_buckets[bucket], 1);
        }
        bump(&self.get_count, 1);
        bump(
            &self.get_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    fn get_histogram(&self) -> GetHistogram {
        GetHistogram {
            buckets: std::array::from_fn(|i| self.get_buckets[i].load(Ordering::Relaxed)),
            count: self.get_count.load(Ordering::Relaxed),
            sum: Duration::from_nanos(self.get_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// One tier's figures in [`NodeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Entries held now.
    pub entries: u64,
    /// Stripe bytes held now (headers not counted).
    pub bytes: u64,
    /// The tier's bound in bytes now (for memory: the configured memory
    /// less the flash index's charge).
    pub capacity: u64,
    /// Stripe GETs this tier served.
    pub hits: u64,
    /// Body bytes this tier served.
    pub served_bytes: u64,
    /// Body bytes written into this tier (PUTs, and promotions for memory).
    pub stored_bytes: u64,
    /// Entries removed to make room.
    pub evictions: u64,
}

/// The GET latency histogram: per-bucket (not cumulative) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GetHistogram {
    /// Counts of GETs that took at most the bucket bound and more than the
    /// previous one; see [`GetHistogram::bounds`].
    pub buckets: [u64; GET_BUCKETS.len()],
    /// All GETs, including those above the last bound.
    pub count: u64,
    /// Total handler time.
    pub sum: Duration,
}

impl GetHistogram {
    /// Upper bounds of [`GetHistogram::buckets`], in seconds.
    pub fn bounds() -> &'static [f64] {
        &GET_BUCKETS
    }

    /// The bucket bound under which the `q` quantile (0..=1) falls; `None`
    /// if no GET was recorded or it falls above the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (count, le) in self.buckets.iter().zip(GET_BUCKETS) {
            seen += count;
            if seen >= rank {
                return Some(le);
            }
        }
        None
    }
}

/// A snapshot of a node's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    pub memory: TierStats,
    pub flash: TierStats,
    /// Stripe GETs that found nothing (corrupt entries included).
    pub misses: u64,
    /// Stripes stored by PUT.
    pub puts: u64,
    /// Flash hits copied into memory.
    pub promotions: u64,
    /// Memory evictions whose stripe stayed on flash.
    pub demotions: u64,
    /// Flash entries dropped because their file failed a check (or
    /// vanished), plus unusable files removed at open.
    pub corrupt: u64,
    /// Flash reads and writes that failed with an I/O error.
    pub io_errors: u64,
    /// Handler time of stripe GETs served over HTTP.
    pub get_latency: GetHistogram,
}

impl NodeStats {
    pub(crate) fn fill_counters(&mut self, counters: &Counters) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (tier, slot) in [(&mut self.memory, 0), (&mut self.flash, 1)] {
            tier.hits = load(&counters.hits[slot]);
            tier.served_bytes = load(&counters.served_bytes[slot]);
            tier.stored_bytes = load(&counters.stored_bytes[slot]);
        }
        self.misses = load(&counters.misses);
        self.puts = load(&counters.puts);
        self.corrupt = load(&counters.corrupt);
        self.io_errors = load(&counters.io_errors);
        self.get_latency = counters.get_histogram();
    }

    /// The Prometheus text exposition of these figures.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let tiers = [("memory", &self.memory), ("flash", &self.flash)];
        let mut per_tier = |name: &str, kind: &str, help: &str, value: fn(&TierStats) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (tier, stats) in tiers {
                let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {}", value(stats));
            }
        };
        per_tier(
            "kindling_node_hits_total",
            "counter",
            "Stripe GETs served, by tier.",
            |t| t.hits,
        );
        per_tier(
            "kindling_node_served_bytes_total",
            "counter",
            "Stripe body bytes served, by tier.",
            |t| t.served_bytes,
        );
        per_tier(
            "kindling_node_stored_bytes_total",
            "counter",
            "Stripe body bytes written into each tier.",
            |t| t.stored_bytes,
        );
        per_tier(
            "kindling_node_entries",
            "gauge",
            "Stripes held, by tier.",
            |t| t.entries,
        );
        per_tier(
            "kindling_node_bytes",
            "gauge",
            "Stripe bytes held, by tier.",
            |t| t.bytes,
        );
        per_tier(
            "kindling_node_capacity_bytes",
            "gauge",
            "Bound of each tier in bytes.",
            |t| t.capacity,
        );
        per_tier(
            "kindling_node_evictions_total",
            "counter",
            "Entries evicted to make room, by tier.",
            |t| t.evictions,
        );
        let mut single = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        single(
            "kindling_node_misses_total",
            "Stripe GETs that found nothing.",
            self.misses,
        );
        single(
            "kindling_node_puts_total",
            "Stripes stored by PUT.",
            self.puts,
        );
        single(
            "kindling_node_promotions_total",
            "Flash hits copied into memory.",
            self.promotions,
        );
        single(
            "kindling_node_demotions_total",
            "Memory evictions whose stripe stayed on flash.",
            self.demotions,
        );
        single(
            "kindling_node_corrupt_total",
            "Flash entries dropped because their file failed a check.",
            self.corrupt,
        );
        single(
            "kindling_node_io_errors_total",
            "Flash reads and writes that failed.",
            self.io_errors,
        );

        let name = "kindling_node_get_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Handler time of stripe GETs.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (count, le) in self.get_latency.buckets.iter().zip(GET_BUCKETS) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let hist = &self.get_latency;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", hist.count);
        let _ = writeln!(out, "{name}_sum {}", hist.sum.as_secs_f64());
        let _ = writeln!(out, "{name}_count {}", hist.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_text() {
        let counters = Counters::default();
        counters.observe_get(Duration::from_micros(7));
        counters.observe_get(Duration::from_micros(30));
        counters.observe_get(Duration::from_micros(30));
        counters.observe_get(Duration::from_secs(1));
        let mut stats = NodeStats::default();
        stats.fill_counters(&counters);
        let hist = stats.get_latency;
        assert_eq!(hist.count, 4);
        assert_eq!(&hist.buckets[..3], &[1, 0, 2]);
        assert_eq!(hist.quantile_bound(0.5), Some(0.000_05));
        assert_eq!(hist.quantile_bound(1.0), None);

        let text = stats.to_prometheus();
        assert!(
            text.contains("kindling_node_get_duration_seconds_bucket{le=\"0.00001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("kindling_node_get_duration_seconds_bucket{le=\"0.1\"} 3\n"));
        assert!(text.contains("kindling_node_get_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("kindling_node_hits_total{tier=\"flash\"} 0\n"));
        // Every sample line is "name{labels} value" with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
