/* hbgw's C shim: real functions wrapping DPDK's static-inline fast-path
 * helpers, so Rust can call them. Every function is a thin forwarder;
 * no logic lives here. */
#ifndef HBGW_SHIM_H
#define HBGW_SHIM_H

#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t hbgw_rx_burst(uint16_t port_id, uint16_t queue_id,
                       struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t hbgw_tx_burst(uint16_t port_id, uint16_t queue_id,
                       struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *hbgw_pktmbuf_alloc(struct rte_mempool *mp);
int hbgw_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                            unsigned count);
void hbgw_pktmbuf_free(struct rte_mbuf *m);
void hbgw_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
char *hbgw_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint64_t hbgw_rdtsc(void);
uint64_t hbgw_get_tsc_hz(void);
int hbgw_errno(void);
unsigned hbgw_lcore_id(void);
unsigned hbgw_mempool_avail_count(const struct rte_mempool *mp);

#endif
