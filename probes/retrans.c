/* retrans: TCP retransmits (tcp:tcp_retransmit_skb) by local port (0 for a client's
 * ephemeral port), remote port and, for a client's destination, remote address. Since 6.17
 * the tracepoint also fires for attempts that failed before leaving the host (err < 0:
 * no memory, no route, device busy; TCPRetransFail): those are counted apart, as failed. */
struct peer_key { u16 family; u16 lport; u16 rport; u8 failed; u8 pad; u8 daddr[16]; };
BPF_F_TABLE("hash", struct peer_key, u64, retrans, MAX_RETRANS, BPF_F_NO_PREALLOC);

#ifdef HOOK_np_retransmit
int np_retransmit(void *ctx) {
    struct peer_key k = {};
    u16 family = 0, sport = 0, dport = 0;
    u64 sk = 0;
    TP_READ(sk, tcp_retransmit_skb, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(family, tcp_retransmit_skb, family);
    TP_READ(sport, tcp_retransmit_skb, sport);
    TP_READ(dport, tcp_retransmit_skb, dport);
#ifdef HAS_tcp_retransmit_skb_err
    int err = 0;
    TP_READ(err, tcp_retransmit_skb, err);
    k.failed = err < 0;
#endif
    k.family = family;
    k.lport = local_shown(sport);
    k.rport = remote_shown(dport);
    if (k.rport) {
        if (family == 2)
            bpf_probe_read_kernel(&k.daddr, 4, (char *)ctx + OFF_tcp_retransmit_skb_daddr);
        else
            bpf_probe_read_kernel(&k.daddr, 16, (char *)ctx + OFF_tcp_retransmit_skb_daddr_v6);
    }
    u64 z = 0, *v = retrans.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_RETRANS);
    return 0;
}
#endif
