/* drops: packets freed as dropped (skb:kfree_skb) by reason and protocol. The reason names
 * are read from the running kernel's format file by netdiag, not compiled in here. The
 * tracepoint's args struct has an enum field bcc 0.26 cannot parse, so the fields are read
 * at their format-file offsets. */
struct drop_key { u32 reason; u16 protocol; u16 pad; };
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
    { u64 __z = 0, *__v = drops.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
