/* states: TCP state transitions (sock:inet_sock_set_state).
 * Every change is counted by its state pair in a per-CPU array (no hashing, no shared cache
 * line, nothing that can fill). The changes the report shows by port or destination
 * (connects, failed connects, accepted, active and passive closes) are also aggregated by
 * what the report shows: the local port (0 for a client's ephemeral port), the remote port
 * (0 for a client's ephemeral port) and, for a service destination, its address. A server's
 * peers are not in the key (they are unbounded): its rows (accepted, closed actively or
 * passively, by local port) count in an array slot by port, no hashing, nothing that can
 * fill; a client's destinations are in the key, so its rows count in a hash.
 * Also: how long sockets stay in CLOSE_WAIT (per-socket entry time, tracked until they leave),
 * as a log2 histogram in ms, and those still waiting when the window closes.
 * Two ways in, one count: where the kernel allows it, a typed raw tracepoint (TYPED_np_set_state:
 * the socket's fields are plain loads and no trace record is filled); else the tracepoint,
 * reading its record. Both count the same changes by the same keys. */
struct flow_key {
    u8 family; u8 oldstate; u8 newstate; u8 pad;
    u16 lport; u16 rport;
    u8 daddr[16];
};
BPF_PERCPU_ARRAY(pairs, u64, 256);  /* index: oldstate << 4 | newstate */
BPF_F_TABLE("hash", struct flow_key, u64, flows, MAX_FLOWS, BPF_F_NO_PREALLOC);
/* A server's rows by local port: connections accepted (SYN_RECV->ESTABLISHED), closed
 * passively (ESTABLISHED->CLOSE_WAIT) and actively (ESTABLISHED->FIN_WAIT1); 32 bytes a port,
 * 2 MiB, mapped (netdiag reads the slots in use in one pass). Cannot fill. */
struct port_rows { u64 accepted; u64 passive_closes; u64 active_closes; u64 unused; };
BPF_F_TABLE("array", u32, struct port_rows, by_port, 65536, MMAPABLE);

/* CLOSE_WAIT entry time by socket: every connection closed passively enters and leaves it,
 * so this must not cost a hash insert and delete each time (they were a third of the
 * program's cost, bench/probes.py). An open-addressed array: a socket's slot is found from
 * its address among CW_PROBES consecutive slots, claimed with a compare-and-swap; a socket
 * that finds all of them taken is counted as lost (untracked), never dropped silently.
 * Mapped (MMAPABLE) so netdiag reads those still waiting in one pass. */
struct cw_val { u64 sk; u64 since; u32 lport; u32 pad; };
BPF_F_TABLE("array", u32, struct cw_val, cw_since, MAX_CW_SINCE, MMAPABLE);
#define CW_PROBES 8
/* The first of a socket's candidate slots: its address, multiplied by 2^64/phi (Fibonacci
 * hashing), top half; the next CW_PROBES - 1 slots follow it. */
static inline u32 cw_home(u64 sk) {
    return (u32)((sk * 0x9E3779B97F4A7C15ULL) >> 32);
}
/* Per-CPU (summed when read): plain increments, no locked instruction per close. */
BPF_PERCPU_ARRAY(cw_ms, u64, 64);     /* log2(ms) spent in CLOSE_WAIT, by those that left */
BPF_PERCPU_ARRAY(cw_counts, u64, 4);  /* [0] entered, [1] left (tracked), [2] left, entered
                                       * before */

#define TCP_ESTABLISHED_ 1
#define TCP_CLOSE_WAIT_ 8

static inline void cw_count(int i) {
    u64 *c = cw_counts.lookup(&i);
    if (c)
        *c += 1;  /* this CPU's slot; a tracepoint program does not nest on its CPU */
}

/* CLOSE_WAIT entry and exit of one socket: its entry time claimed in a slot, and freed (the
 * time spent counted in the histogram) when it leaves. */
