//! Ethdev ports: found by the name the user gave (`net_pcap0`,
//! `0000:03:00.0`) or by id; configured with one rx queue set (RSS where the
//! device supports it) and one tx queue per worker; started, stopped, closed.

use super::mempool::Mempool;
use super::{ffi, strerror};
use hbgw_shared::stats::DeviceCounts;
use std::ffi::{c_char, CStr, CString};

/// A port that exists (`rte_eth_dev_is_valid_port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// DPDK port id.
    pub id: u16,
    /// Device name.
    pub name: String,
}

/// How a port is set up.
#[derive(Debug, Clone, Copy)]
pub struct PortSetup {
    /// Receive queues (spread by RSS when more than one).
    pub rx_queues: u16,
    /// Transmit queues: one per worker.
    pub tx_queues: u16,
    /// Descriptors per rx queue (adjusted to the device's limits).
    pub rx_descriptors: u16,
    /// Descriptors per tx queue (adjusted to the device's limits).
    pub tx_descriptors: u16,
}

/// What happened when the port was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSetupOutcome {
    /// Whether RSS spreads flows over the rx queues.
    pub rss: bool,
    /// Descriptors actually used.
    pub rx_descriptors: u16,
    /// Descriptors actually used.
    pub tx_descriptors: u16,
}

