/* resets: RSTs this host sends (tcp:tcp_send_reset, with the kernel's reason where the
 * tracepoint has one) by reason, socket state and local port, and RSTs it receives
 * (tcp:tcp_receive_reset) by local port and, for a client's destination, remote address
 * and port. A RST sent without a socket (to a closed port) is placed in the namespace of
 * the device the offending segment came in on. A RST that answers a segment (tcp_v4/v6_send_reset:
 * the tracepoint's skb is the segment received) is told apart when that segment was a SYN
 * without ACK: a refused connection attempt (the client's connect() gets ECONNREFUSED), not
 * the end of a connection. The flags are read from the segment's TCP header at skb->head +
 * skb->transport_header (BTF offsets); a RST a socket sends on its own (tcp_send_active_reset)
 * has no skb. syn: 0 = not known (no BTF offsets), 1 = answers a SYN, 2 = anything else. */
struct sent_key { u32 reason; u32 state; u16 lport; u8 syn; u8 pad; };
BPF_F_TABLE("hash", struct sent_key, u64, sent, MAX_SENT, BPF_F_NO_PREALLOC);
struct recv_key { u16 family; u16 lport; u16 rport; u16 pad; u8 daddr[16]; };
BPF_F_TABLE("hash", struct recv_key, u64, received, MAX_RECEIVED, BPF_F_NO_PREALLOC);
BPF_ARRAY(unattributed, u64, 1);

#ifdef HOOK_np_send_reset
int np_send_reset(void *ctx) {
    struct sent_key k = {};
    u64 skb = 0;
#ifdef HAS_tcp_send_reset_skbaddr
    TP_READ(skb, tcp_send_reset, skbaddr);
#endif
#ifdef NETNS_INUM
    u64 sk = 0;
    u32 inum = 0;
#ifdef HAS_tcp_send_reset_skaddr
    TP_READ(sk, tcp_send_reset, skaddr);
#endif
    if (sk) {
        inum = sk_netns(sk);
    } else {
#if defined(HAS_tcp_send_reset_skbaddr) && defined(HAVE_SKB_NETNS)
        if (skb)
            inum = skb_netns(skb, 0);
#endif
    }
    if (!inum) {
        int z = 0;
        u64 *u = unattributed.lookup(&z);
        if (u)
            __sync_fetch_and_add(u, 1);
        return 0;
    }
    if (!NS_OK(inum))
        return 0;
#endif
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
    u16 sp = 0;
#ifdef HAS_tcp_send_reset_sport
    TP_READ(sp, tcp_send_reset, sport);
#else
    /* Newer kernels carry sockaddr_in/in6 storage: the port is at offset 2, network order. */
    bpf_probe_read_kernel(&sp, 2, (char *)ctx + OFF_tcp_send_reset_saddr + 2);
    sp = ntohs(sp);
#endif
    k.lport = local_shown(sp);
#if defined(HAVE_SKB_HEADERS) && defined(HAS_tcp_send_reset_skbaddr)
    if (!skb) {
        k.syn = 2;                      /* no segment answered: the socket's own RST */
    } else {
        unsigned char *head = 0;
        u16 th = 0xffff;
        bpf_probe_read_kernel(&head, sizeof(head), (char *)skb + SKB_HEAD_OFF);
        bpf_probe_read_kernel(&th, sizeof(th), (char *)skb + SKB_TH_OFF);
        if (head && th != 0xffff) {
            u8 flags = 0;               /* byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN */
            if (bpf_probe_read_kernel(&flags, 1, head + th + 13) == 0)
                k.syn = (flags & 0x16) == 0x02 ? 1 : 2;
        }
    }
#endif
    u64 z = 0, *v = sent.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_SENT);
    return 0;
}
#endif

#ifdef HOOK_np_receive_reset
int np_receive_reset(void *ctx) {
    u16 sp = 0, dp = 0, family = 0;
    u64 sk = 0;
    TP_READ(sk, tcp_receive_reset, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(sp, tcp_receive_reset, sport);
    TP_READ(dp, tcp_receive_reset, dport);
    TP_READ(family, tcp_receive_reset, family);
    struct recv_key k = {.family = family, .lport = local_shown(sp), .rport = remote_shown(dp)};
    if (k.rport) {
        if (family == 2)
            bpf_probe_read_kernel(&k.daddr, 4, (char *)ctx + OFF_tcp_receive_reset_daddr);
        else
            bpf_probe_read_kernel(&k.daddr, 16, (char *)ctx + OFF_tcp_receive_reset_daddr_v6);
    }
    u64 z = 0, *v = received.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_RECEIVED);
    return 0;
}
#endif
