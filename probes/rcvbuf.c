/* rcvbuf: receive-buffer autotuning at work (tcp:tcp_rcv_space_adjust, tcp:tcp_rcvbuf_grow),
 * receive queues full (sock:sock_rcvqueue_full), protocol memory limits hit
 * (sock:sock_exceed_buf_limit), and processes fixing SO_RCVBUF/SO_SNDBUF
 * (syscalls:sys_enter_setsockopt), which turns autotuning off for that socket. */
BPF_HASH(adjust, u32, u64, 4096);           /* local port -> tcp_rcv_space_adjust calls */
struct grow_val { u64 count; u32 max_rcvbuf; u32 last_rcvbuf; };
BPF_HASH(grow, u32, struct grow_val, 4096); /* local port -> growth */
BPF_ARRAY(limits, u64, 2);                  /* [0] rcvqueue_full, [1] exceed_buf_limit */
struct opt_key { u32 tgid; u32 optname; s32 value; char comm[16]; };
BPF_HASH(setopts, struct opt_key, u64, 4096);

#ifdef HOOK_np_space_adjust
int np_space_adjust(void *ctx) {
    u16 sport = 0;
    TP_READ(sport, tcp_rcv_space_adjust, sport);
    u32 port = sport;
    { u64 __z = 0, *__v = adjust.lookup_or_try_init(&port, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif

#ifdef HOOK_np_rcvbuf_grow
int np_rcvbuf_grow(void *ctx) {
    u16 sport = 0;
    u32 rcvbuf = 0;
    TP_READ(sport, tcp_rcvbuf_grow, sport);
    TP_READ(rcvbuf, tcp_rcvbuf_grow, rcvbuf);
    u32 port = sport;
    struct grow_val zero = {};
    struct grow_val *v = grow.lookup_or_try_init(&port, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        v->last_rcvbuf = rcvbuf;
        if (rcvbuf > v->max_rcvbuf) v->max_rcvbuf = rcvbuf;
    }
    return 0;
}
#endif

#ifdef HOOK_np_rcvqueue_full
int np_rcvqueue_full(void *ctx) { int i = 0; u64 *v = limits.lookup(&i); if (v) __sync_fetch_and_add(v, 1); return 0; }
#endif
#ifdef HOOK_np_exceed_limit
int np_exceed_limit(void *ctx) { int i = 1; u64 *v = limits.lookup(&i); if (v) __sync_fetch_and_add(v, 1); return 0; }
#endif

#ifdef HOOK_np_setsockopt
int np_setsockopt(void *ctx) {
    u64 level = 0, optname = 0, optval = 0;
    TP_READ(level, sys_enter_setsockopt, level);
    TP_READ(optname, sys_enter_setsockopt, optname);
    if (level != 1)                 /* SOL_SOCKET */
        return 0;
    if (optname != 7 && optname != 8 && optname != 32 && optname != 33)
        return 0;                   /* SO_SNDBUF, SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE */
    TP_READ(optval, sys_enter_setsockopt, optval);
    struct opt_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .optname = (u32)optname};
    bpf_probe_read_user(&k.value, sizeof(k.value), (void *)optval);
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    { u64 __z = 0, *__v = setopts.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
