//! DPDK telemetry commands, so that `dpdk-telemetry.py -f <file-prefix>` (or
//! anything speaking DPDK's telemetry socket) reads a running gateway:
//!
//! * `/hbgw/stats` — totals and last-interval counts, per port and in all;
//! * `/hbgw/latency` — latency percentiles (ns), last interval and since start.
//!
//! The callbacks run on DPDK's telemetry thread. They read the control
//! plane's last report (a lock the workers never touch) and copy numbers into
//! DPDK's `rte_tel_data`; they never reach into a worker.

use super::ffi;
use hbgw_controlplane::stats::StatsAggregator;
use hbgw_shared::stats::{Counts, Percentiles, StatsReport};
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex, OnceLock};

static SOURCE: OnceLock<Arc<Mutex<StatsAggregator>>> = OnceLock::new();

fn report() -> Option<StatsReport> {
    let agg = SOURCE.get()?;
    let guard = agg.lock().unwrap_or_else(|p| p.into_inner());
    Some(guard.report().clone())
}

/// A dict being filled. DPDK 22.11 silently refuses names with characters
/// other than alphanumerics, `_` and `/`, so names use `_` as separator.
struct Dict(*mut ffi::rte_tel_data);

impl Dict {
    fn add(&self, name: &str, value: u64) {
        let Ok(n) = CString::new(name) else { return };
        // SAFETY: `self.0` is a dict started by `start`/`new_child`; the name
        // is NUL-terminated and copied by DPDK.
        unsafe {
            ffi::rte_tel_data_add_dict_u64(self.0, n.as_ptr(), value);
        }
    }

    fn add_str(&self, name: &str, value: &str) {
        let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else { return };
        // SAFETY: as in `add`; DPDK copies (and truncates) the value.
        unsafe {
            ffi::rte_tel_data_add_dict_string(self.0, n.as_ptr(), v.as_ptr());
        }
    }

    /// A nested dict under `name`, handed to DPDK (which frees it).
    fn child(&self, name: &str, fill: impl FnOnce(&Dict)) {
        let Ok(n) = CString::new(name) else { return };
        // SAFETY: rte_tel_data_alloc returns a fresh container or NULL.
        let child = unsafe { ffi::rte_tel_data_alloc() };
        if child.is_null() {
            return;
        }
        // SAFETY: `child` is a valid, freshly allocated container.
        unsafe {
            ffi::rte_tel_data_start_dict(child);
        }
        fill(&Dict(child));
        // SAFETY: keep = 0 transfers ownership of `child` to `self.0`, which
        // frees it after the reply; on failure DPDK does not take it, so we do.
        let rc = unsafe { ffi::rte_tel_data_add_dict_container(self.0, n.as_ptr(), child, 0) };
        if rc != 0 {
            // SAFETY: not taken by DPDK, still ours.
            unsafe { ffi::rte_tel_data_free(child) };
        }
    }
}

fn counts(d: &Dict, c: &Counts) {
    d.add("rx", c.rx);
    d.add("tx", c.tx);
    d.add("dropped", c.dropped);
    d.add("punted", c.punted);
    for (reason, n) in &c.drops {
        d.add(&format!("drop_{reason}"), *n);
    }
}

fn percentiles(d: &Dict, p: &Percentiles) {
    d.add("count", p.count);
    d.add("p50", p.p50);
    d.add("p90", p.p90);
    d.add("p99", p.p99);
    d.add("p99_9", p.p999);
    d.add("p99_99", p.p9999);
    d.add("max", p.max);
}

unsafe extern "C" fn stats_cb(_cmd: *const c_char, _params: *const c_char, info: *mut ffi::rte_tel_data) -> c_int {
    let Some(r) = report() else { return -1 };
    // SAFETY: DPDK passes a valid, empty container for the reply.
    unsafe { ffi::rte_tel_data_start_dict(info) };
    let d = Dict(info);
    d.add("uptime_ms", (r.uptime_s * 1000.0) as u64);
    d.add("interval_ms", (r.interval_s * 1000.0) as u64);
    let mut total = Counts::default();
    let mut interval = Counts::default();
    for w in &r.workers {
        total.add(&w.total);
        interval.add(&w.interval);
    }
    d.child("total", |c| counts(c, &total));
    d.child("interval", |c| counts(c, &interval));
    for p in &r.ports {
        d.child(&format!("port_{}", p.name), |c| {
            c.add_str("role", &p.role);
            c.add("id", u64::from(p.port_id));
            counts(c, &p.total);
            c.add("device_imissed", p.device.imissed);
            c.add("device_rx_nombuf", p.device.rx_nombuf);
            c.add("device_oerrors", p.device.oerrors);
        });
    }
    0
}

unsafe extern "C" fn latency_cb(_cmd: *const c_char, _params: *const c_char, info: *mut ffi::rte_tel_data) -> c_int {
    let Some(r) = report() else { return -1 };
    // SAFETY: DPDK passes a valid, empty container for the reply.
    unsafe { ffi::rte_tel_data_start_dict(info) };
    let d = Dict(info);
    d.add_str("unit", "ns");
    d.child("interval", |c| percentiles(c, &r.latency_interval));
    d.child("total", |c| percentiles(c, &r.latency_total));
    for w in &r.workers {
        d.child(&format!("worker_{}", w.id), |c| percentiles(c, &w.latency_total));
    }
    0
}

/// Registers the commands; they answer from `aggregator`'s last report.
pub fn register(aggregator: Arc<Mutex<StatsAggregator>>) -> Result<(), String> {
    if SOURCE.set(aggregator).is_err() {
        return Err("telemetry commands are already registered".into());
    }
    let commands: [(&str, ffi::telemetry_cb, &str); 2] = [
        ("/hbgw/stats", Some(stats_cb), "hbgw counters: totals, last interval, per port. No parameters."),
        ("/hbgw/latency", Some(latency_cb), "hbgw worker latency percentiles in ns. No parameters."),
    ];
    for (cmd, cb, help) in commands {
        let (c, h) = (CString::new(cmd).expect("static"), CString::new(help).expect("static"));
        // SAFETY: both strings are NUL-terminated; DPDK copies them. The
        // callbacks are valid for the process's lifetime.
        let rc = unsafe { ffi::rte_telemetry_register_cmd(c.as_ptr(), cb, h.as_ptr()) };
        if rc != 0 {
            return Err(format!("cannot register telemetry command {cmd}: {}", super::strerror(-rc)));
        }
    }
    Ok(())
}