fn port_name(id: u16) -> Option<String> {
    let mut buf = [0 as c_char; ffi::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: the buffer has the size DPDK's longest port name needs.
    let rc = unsafe { ffi::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: DPDK wrote a NUL-terminated name into the buffer.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Every port EAL probed, in id order.
pub fn available() -> Vec<Port> {
    let mut out = Vec::new();
    // SAFETY: iterating port ids is read-only and valid after EAL init.
    let mut id = unsafe { ffi::rte_eth_find_next_owned_by(0, u64::from(ffi::RTE_ETH_DEV_NO_OWNER)) };
    while id < u64::from(ffi::RTE_MAX_ETHPORTS) {
        let port = id as u16;
        if let Some(name) = port_name(port) {
            out.push(Port { id: port, name });
        }
        // SAFETY: as above.
        id = unsafe { ffi::rte_eth_find_next_owned_by(port + 1, u64::from(ffi::RTE_ETH_DEV_NO_OWNER)) };
    }
    out
}

fn dev_info(id: u16) -> Result<ffi::rte_eth_dev_info, String> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: `info` is a valid out-parameter of the right type.
    let rc = unsafe { ffi::rte_eth_dev_info_get(id, &mut info) };
    if rc != 0 {
        return Err(format!("cannot read device info of port {id}: {}", strerror(-rc)));
    }
    Ok(info)
}

impl Port {
    /// Finds a port by device name or numeric id.
    pub fn find(name: &str) -> Result<Port, String> {
        let ports = available();
        if let Some(p) = ports.iter().find(|p| p.name == name) {
            return Ok(p.clone());
        }
        if let Ok(id) = name.parse::<u16>() {
            if let Some(p) = ports.iter().find(|p| p.id == id) {
                return Ok(p.clone());
            }
        }
        let names: Vec<String> = ports.iter().map(|p| format!("{} ({})", p.name, p.id)).collect();
        Err(format!(
            "port `{name}` does not exist (ports: {}): create it with --vdev or allow it with -a before `--`, or fix the name in the config",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        ))
    }

    /// The driver's name (`net_pcap`, `net_null`, ...).
    pub fn driver(&self) -> String {
        dev_info(self.id)
            .ok()
            .filter(|i| !i.driver_name.is_null())
            // SAFETY: driver_name is a static NUL-terminated string of the PMD.
            .map(|i| unsafe { CStr::from_ptr(i.driver_name) }.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Configures queues (RSS across rx queues when the device can hash) and
    /// puts the port in promiscuous mode: a bridge forwards every frame, not
    /// only those for its own MAC.
    pub fn setup(&self, setup: PortSetup, pool: &Mempool) -> Result<PortSetupOutcome, String> {
        let info = dev_info(self.id)?;
        let name = &self.name;
        if setup.rx_queues > info.max_rx_queues {
            return Err(format!(
                "port {name} supports at most {} rx queues, {} asked: lower dataplane.rx_queues",
                info.max_rx_queues, setup.rx_queues
            ));
        }
        if setup.tx_queues > info.max_tx_queues {
            return Err(format!(
                "port {name} supports at most {} tx queues and each of the {} workers needs one: use fewer workers",
                info.max_tx_queues, setup.tx_queues
            ));
        }
        let mut conf = ffi::rte_eth_conf::default();
        let rss = setup.rx_queues > 1 && info.flow_type_rss_offloads != 0;
        if rss {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            // Hash on every flow type the device can: flows stay on one queue
            // (and so one worker) whatever their protocol.
            conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads;
        }
        // SAFETY: `conf` is a fully initialised configuration; the port id is
        // valid and the port is stopped (not yet started).
        let rc = unsafe { ffi::rte_eth_dev_configure(self.id, setup.rx_queues, setup.tx_queues, &conf) };
        if rc != 0 {
            return Err(format!("cannot configure port {name}: {}", strerror(-rc)));
        }
        let (mut rxd, mut txd) = (setup.rx_descriptors, setup.tx_descriptors);
        // SAFETY: valid out-parameters; the port is configured.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rxd, &mut txd) };
        if rc != 0 {
            return Err(format!("cannot adjust descriptor counts of port {name}: {}", strerror(-rc)));
        }
        // SAFETY: reads the device's NUMA socket; -1 (any) for virtual devices.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) } as u32;
        for q in 0..setup.rx_queues {
            // SAFETY: queue index < configured count; NULL conf means the
            // device's defaults; the pool outlives the port (the gateway
            // closes ports before the pool's memory goes away with EAL).
            let rc = unsafe { ffi::rte_eth_rx_queue_setup(self.id, q, rxd, socket, std::ptr::null(), pool.as_ptr()) };
            if rc != 0 {
                return Err(format!("cannot set up rx queue {q} of port {name}: {}", strerror(-rc)));
            }
        }
        for q in 0..setup.tx_queues {
            // SAFETY: as above, for tx.
            let rc = unsafe { ffi::rte_eth_tx_queue_setup(self.id, q, txd, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(format!("cannot set up tx queue {q} of port {name}: {}", strerror(-rc)));
            }
        }
        // SAFETY: valid port id. Some virtual devices cannot change the mode
        // (they already see everything); that is not an error for a bridge.
        let _ = unsafe { ffi::rte_eth_promiscuous_enable(self.id) };
        Ok(PortSetupOutcome { rss, rx_descriptors: rxd, tx_descriptors: txd })
    }

    /// Starts the port.
    pub fn start(&self) -> Result<(), String> {
        // SAFETY: the port is configured with all its queues set up.
        let rc = unsafe { ffi::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(format!("cannot start port {}: {}", self.name, strerror(-rc)));
        }
        Ok(())
    }

    /// Stops and closes the port (a pcap device flushes its tx file here).
    pub fn stop_and_close(&self) {
        // SAFETY: no worker polls the port any more (the gateway stops
        // workers first); stopping a stopped port is harmless.
        unsafe {
            let _ = ffi::rte_eth_dev_stop(self.id);
            let _ = ffi::rte_eth_dev_close(self.id);
        }
    }

    /// The device's own counters.
    pub fn device_counts(id: u16) -> DeviceCounts {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: `s` is a valid out-parameter; reading stats is safe from a
        // non-worker thread for the PMDs we use (they sum per-queue counters).
        let rc = unsafe { ffi::rte_eth_stats_get(id, &mut s) };
        if rc != 0 {
            return DeviceCounts::default();
        }
        DeviceCounts {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }
}

/// A port's link as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Whether the link is up (for `net_memif`: whether the peer is connected).
    pub up: bool,
    /// Speed in Mbit/s, when the device states one.
    pub speed_mbps: Option<u32>,
}

impl Port {
    /// The link's state, without waiting for autonegotiation.
    pub fn link(&self) -> Result<Link, String> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: `link` is a valid out-parameter of the right type; the port id is valid.
        let rc = unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut link) };
        if rc != 0 {
            return Err(format!("cannot read the link of port {}: {}", self.name, strerror(-rc)));
        }
        let speed = link.link_speed;
        let stated = speed != ffi::RTE_ETH_SPEED_NUM_NONE && speed != ffi::RTE_ETH_SPEED_NUM_UNKNOWN;
        Ok(Link { up: link.link_status() != 0, speed_mbps: stated.then_some(speed) })
    }
}

/// Creates a virtual device after EAL init (`rte_vdev_init`), e.g. for tests.
pub fn create_vdev(name: &str, args: &str) -> Result<(), String> {
    let cname = CString::new(name).map_err(|_| "vdev name contains NUL".to_owned())?;
    let cargs = CString::new(args).map_err(|_| "vdev args contain NUL".to_owned())?;
    // SAFETY: both strings are NUL-terminated and live across the call.
    let rc = unsafe { ffi::rte_vdev_init(cname.as_ptr(), cargs.as_ptr()) };
    if rc != 0 {
        return Err(format!("cannot create {name}: {}", strerror(-rc)));
    }
    Ok(())
}
