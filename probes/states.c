/* states: TCP state transitions (sock:inet_sock_set_state).
 * Every change is counted by its state pair in a per-CPU array (no hashing, no shared cache
 * line, nothing that can fill). The changes the report shows by port or destination
 * (connects, failed connects, accepted, active and passive closes) are also aggregated in a
 * hash by what the report shows: the local port (0 for a client's ephemeral port), the remote
 * port (0 for a client's ephemeral port) and, for a service destination, its address. A
 * server's peers are not in the key (they are unbounded); a client's destinations are.
 * Also: how long sockets stay in CLOSE_WAIT (per-socket entry time, tracked until they leave),
 * as a log2 histogram in ms, and those still waiting when the window closes. */
struct flow_key {
    u8 family; u8 oldstate; u8 newstate; u8 pad;
    u16 lport; u16 rport;
    u8 daddr[16];
};
BPF_PERCPU_ARRAY(pairs, u64, 256);  /* index: oldstate << 4 | newstate */
BPF_F_TABLE("hash", struct flow_key, u64, flows, MAX_FLOWS, BPF_F_NO_PREALLOC);

struct cw_val { u64 since; u32 lport; u32 pad; };
/* Preallocated (about 7 MB at 131072 entries): every connection a server closes passively
 * inserts and deletes an entry, and allocating each one costs more than the rest of the
 * program (measured with bench/probes.py). */
BPF_F_TABLE("hash", u64, struct cw_val, cw_since, MAX_CW_SINCE, 0);
BPF_ARRAY(cw_ms, u64, 64);      /* log2(ms) spent in CLOSE_WAIT, by those that left it */
BPF_ARRAY(cw_counts, u64, 4);   /* [0] entered, [1] left (tracked), [2] left, entered before */

#define TCP_ESTABLISHED_ 1
#define TCP_CLOSE_WAIT_ 8

static inline void cw_count(int i) {
    u64 *c = cw_counts.lookup(&i);
    if (c)
        __sync_fetch_and_add(c, 1);
}

#ifdef HOOK_np_set_state
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
    int pair = ((oldstate & 15) << 4) | (newstate & 15);
    u64 *n = pairs.lookup(&pair);
    if (n)
        *n += 1;  /* this CPU's slot; a tracepoint program does not nest on its CPU */
    /* ESTABLISHED->FIN_WAIT1, ESTABLISHED->CLOSE_WAIT, SYN_SENT->ESTABLISHED,
     * SYN_SENT->CLOSE, SYN_RECV->ESTABLISHED: the pairs shown by port or destination */
    if (pair == 0x14 || pair == 0x18 || pair == 0x21 || pair == 0x27 || pair == 0x31) {
        TP_READ(family, inet_sock_set_state, family);
        TP_READ(sport, inet_sock_set_state, sport);
        TP_READ(dport, inet_sock_set_state, dport);
        struct flow_key k = {};
        k.family = family; k.oldstate = oldstate; k.newstate = newstate;
        k.lport = local_shown(sport);
        k.rport = remote_shown(dport);
        if (k.rport) {
            if (family == 2)
                bpf_probe_read_kernel(&k.daddr, 4,
                                      (char *)ctx + OFF_inet_sock_set_state_daddr);
            else
                bpf_probe_read_kernel(&k.daddr, 16,
                                      (char *)ctx + OFF_inet_sock_set_state_daddr_v6);
        }
        u64 z = 0, *v = flows.lookup_or_try_init(&k, &z);
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            lost_inc(LOSS_FLOWS);
    }
    if (newstate == TCP_CLOSE_WAIT_) {
        TP_READ(sport, inet_sock_set_state, sport);
        struct cw_val cv = {.since = bpf_ktime_get_ns(), .lport = sport};
        cw_count(0);
        if (cw_since.update(&sk, &cv) != 0)
            lost_inc(LOSS_CW_SINCE);
    } else if (oldstate == TCP_CLOSE_WAIT_) {
        struct cw_val *since = cw_since.lookup(&sk);
        if (since) {
            u64 ms = (bpf_ktime_get_ns() - since->since) / 1000000;
            int slot = slot_of(ms);
            u64 *h = cw_ms.lookup(&slot);
            if (h)
                __sync_fetch_and_add(h, 1);
            cw_since.delete(&sk);
            cw_count(1);
        } else {
            cw_count(2);
        }
    }
    return 0;
}
#endif
