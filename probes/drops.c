/* drops: packets freed as dropped (skb:kfree_skb) by reason, protocol and port. The reason
 * names are read from the running kernel's format file by netdiag, not compiled in here. The
 * tracepoint's args struct has an enum field bcc 0.26 cannot parse, so the fields are read
 * at their format-file offsets. The port comes from the packet itself, at sk_buff offsets
 * netdiag looks up in the running kernel's BTF (SKB_*_OFF); without BTF it is left out. */
struct drop_key { u32 reason; u16 protocol; u16 port; u8 l4; u8 pad[3]; };
BPF_HASH(drops, struct drop_key, u64, 4096);

#ifdef HOOK_np_kfree_skb
int np_kfree_skb(void *ctx) {
    struct drop_key k = {};
    u16 protocol = 0;
    TP_READ(protocol, kfree_skb, protocol);
    k.protocol = protocol;
#ifdef HAS_kfree_skb_reason
    u32 reason = 0;
    TP_READ(reason, kfree_skb, reason);
    k.reason = reason;
#endif
#ifdef SKB_HEAD_OFF
    u64 skb = 0;
    TP_READ(skb, kfree_skb, skbaddr);
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
            k.port = ntohs(dport);
            k.l4 = l4;
        }
    }
#endif
    { u64 __z = 0, *__v = drops.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