static __always_inline int cw_change(u64 sk, int oldstate, int newstate, u16 sport) {
    if (newstate == TCP_CLOSE_WAIT_) {
        u64 now = bpf_ktime_get_ns();
        u32 home = cw_home(sk);
        int tracked = 0;
        cw_count(0);
        for (int j = 0; j < CW_PROBES; j++) {
            u32 i = (home + j) % MAX_CW_SINCE;
            struct cw_val *slot = cw_since.lookup(&i);
            if (!slot)
                break;
            if (slot->sk == 0 && __sync_val_compare_and_swap(&slot->sk, 0, sk) == 0) {
                slot->lport = sport;
                slot->since = now;
                tracked = 1;
                break;
            }
        }
        if (!tracked)
            lost_inc(LOSS_CW_SINCE);
    } else if (oldstate == TCP_CLOSE_WAIT_) {
        u32 home = cw_home(sk);
        int found = 0;
        for (int j = 0; j < CW_PROBES; j++) {
            u32 i = (home + j) % MAX_CW_SINCE;
            struct cw_val *slot = cw_since.lookup(&i);
            if (!slot)
                break;
            if (slot->sk == sk) {
                u64 ms = (bpf_ktime_get_ns() - slot->since) / 1000000;
                int h = slot_of(ms);
                u64 *c = cw_ms.lookup(&h);
                if (c)
                    *c += 1;
                slot->since = 0;
                slot->lport = 0;
                slot->sk = 0;   /* free: last, so a reader never sees a stale time */
                found = 1;
                break;
            }
        }
        cw_count(found ? 1 : 2);
    }
    return 0;
}

#ifdef HOOK_np_set_state
/* A change of a socket of the counted namespace, by pair; and for the pairs shown by port or
 * destination, its row: a server's by local port, a client's by destination. */
#define TCP_PAIR(o, n) ((((o) & 15) << 4) | ((n) & 15))
static __always_inline int is_row_pair(int pair) {
    /* ESTABLISHED->FIN_WAIT1, ESTABLISHED->CLOSE_WAIT, SYN_SENT->ESTABLISHED,
     * SYN_SENT->CLOSE, SYN_RECV->ESTABLISHED */
    return pair == 0x14 || pair == 0x18 || pair == 0x21 || pair == 0x27 || pair == 0x31;
}

static __always_inline void count_pair(int pair) {
    u64 *n = pairs.lookup(&pair);
    if (n)
        *n += 1;  /* this CPU's slot; a tracepoint program does not nest on its CPU */
}

/* A server's row: every passive open, and a close on a socket whose peer's port is ephemeral
 * or whose own port had a listener (a client outside this host's port range, or behind NAT,
 * is still a server's peer: not kept). Returns 0 when the change is a client's row instead. */
static __always_inline int server_row(int pair, u16 sport, u16 lport, u16 rport) {
    if (!(pair == 0x31 || ((pair == 0x18 || pair == 0x14) && (!rport || is_listening(sport)))))
        return 0;
    int p = lport;
    struct port_rows *r = by_port.lookup(&p);
    if (r) {
        if (pair == 0x31)
            __sync_fetch_and_add(&r->accepted, 1);
        else if (pair == 0x18)
            __sync_fetch_and_add(&r->passive_closes, 1);
        else
            __sync_fetch_and_add(&r->active_closes, 1);
    }
    return 1;
}

/* A client's row, its destination in the key (for a service port): the address at v4 or v6
 * (16 bytes), in the trace record or the typed socket. `loads` (a constant): plain aligned
 * loads, as the verifier allows there; else one helper read (a record whose address fields
 * are not aligned). */
static __always_inline void client_row(u16 family, int oldstate, int newstate, u16 lport,
                                       u16 rport, char *v4, char *v6, int loads) {
    struct flow_key k = {};
    k.family = family; k.oldstate = oldstate; k.newstate = newstate;
    k.lport = lport; k.rport = rport;
    if (rport) {
        if (!loads) {
            bpf_probe_read_kernel(&k.daddr, family == 2 ? 4 : 16, family == 2 ? v4 : v6);
        } else if (family == 2) {
            u32 a = *(u32 *)v4;
            __builtin_memcpy(k.daddr, &a, 4);
        } else {
            u64 a[2];
            a[0] = *(u64 *)v6;
            a[1] = *(u64 *)(v6 + 8);
            __builtin_memcpy(k.daddr, a, 16);
        }
    }
    u64 z = 0, *v = flows.lookup_or_try_init(&k, &z);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        lost_inc(LOSS_FLOWS);
}

