/* backlog: the backlog applications pass to listen() (syscalls:sys_enter_listen), and
 * SYN-ACK retransmits per listening port (tcp:tcp_retransmit_synack). Accept queues are
 * sampled from user space with sock_diag during the same window. */
struct listen_key { u32 tgid; u32 fd; };
struct listen_val { s64 backlog; char comm[16]; };
BPF_HASH(listens, struct listen_key, struct listen_val, 4096);
BPF_HASH(synack, u32, u64, 4096);     /* local port -> SYN-ACK retransmits */

#ifdef HOOK_np_listen
int np_listen(void *ctx) {
    u64 fd = 0, backlog = 0;
    TP_READ(fd, sys_enter_listen, fd);
    TP_READ(backlog, sys_enter_listen, backlog);
    struct listen_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (u32)fd};
    struct listen_val v = {.backlog = (s64)(int)backlog};
    bpf_get_current_comm(&v.comm, sizeof(v.comm));
    listens.update(&k, &v);
    return 0;
}
#endif

#ifdef HOOK_np_synack
int np_synack(void *ctx) {
    u16 sport = 0;
    TP_READ(sport, tcp_retransmit_synack, sport);
    u32 port = sport;
    { u64 __z = 0, *__v = synack.lookup_or_try_init(&port, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(); }
    return 0;
}
#endif
