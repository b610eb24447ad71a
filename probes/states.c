/* states: TCP state transitions (sock:inet_sock_set_state), aggregated in the kernel.
 * Who closes first (ESTABLISHED -> FIN_WAIT1 on this side: the TIME_WAIT maker), who enters
 * CLOSE_WAIT and how long it stays there, connection rate per peer. */
struct trans_key {
    u8 family; u8 oldstate; u8 newstate; u8 pad;
    u16 sport; u16 dport;
    u8 daddr[16];
};
BPF_HASH(transitions, struct trans_key, u64, 16384);
BPF_HASH(cw_since, u64, u64, 65536);   /* socket -> ns it entered CLOSE_WAIT */
BPF_HASH(cw_port, u64, u32, 65536);    /* socket -> local port (host order) */
BPF_HISTOGRAM(cw_ms, int, 40);         /* log2(ms) spent in CLOSE_WAIT, for those that left */

#ifdef HOOK_np_set_state
int np_set_state(void *ctx) {
    u16 protocol = 0, family = 0, sport = 0, dport = 0;
    int oldstate = 0, newstate = 0;
    u64 sk = 0;
    TP_READ(protocol, inet_sock_set_state, protocol);
    if (protocol != 6)
        return 0;
    TP_READ(oldstate, inet_sock_set_state, oldstate);
    TP_READ(newstate, inet_sock_set_state, newstate);
    TP_READ(family, inet_sock_set_state, family);
    TP_READ(sport, inet_sock_set_state, sport);
    TP_READ(dport, inet_sock_set_state, dport);
    TP_READ(sk, inet_sock_set_state, skaddr);
    struct trans_key k = {};
    k.family = family; k.oldstate = oldstate; k.newstate = newstate;
    k.sport = sport; k.dport = dport;
    if (family == 2)
        bpf_probe_read_kernel(&k.daddr, 4, (char *)ctx + OFF_inet_sock_set_state_daddr);
    else
        bpf_probe_read_kernel(&k.daddr, 16, (char *)ctx + OFF_inet_sock_set_state_daddr_v6);
    { u64 __z = 0, *__v = transitions.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    if (newstate == 8) {            /* TCP_CLOSE_WAIT */
        u64 now = bpf_ktime_get_ns();
        u32 port = sport;
        cw_since.update(&sk, &now);
        cw_port.update(&sk, &port);
    } else if (oldstate == 8) {
        u64 *since = cw_since.lookup(&sk);
        if (since) {
            u64 ms = (bpf_ktime_get_ns() - *since) / 1000000;
            cw_ms.increment(bpf_log2l(ms + 1));
            cw_since.delete(&sk);
            cw_port.delete(&sk);
        }
    }
    return 0;
}
#endif
