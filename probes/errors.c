/* errors: what applications are told. Failed socket system calls (connect, bind,
 * accept/accept4, read/readv/recvfrom/recvmsg/recvmmsg, write/writev/sendto/sendmsg/sendmmsg)
 * counted by errno, process and, for connect, destination (for bind, the port asked for);
 * plus the errors non-blocking clients learn
 * from getsockopt(SO_ERROR) after EINPROGRESS (that is how a refused or timed-out
 * asynchronous connect() reaches the application).
 *
 * One raw tracepoint at every system call's exit (raw_syscalls:sys_exit: regs, ret) reads
 * the call number and its arguments from the saved registers, so nothing is stored per call
 * and a successful call costs one comparison. The fd is followed to its socket: files, pipes
 * and non-IP sockets are left out, and the socket's namespace filters. EAGAIN (a
 * non-blocking call with nothing to do) and EINPROGRESS/EALREADY (a non-blocking connect
 * under way) are how non-blocking I/O works, not failures, and are not counted.
 * x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl, a stable ABI). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_BIND 49
#define NR_GETSOCKOPT 55
#define NR_ACCEPT4 288
#define NR_RECVMMSG 299
#define NR_SENDMMSG 307
#define USER64_CS 0x33              /* a 64-bit task (compat tasks use other numbers) */
#define EAGAIN_ 11
#define EALREADY_ 114
#define EINPROGRESS_ 115

struct err_key {
    u32 tgid; u16 err; u16 nr;
    u16 family; u16 lport; u16 rport; u16 pad;
    u8 daddr[16];
};
struct err_val { u64 count; char comm[16]; };
BPF_F_TABLE("hash", struct err_key, struct err_val, failures, MAX_FAILURES, BPF_F_NO_PREALLOC);

static inline int tracked(u64 nr) {
    switch (nr) {
    case NR_READ: case NR_WRITE: case NR_READV: case NR_WRITEV: case NR_CONNECT:
    case NR_ACCEPT: case NR_SENDTO: case NR_RECVFROM: case NR_SENDMSG: case NR_RECVMSG:
    case NR_ACCEPT4: case NR_RECVMMSG: case NR_SENDMMSG: case NR_GETSOCKOPT: case NR_BIND:
        return 1;
    }
    return 0;
}

#ifdef HOOK_np_sys_exit
/* raw tracepoint sys_exit(struct pt_regs *regs, long ret) */
int np_sys_exit(struct bpf_raw_tracepoint_args *ctx) {
    long ret = (long)ctx->args[1];
    if (ret > 0)
        return 0;
    u64 regs = ctx->args[0], nr = 0;
    KREAD(nr, regs + REGS_NR_OFF);
    if (!tracked(nr))
        return 0;
    if (ret == 0 && nr != NR_GETSOCKOPT)
        return 0;
    u64 cs = 0;
    KREAD(cs, regs + REGS_CS_OFF);
    if (cs != USER64_CS)
        return 0;
    long err = -ret;
    if (err == EAGAIN_)
        return 0;
    if (nr == NR_CONNECT && (err == EINPROGRESS_ || err == EALREADY_))
        return 0;
    u64 fd = 0, arg1 = 0;
    KREAD(fd, regs + REGS_ARG0_OFF);
    KREAD(arg1, regs + REGS_ARG1_OFF);
    if (nr == NR_GETSOCKOPT) {
        /* getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) that returned a pending error */
        u64 optname = 0, optval = 0;
        int soerr = 0;
        if (ret != 0 || arg1 != 1)
            return 0;
        KREAD(optname, regs + REGS_ARG2_OFF);
        if (optname != 4)
            return 0;
        KREAD(optval, regs + REGS_ARG3_OFF);
        bpf_probe_read_user(&soerr, sizeof(soerr), (void *)optval);
        if (soerr <= 0)
            return 0;
        err = soerr;
    }
    u16 type = 0;
    u64 sk = fd_sock(fd, &type);
    if (!sk)
        return 0;
    u16 family = 0;
    if (!inet_sk_counted(sk, &family))  /* TCP/UDP over IPv4/IPv6, this namespace */
        return 0;
    struct err_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .err = err, .nr = nr,
                        .family = family};
    if (nr == NR_CONNECT) {
        /* the destination as the application gave it: sockaddr_in / sockaddr_in6 */
        u16 sa_family = 0, port = 0;
        bpf_probe_read_user(&sa_family, 2, (void *)arg1);
        bpf_probe_read_user(&port, 2, (void *)(arg1 + 2));
        k.rport = ntohs(port);
        if (sa_family == 2) {
            bpf_probe_read_user(&k.daddr, 4, (void *)(arg1 + 4));
        } else if (sa_family == 10) {
            bpf_probe_read_user(&k.daddr, 16, (void *)(arg1 + 8));
        }
        k.family = sa_family;
    } else if (nr == NR_GETSOCKOPT) {
        /* the asynchronous connect's destination, still on the socket */
        u16 dport = 0;
        KREAD(dport, sk + SKC_DPORT_OFF);
        k.rport = ntohs(dport);
        if (family == 2)
            bpf_probe_read_kernel(&k.daddr, 4, (void *)(sk + SKC_DADDR_OFF));
        else
            bpf_probe_read_kernel(&k.daddr, 16, (void *)(sk + SKC_V6_DADDR_OFF));
    } else if (nr == NR_BIND) {
        /* the local port the application asked for (0: any, the kernel chooses) */
        u16 port = 0;
        /* unreadable (a page gone): 65535, a named port, so that it never reads as
         * bind(0), the only failure taken as evidence of binding before connect() */
        if (bpf_probe_read_user(&port, 2, (void *)(arg1 + 2)) != 0)
            port = 0xffff;
        k.lport = ntohs(port);
    } else if (nr == NR_ACCEPT || nr == NR_ACCEPT4) {
        u16 num = 0;
        KREAD(num, sk + SKC_NUM_OFF);
        k.lport = num;              /* the listener's port */
    } else {
        sk_peer(sk, &k.family, &k.lport, &k.rport, k.daddr);
    }
    struct err_val zero = {};
    struct err_val *v = failures.lookup_or_try_init(&k, &zero);
    if (!v) {
        lost_inc(LOSS_FAILURES);
        return 0;
    }
    __sync_fetch_and_add(&v->count, 1);
    if (v->comm[0] == 0)
        bpf_get_current_comm(&v->comm, sizeof(v->comm));
    return 0;
}
#endif
