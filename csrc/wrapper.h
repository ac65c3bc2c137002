/* The DPDK API hbgw binds to. bindgen reads this header (with the exact
 * CFLAGS pkg-config gives for libdpdk, including `-include rte_config.h
 * -march=corei7`) and the C shim below implements the static-inline
 * functions that bindgen cannot expose. */
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_telemetry.h>
#include <rte_version.h>
#include <rte_bus_vdev.h>

#include "shim.h"
