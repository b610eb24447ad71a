/* drops: packets freed as dropped (skb:kfree_skb) by reason, protocol and destination port
 * (0 for a client's ephemeral port). The reason names are read from the running kernel's
 * format file by netdiag, not compiled in here. The packet's namespace is that of the socket
 * that received it (rx_sk, 6.12+), else of its device, else of its socket; a drop with none
 * of them cannot be placed in a namespace and is counted apart (`unattributed`). */
struct drop_key { u32 reason; u16 protocol; u16 port; u8 l4; u8 pad[3]; };
BPF_F_TABLE("hash", struct drop_key, u64, drops, MAX_DROPS, BPF_F_NO_PREALLOC);
BPF_ARRAY(unattributed, u64, 1);

#ifdef HOOK_np_kfree_skb
int np_kfree_skb(void *ctx) {
    struct drop_key k = {};
    u16 protocol = 0;
    u64 skb = 0;
    TP_READ(skb, kfree_skb, skbaddr);
#ifdef NETNS_INUM
    u64 rx_sk = 0;
#ifdef HAS_kfree_skb_rx_sk
    TP_READ(rx_sk, kfree_skb, rx_sk);
#endif
    u32 inum = skb_netns(skb, rx_sk);
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
    TP_READ(protocol, kfree_skb, protocol);
    k.protocol = protocol;
#ifdef HAS_kfree_skb_reason
    u32 reason = 0;
    TP_READ(reason, kfree_skb, reason);
    k.reason = reason;
#endif
#ifdef HAVE_SKB_HEADERS
    unsigned char *head = 0;
    u16 nh = 0;
    bpf_probe_read_kernel(&head, sizeof(head), (char *)skb + SKB_HEAD_OFF);
    bpf_probe_read_kernel(&nh, sizeof(nh), (char *)skb + SKB_NH_OFF);
    if (head && nh != 0xffff) {
        u8 l4 = 0;
        u32 thoff = 0;
        if (protocol == 0x0800) {               /* IPv4: header length from the IHL */
            u8 vihl = 0;
            bpf_probe_read_kernel(&vihl, 1, head + nh);
            bpf_probe_read_kernel(&l4, 1, head + nh + 9);
            thoff = nh + (vihl & 0x0f) * 4;
        } else if (protocol == 0x86DD) {        /* IPv6: next header right after 40 bytes */
            bpf_probe_read_kernel(&l4, 1, head + nh + 6);
            thoff = nh + 40;
        }
        if (l4 == 6 || l4 == 17) {             /* TCP, UDP: the destination port */
            u16 dport = 0;
            bpf_probe_read_kernel(&dport, 2, head + thoff + 2);
            k.port = local_shown(ntohs(dport));
            k.l4 = l4;
        }
    }
#endif
    u64 z = 0, *v = drops.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_DROPS);
    return 0;
}
#endif
