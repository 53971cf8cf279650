//! The `process_*` metrics Go's Prometheus client exports by default, which MCM's sidecar
//! therefore has: read at scrape time through the procfs crate, from the same files Go's
//! procfs reads. Where `/proc` is missing (not Linux) the metrics are left out, as Go does.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One reading of the process, each value absent when its file could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub virtual_memory_bytes: Option<f64>,
    pub virtual_memory_max_bytes: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub network_receive_bytes: Option<u64>,
    pub network_transmit_bytes: Option<u64>,
}

/// `InOctets` and `OutOctets` of the `IpExt` rows of `/proc/<pid>/net/netstat` (a header
/// row of names, then a row of values), which Go's network counters read. The procfs crate
/// parses `/proc/net/snmp` but not this file.
fn parse_octets(text: &str) -> Option<(u64, u64)> {
    let mut rows = text.lines().filter_map(|line| line.strip_prefix("IpExt:"));
    let names: Vec<&str> = rows.next()?.split_whitespace().collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().collect();
    let value = |name: &str| {
        let index = names.iter().position(|n| *n == name)?;
        values.get(index)?.parse().ok()
    };
    Some((value("InOctets")?, value("OutOctets")?))
}

#[cfg(target_os = "linux")]
mod linux {
    use procfs::WithCurrentSystemInfo;
    use procfs::process::{LimitValue, Process};

    use super::{ProcessSample, parse_octets};

    /// A soft limit as Go reports it: "unlimited" is u64::MAX.
    fn soft_limit(value: &LimitValue) -> f64 {
        match value {
            LimitValue::Unlimited => u64::MAX as f64,
            LimitValue::Value(limit) => *limit as f64,
        }
    }

    pub fn read() -> ProcessSample {
        let Ok(me) = Process::myself() else {
            return ProcessSample::default();
        };
        let stat = me.stat().ok();
        let limits = me.limits().ok();
        let ticks = procfs::ticks_per_second() as f64;
        let boot = procfs::boot_time_secs().ok();
        let octets = std::fs::read_to_string("/proc/self/net/netstat")
            .ok()
            .as_deref()
            .and_then(parse_octets);
        ProcessSample {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
            open_fds: me.fd_count().ok().map(|count| count as f64),
            max_fds: limits
                .as_ref()
                .map(|l| soft_limit(&l.max_open_files.soft_limit)),
            virtual_memory_bytes: stat.as_ref().map(|s| s.vsize as f64),
            virtual_memory_max_bytes: limits
                .as_ref()
                .map(|l| soft_limit(&l.max_address_space.soft_limit)),
            resident_memory_bytes: stat.as_ref().map(|s| s.rss_bytes().get() as f64),
            start_time_seconds: stat
                .as_ref()
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks),
            network_receive_bytes: octets.map(|(received, _)| received),
            network_transmit_bytes: octets.map(|(_, sent)| sent),
        }
    }
}

impl ProcessSample {
    /// Reads this process now.
    pub fn read() -> Self {
        #[cfg(target_os = "linux")]
        return linux::read();
        #[cfg(not(target_os = "linux"))]
        return ProcessSample::default();
    }
}

/// The collector registered with the metrics registry: one [`ProcessSample`] per scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<f64>,
) -> std::fmt::Result {
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// `name` is given without `_total`: the OpenMetrics encoder appends it to counters.
fn counter<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<N>,
) -> std::fmt::Result
where
    ConstCounter<N>: EncodeMetric,
{
    let Some(value) = value else { return Ok(()) };
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = ProcessSample::read();
        let e = &mut encoder;
        // Names and help texts as Go's process collector writes them.
        counter(
            e,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            sample.cpu_seconds,
        )?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            sample.open_fds,
        )?;
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            sample.max_fds,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            sample.virtual_memory_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            sample.virtual_memory_max_bytes,
        )?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            sample.resident_memory_bytes,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            sample.start_time_seconds,
        )?;
        counter(
            e,
            "process_network_receive_bytes",
            "Number of bytes received by the process over the network.",
            sample.network_receive_bytes,
        )?;
        counter(
            e,
            "process_network_transmit_bytes",
            "Number of bytes sent by the process over the network.",
            sample.network_transmit_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octets_come_from_the_ipext_rows() {
        let netstat = "TcpExt: SyncookiesSent\nTcpExt: 0\n\
                       IpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 5000 7000\n";
        assert_eq!(parse_octets(netstat), Some((5000, 7000)));
        assert_eq!(parse_octets("IpExt: InOctets\nIpExt: 5\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let sample = ProcessSample::read();
        assert!(sample.cpu_seconds.is_some());
        assert!(sample.open_fds.is_some_and(|fds| fds > 0.0));
        assert!(sample.max_fds.is_some());
        assert!(sample.resident_memory_bytes.is_some_and(|rss| rss > 0.0));
        let start = sample.start_time_seconds.unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        assert!(
            start > now - 3600.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }
}
