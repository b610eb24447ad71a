/* resets: RSTs this host sends (tcp:tcp_send_reset, with the kernel's reason where the
 * tracepoint has one) and receives (tcp:tcp_receive_reset), by port. */
struct sent_key { u32 reason; u32 state; u16 lport; u16 rport; };
BPF_HASH(sent, struct sent_key, u64, 4096);
struct recv_key { u16 lport; u16 rport; };
BPF_HASH(received, struct recv_key, u64, 4096);

#ifdef HOOK_np_send_reset
int np_send_reset(void *ctx) {
    struct sent_key k = {};
#ifdef HAS_tcp_send_reset_reason
    u32 reason = 0;
    TP_READ(reason, tcp_send_reset, reason);
    k.reason = reason + 1;          /* 0 = the kernel gives no reason */
#endif
#ifdef HAS_tcp_send_reset_state
    int state = 0;
    TP_READ(state, tcp_send_reset, state);
    k.state = state;
#endif
#ifdef HAS_tcp_send_reset_sport
    u16 sp = 0, dp = 0;
    TP_READ(sp, tcp_send_reset, sport);
    TP_READ(dp, tcp_send_reset, dport);
    k.lport = sp; k.rport = dp;
#else
    /* Newer kernels carry sockaddr_in/in6 storage: the port is at offset 2, network order. */
    u16 sp = 0, dp = 0;
    bpf_probe_read_kernel(&sp, 2, (char *)ctx + OFF_tcp_send_reset_saddr + 2);
    bpf_probe_read_kernel(&dp, 2, (char *)ctx + OFF_tcp_send_reset_daddr + 2);
    k.lport = ntohs(sp); k.rport = ntohs(dp);
#endif
    { u64 __z = 0, *__v = sent.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif

#ifdef HOOK_np_receive_reset
int np_receive_reset(void *ctx) {
    u16 sp = 0, dp = 0;
    TP_READ(sp, tcp_receive_reset, sport);
    TP_READ(dp, tcp_receive_reset, dport);
    struct recv_key k = {.lport = sp, .rport = dp};
    { u64 __z = 0, *__v = received.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