#ifdef TYPED_np_set_state
/* typed raw tracepoint inet_sock_set_state(const struct sock *sk, int oldstate, int newstate),
 * fired before the state is stored: the socket's fields are read as they are at that moment,
 * as the tracepoint's record copies them. The record's sport is inet_sport; skc_num is the
 * same port except on a change to CLOSE, where tcp_set_state() has already released an
 * automatically bound port (skc_num 0, inet_sport kept): the one such change with a row
 * (SYN_SENT->CLOSE, a failed connect) reads inet_sport, from the inet_sock around the sock
 * (beyond the typed struct: one helper read, on failed connects only). */
int np_set_state(u64 *ctx) {
    char *s = (char *)ctx[0];
    if (*(u16 *)(s + SK_PROTOCOL_OFF) != 6)
        return 0;
#ifdef NETNS_INUM
    char *net = *(char **)(s + SKC_NET_OFF);
    if (!net || *(u32 *)(net + NET_INUM_OFF) != NETNS_INUM)
        return 0;
#endif
    int oldstate = (int)ctx[1], newstate = (int)ctx[2];
    int pair = TCP_PAIR(oldstate, newstate);
    count_pair(pair);
    u16 sport = *(u16 *)(s + SKC_NUM_OFF);
    if (pair == 0x27) {
        u16 be = 0;
        bpf_probe_read_kernel(&be, sizeof(be), s + INET_SPORT_OFF);
        sport = ntohs(be);
    }
    if (is_row_pair(pair)) {
        u16 family = *(u16 *)(s + SKC_FAMILY_OFF);
        u16 lport = local_shown(sport), rport = remote_shown(ntohs(*(u16 *)(s + SKC_DPORT_OFF)));
        if (!server_row(pair, sport, lport, rport))
            client_row(family, oldstate, newstate, lport, rport, s + SKC_DADDR_OFF,
                       s + SKC_V6_DADDR_OFF, 1);
    }
    if (newstate != TCP_CLOSE_WAIT_ && oldstate != TCP_CLOSE_WAIT_)
        return 0;
    /* The socket's address as a number (its slot is a hash of it): the verifier allows a
     * typed pointer constant offsets only, so it is copied out of the arguments. */
    u64 sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), &ctx[0]);
    return cw_change(sk, oldstate, newstate, sport);
}
#else
int np_set_state(void *ctx) {
    u16 protocol = 0, family = 0, sport = 0, dport = 0;
    int oldstate = 0, newstate = 0;
    u64 sk = 0;
    TP_READ(protocol, inet_sock_set_state, protocol);
    if (protocol != 6)
        return 0;
    TP_READ(sk, inet_sock_set_state, skaddr);
    if (!SK_COUNTED(sk))
        return 0;
    TP_READ(oldstate, inet_sock_set_state, oldstate);
    TP_READ(newstate, inet_sock_set_state, newstate);
    int pair = TCP_PAIR(oldstate, newstate);
    count_pair(pair);
    TP_READ(sport, inet_sock_set_state, sport);
    if (is_row_pair(pair)) {
        TP_READ(family, inet_sock_set_state, family);
        TP_READ(dport, inet_sock_set_state, dport);
        u16 lport = local_shown(sport), rport = remote_shown(dport);
        if (!server_row(pair, sport, lport, rport))
            client_row(family, oldstate, newstate, lport, rport,
                       (char *)ctx + OFF_inet_sock_set_state_daddr,
                       (char *)ctx + OFF_inet_sock_set_state_daddr_v6,
                       OFF_inet_sock_set_state_daddr % 4 == 0 &&
                       OFF_inet_sock_set_state_daddr_v6 % 8 == 0);
    }
    return cw_change(sk, oldstate, newstate, sport);
}
#endif
#endif
