/* rcvbuf: receive-buffer autotuning at work (tcp:tcp_rcv_space_adjust, tcp:tcp_rcvbuf_grow),
 * receive queues full (sock_rcvqueue_full) and protocol memory limits hit
 * (sock_exceed_buf_limit), both raw tracepoints so the socket (its namespace, its family) is
 * known, and processes fixing SO_RCVBUF/SO_SNDBUF on TCP/UDP sockets
 * (syscalls:sys_enter_setsockopt: the fd is followed to its socket, so netlink and unix
 * sockets, like those of `ip` and `ss`, are left out), which turns autotuning off. */
/* Adjustments by local port: the tracepoint runs on every TCP read, so an array slot (one
 * load, 512 KiB, nothing that can fill), not a hash; read through a mapping. */
BPF_F_TABLE("array", u32, u64, adjust, 65536, MMAPABLE);
struct grow_val { u64 count; u32 max_rcvbuf; u32 last_rcvbuf; };
BPF_F_TABLE("hash", u32, struct grow_val, grow, MAX_GROW, BPF_F_NO_PREALLOC);
struct limit_key { u16 lport; u8 kind; u8 family; };  /* kind 0 queue full, 1 memory limit */
BPF_F_TABLE("hash", struct limit_key, u64, limits, MAX_LIMITS, BPF_F_NO_PREALLOC);
struct opt_key { u32 tgid; u32 optname; s32 value; u16 family; u16 type; char comm[16]; };
BPF_F_TABLE("hash", struct opt_key, u64, setopts, MAX_SETOPTS, BPF_F_NO_PREALLOC);

#ifdef HOOK_np_space_adjust
/* on every TCP read: an array slot by port (one load, nothing to hash, nothing can fill) */
int np_space_adjust(void *ctx) {
    u16 sport = 0;
    u64 sk = 0;
    TP_READ(sk, tcp_rcv_space_adjust, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(sport, tcp_rcv_space_adjust, sport);
    u32 port = local_shown(sport);
    u64 *v = adjust.lookup(&port);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
#endif

#ifdef HOOK_np_rcvbuf_grow
int np_rcvbuf_grow(void *ctx) {
    u16 sport = 0;
    u32 rcvbuf = 0;
    u64 sk = 0;
    TP_READ(sk, tcp_rcvbuf_grow, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(sport, tcp_rcvbuf_grow, sport);
    TP_READ(rcvbuf, tcp_rcvbuf_grow, rcvbuf);
    u32 port = local_shown(sport);
    struct grow_val zero = {};
    struct grow_val *v = grow.lookup_or_try_init(&port, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        v->last_rcvbuf = rcvbuf;
        if (rcvbuf > v->max_rcvbuf) v->max_rcvbuf = rcvbuf;
    } else {
        lost_inc(LOSS_GROW);
    }
    return 0;
}
#endif

static inline int limit_hit(u64 sk, u8 kind) {
    u16 family = 0;
    if (!inet_sk_counted(sk, &family))  /* TCP/UDP over IPv4/IPv6, this namespace */
        return 0;
    u16 num = 0;
    KREAD(num, sk + SKC_NUM_OFF);
    struct limit_key k = {.lport = local_shown(num), .kind = kind, .family = family};
    u64 z = 0, *v = limits.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_LIMITS);
    return 0;
}

#ifdef HOOK_np_rcvqueue_full
/* raw tracepoint sock_rcvqueue_full(struct sock *sk, struct sk_buff *skb) */
int np_rcvqueue_full(struct bpf_raw_tracepoint_args *ctx) { return limit_hit(ctx->args[0], 0); }
#endif
#ifdef HOOK_np_exceed_limit
/* raw tracepoint sock_exceed_buf_limit(struct sock *sk, struct proto *prot, long allocated,
 * int kind) */
int np_exceed_limit(struct bpf_raw_tracepoint_args *ctx) { return limit_hit(ctx->args[0], 1); }
#endif

#ifdef HOOK_np_setsockopt
int np_setsockopt(void *ctx) {
    u64 fd = 0, level = 0, optname = 0, optval = 0;
    u16 type = 0;
    TP_READ(level, sys_enter_setsockopt, level);
    TP_READ(optname, sys_enter_setsockopt, optname);
    if (level != 1)                 /* SOL_SOCKET */
        return 0;
    if (optname != 7 && optname != 8 && optname != 32 && optname != 33)
        return 0;                   /* SO_SNDBUF, SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE */
    TP_READ(fd, sys_enter_setsockopt, fd);
    u64 sk = fd_sock(fd, &type);
    if (!sk)
        return 0;
    u16 family = 0;
    if (!inet_sk_counted(sk, &family))  /* TCP/UDP over IPv4/IPv6, this namespace */
        return 0;
    TP_READ(optval, sys_enter_setsockopt, optval);
    struct opt_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .optname = (u32)optname,
                        .family = family, .type = type};
    bpf_probe_read_user(&k.value, sizeof(k.value), (void *)optval);
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    u64 z = 0, *v = setopts.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_SETOPTS);
    return 0;
}
#endif
