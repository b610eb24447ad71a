/* retrans: TCP retransmits (tcp:tcp_retransmit_skb) by peer address and port. */
struct peer_key { u16 family; u16 dport; u8 daddr[16]; };
BPF_HASH(retrans, struct peer_key, u64, 8192);

#ifdef HOOK_np_retransmit
int np_retransmit(void *ctx) {
    struct peer_key k = {};
    u16 family = 0, dport = 0;
    TP_READ(family, tcp_retransmit_skb, family);
    TP_READ(dport, tcp_retransmit_skb, dport);
    k.family = family; k.dport = dport;
    if (family == 2)
        bpf_probe_read_kernel(&k.daddr, 4, (char *)ctx + OFF_tcp_retransmit_skb_daddr);
    else
        bpf_probe_read_kernel(&k.daddr, 16, (char *)ctx + OFF_tcp_retransmit_skb_daddr_v6);
    { u64 __z = 0, *__v = retrans.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
