/* netdiag probes: shared definitions.
 *
 * Everything layout-dependent comes from netdiag as #defines placed before this header:
 *   OFF_<event>_<field>   tracepoint field offsets (and SIZE_<event>_<field> their sizes),
 *                         from the running kernel's format files
 *   <STRUCT>_<MEMBER>_OFF struct member offsets, from the running kernel's BTF (HAVE_<GROUP>
 *                         says a whole group was found; see netdiag/ebpf/btf.py)
 *   NETNS_INUM            the inode of the network namespace to count (absent: host-wide)
 *   EPH_LO, EPH_HI        that namespace's ip_local_port_range
 *   MAX_<MAP>, LOSS_<MAP> each map's capacity and its slot in `lost`
 * Nothing is compiled against the installed kernel headers' struct layouts.
 */
#include <uapi/linux/ptrace.h>

/* A tracepoint field, loaded directly from the trace record (the verifier allows aligned
 * reads of a tracepoint program's context); a variable whose size is not the field's size
 * is a compile error, not a wrong read. */
#define TP_READ(var, ev, fld) do { \
        _Static_assert(sizeof(var) == SIZE_##ev##_##fld, #ev "." #fld ": size differs"); \
        (var) = *(typeof(var) *)((char *)ctx + OFF_##ev##_##fld); \
    } while (0)
#define KREAD(var, addr) bpf_probe_read_kernel(&(var), sizeof(var), (void *)(addr))

/* Loss accounting: an event that finds its map full is counted here, per map (LOSS_<MAP>),
 * never dropped silently. Counting into a hash is written out at each site as
 *   u64 z = 0, *v = MAP.lookup_or_try_init(&key, &z); if (v) ...; else lost_inc(LOSS_MAP);
 * because bcc rewrites map calls in the source text, not inside macros. */
BPF_ARRAY(lost, u64, 16);

/* BPF_F_MMAPABLE (include/uapi/linux/bpf.h): a counter array netdiag reads through one
 * mapping of its memory instead of a lookup per slot (netdiag/ebpf/session.py _Maps). */
#define MMAPABLE (1U << 10)

static inline void lost_inc(int slot) {
    u64 *x = lost.lookup(&slot);
    if (x)
        __sync_fetch_and_add(x, 1);
}

/* log2 histogram slot: 0 holds the value 0, slot k >= 1 holds [2^(k-1), 2^k - 1]
 * (bpftrace's hist() buckets). bpf_log2l(v) is floor(log2(v)) + 1 for v >= 1. */
static inline u32 slot_of(u64 v) {
    return v ? bpf_log2l(v) : 0;
}

/* ---- namespaces -------------------------------------------------------------------------- */

#ifdef NETNS_INUM
/* The counted namespace's struct net, learnt from the first socket or device seen in it, so
 * that each later event in it costs one read (the pointer) instead of two (pointer, then
 * inode): about 35 ns per event (bench/probes.py). Safe because netdiag holds the namespace
 * open for the whole window (ebpf/session.py): it cannot be freed, so no other namespace can
 * be given the same address while these programs run. */
BPF_ARRAY(counted_net, u64, 1);
#endif

#ifdef NET_INUM_OFF
/* net->ns.inum, 0 for no namespace. */
static inline u32 net_inum(u64 net) {
    u32 inum = 0;
    if (!net)
        return 0;
#ifdef NETNS_INUM
    int z = 0;
    u64 *known = counted_net.lookup(&z);
    if (known && *known == net)
        return NETNS_INUM;
#endif
    KREAD(inum, net + NET_INUM_OFF);
#ifdef NETNS_INUM
    if (known && inum == NETNS_INUM)
        *known = net;
#endif
    return inum;
}
#endif

#ifdef HAVE_SK_NETNS
/* sk->__sk_common.skc_net.net->ns.inum */
static inline u32 sk_netns(u64 sk) {
    u64 net = 0;
    if (!sk)
        return 0;
    KREAD(net, sk + SKC_NET_OFF);
    return net_inum(net);
}
#endif

/* A socket of the namespace being counted (any socket when the run is host-wide). */
#ifdef NETNS_INUM
#define SK_COUNTED(sk) NS_OK(sk_netns(sk))
#else
#define SK_COUNTED(sk) 1
#endif

#ifdef NETNS_INUM
#define NS_OK(inum) ((inum) == NETNS_INUM)
#else
#define NS_OK(inum) 1
#endif

#if defined(HAVE_SKB_NETNS) && defined(HAVE_SK_NETNS)
/* A packet's namespace: the socket that received it (rx_sk, where the tracepoint has one),
 * else its device's (skb->dev->nd_net.net), else its socket's; 0 when none is known. */
static inline u32 skb_netns(u64 skb, u64 rx_sk) {
    u64 dev = 0, net = 0, sk = 0;
    u32 inum = 0;
    if (rx_sk)
        return sk_netns(rx_sk);
    KREAD(dev, skb + SKB_DEV_OFF);
    if (dev) {
        KREAD(net, dev + DEV_NET_OFF);
        inum = net_inum(net);
        if (inum)
            return inum;
    }
    KREAD(sk, skb + SKB_SK_OFF);
    return sk ? sk_netns(sk) : 0;
}
#endif

/* ---- ports: ephemeral ports aggregated away in the kernel ------------------------------- */

/* Ports that had a listener in the namespace when the window opened (filled by netdiag): a
 * service port stays a service port even inside ip_local_port_range. An array indexed by
 * port: one load, no hashing, on the hot path of every client-side event. */
BPF_ARRAY(listening, u8, 65536);

/* A port that had a listener in the namespace when the window opened. */
static inline int is_listening(u16 port) {
    int p = port;
    u8 *l = listening.lookup(&p);
    return l && *l;
}

#ifdef EPH_LO
static inline int is_ephemeral(u16 port) {
    return port >= EPH_LO && port <= EPH_HI;
}
/* A local port as the report shows it: 0 for a client's ephemeral port. */
static inline u16 local_shown(u16 port) {
    if (is_ephemeral(port) && !is_listening(port))
        return 0;
    return port;
}
/* A remote port as the report shows it: 0 when it is a client's ephemeral port. */
static inline u16 remote_shown(u16 port) {
    return is_ephemeral(port) ? 0 : port;
}
#else
static inline u16 local_shown(u16 port) { return port; }
static inline u16 remote_shown(u16 port) { return port; }
#endif

#ifdef HAVE_SK_PORTS
/* The socket's peer, for keys: the address only when the remote port is a service port
 * (a client's view of its destination); a server's peers are unbounded and left out. */
static inline void sk_peer(u64 sk, u16 *family, u16 *lport, u16 *rport, u8 *daddr) {
    u16 num = 0, dport = 0, fam = 0;
    KREAD(num, sk + SKC_NUM_OFF);
    KREAD(dport, sk + SKC_DPORT_OFF);
    KREAD(fam, sk + SKC_FAMILY_OFF);
    *family = fam;
    *lport = local_shown(num);
    *rport = remote_shown(ntohs(dport));
    if (*rport) {
        if (fam == 2)
            bpf_probe_read_kernel(daddr, 4, (void *)(sk + SKC_DADDR_OFF));
        else
            bpf_probe_read_kernel(daddr, 16, (void *)(sk + SKC_V6_DADDR_OFF));
    }
}
static inline u8 sk_state(u64 sk) {
    u8 st = 0;
    KREAD(st, sk + SKC_STATE_OFF);
    return st;
}
static inline u16 sk_family(u64 sk) {
    u16 fam = 0;
    KREAD(fam, sk + SKC_FAMILY_OFF);
    return fam;
}
/* An IPv4 or IPv6 socket (not netlink, not unix) of the namespace being counted; its family
 * in *family. */
static inline int inet_sk_counted(u64 sk, u16 *family) {
    *family = sk_family(sk);
    if (*family != 2 && *family != 10)
        return 0;
    if (!SK_COUNTED(sk))
        return 0;
    return 1;
}
#endif

#ifdef HAVE_SK_INODE
/* The socket's inode number (what /proc/PID/fd and ss show), 0 for a socket without file. */
static inline u64 sk_inode(u64 sk) {
    u64 sock = 0, ino = 0;
    KREAD(sock, sk + SK_SOCKET_OFF);
    if (!sock)
        return 0;
    KREAD(ino, sock + SOCKALLOC_INODE_OFF + INODE_INO_OFF);
    return ino;
}
#endif

#ifdef HAVE_FD_SOCKET
/* Members of one struct that lie close together are copied in one read (one helper call
 * instead of one per member): [LO, HI) of the struct, at most 64 bytes, else one read each. */
#define MIN2_(a, b) ((a) < (b) ? (a) : (b))
#define MAX2_(a, b) ((a) > (b) ? (a) : (b))
#define FDT_LO_ MIN2_(FDT_MAX_OFF, FDT_FD_OFF)
#define FDT_HI_ MAX2_(FDT_MAX_OFF + 4, FDT_FD_OFF + 8)
#define SOCKET_LO_ MIN2_(SOCKET_TYPE_OFF, MIN2_(SOCKET_FILE_OFF, SOCKET_SK_OFF))
#define SOCKET_HI_ MAX2_(SOCKET_TYPE_OFF + 2, MAX2_(SOCKET_FILE_OFF + 8, SOCKET_SK_OFF + 8))
/* A member of a block copied from [LO, HI) of its struct. */
#define FROM_BLOCK(var, block, lo, off) __builtin_memcpy(&(var), (char *)(block) + (off) - (lo), \
                                                         sizeof(var))

