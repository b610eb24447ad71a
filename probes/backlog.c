/* backlog: the backlog applications pass to listen() (syscalls:sys_enter_listen), by the
 * socket's inode (so the call is matched to its listener exactly, even after the process
 * exited), and SYN-ACK retransmits per listening port (tcp:tcp_retransmit_synack). Accept
 * queues are sampled from user space with sock_diag during the same window. */
struct listen_val { s64 backlog; u32 tgid; u16 port; u16 family; char comm[16]; };
BPF_F_TABLE("hash", u64, struct listen_val, listens, MAX_LISTENS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, u64, synack, MAX_SYNACK, BPF_F_NO_PREALLOC);

#ifdef HOOK_np_listen
int np_listen(void *ctx) {
    u64 fd = 0, backlog = 0;
    u16 type = 0;
    TP_READ(fd, sys_enter_listen, fd);
    TP_READ(backlog, sys_enter_listen, backlog);
    u64 sk = fd_sock(fd, &type);
    if (!sk || type != 1)                       /* SOCK_STREAM */
        return 0;
    u16 family = 0;
    if (!inet_sk_counted(sk, &family))  /* TCP/UDP over IPv4/IPv6, this namespace */
        return 0;
    u64 ino = sk_inode(sk);
    struct listen_val v = {.backlog = (s64)(int)backlog,
                           .tgid = bpf_get_current_pid_tgid() >> 32, .family = family};
    u16 num = 0;
    KREAD(num, sk + SKC_NUM_OFF);
    v.port = num;
    bpf_get_current_comm(&v.comm, sizeof(v.comm));
    if (listens.update(&ino, &v) != 0)
        lost_inc(LOSS_LISTENS);
    return 0;
}
#endif

#ifdef HOOK_np_synack
int np_synack(void *ctx) {
    u16 sport = 0;
    u64 sk = 0;
    TP_READ(sk, tcp_retransmit_synack, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(sport, tcp_retransmit_synack, sport);
    u32 port = sport;
    u64 z = 0, *v = synack.lookup_or_try_init(&port, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_SYNACK);
    return 0;
}
#endif