/* The socket behind a file descriptor of the current task, or 0: fd -> file -> struct socket,
 * whose back-pointer must lead to the same file (a file that is not a socket is refused).
 * *type gets the socket type (SOCK_STREAM 1, SOCK_DGRAM 2). It runs on every epoll_ctl and
 * accept of the host (wakeups), so fdtable and struct socket are read a block each. */
static inline u64 fd_sock(u64 fd, u16 *type) {
    u64 task = bpf_get_current_task(), files = 0, fdt = 0, arr = 0, file = 0, sock = 0;
    u64 back = 0, sk = 0;
    u32 max = 0;
    KREAD(files, task + TASK_FILES_OFF);
    if (!files)
        return 0;
    KREAD(fdt, files + FILES_FDT_OFF);
    if (!fdt)
        return 0;
#if FDT_HI_ - FDT_LO_ <= 64
    u64 fb[8] = {};
    bpf_probe_read_kernel(fb, FDT_HI_ - FDT_LO_, (void *)(fdt + FDT_LO_));
    FROM_BLOCK(max, fb, FDT_LO_, FDT_MAX_OFF);
    FROM_BLOCK(arr, fb, FDT_LO_, FDT_FD_OFF);
#else
    KREAD(max, fdt + FDT_MAX_OFF);
    KREAD(arr, fdt + FDT_FD_OFF);
#endif
    if (fd >= max || !arr)
        return 0;
    KREAD(file, arr + fd * 8);
    if (!file)
        return 0;
    KREAD(sock, file + FILE_PRIV_OFF);
    if (!sock)
        return 0;
#if SOCKET_HI_ - SOCKET_LO_ <= 64
    u64 sb[8] = {};
    bpf_probe_read_kernel(sb, SOCKET_HI_ - SOCKET_LO_, (void *)(sock + SOCKET_LO_));
    FROM_BLOCK(back, sb, SOCKET_LO_, SOCKET_FILE_OFF);
    if (back != file)
        return 0;
    FROM_BLOCK(*type, sb, SOCKET_LO_, SOCKET_TYPE_OFF);
    FROM_BLOCK(sk, sb, SOCKET_LO_, SOCKET_SK_OFF);
#else
    KREAD(back, sock + SOCKET_FILE_OFF);
    if (back != file)
        return 0;
    KREAD(*type, sock + SOCKET_TYPE_OFF);
    KREAD(sk, sock + SOCKET_SK_OFF);
#endif
    return sk;
}
#endif
