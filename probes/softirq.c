/* softirq: NET_RX / NET_TX softirqs per CPU: how long from raise to entry (latency) and how
 * long each run takes, as log2 histograms (irq:softirq_raise/entry/exit). (The CPU time of
 * the ksoftirqd/N threads is read from the scheduler's own accounting at both ends of the
 * window, not traced: netdiag/collect/rxpath.py.)
 *
 * All three run on every softirq of the host, so all three are raw tracepoints (no trace
 * record is filled) and count into per-CPU arrays: an array slot is one load, not a hash,
 * nothing can fill, and each CPU's slots are its own (the figures are per CPU anyway). A
 * program does not nest on its CPU, so plain increments are exact. */
#define NET_TX_ 2
#define NET_RX_ 3
#define SLOTS 64
/* index: (vec - NET_TX) * SLOTS + log2 slot */
BPF_PERCPU_ARRAY(latency_us, u64, 2 * SLOTS);
BPF_PERCPU_ARRAY(runtime_us, u64, 2 * SLOTS);
BPF_PERCPU_ARRAY(total_ns, u64, 2);                /* vec - NET_TX */
BPF_PERCPU_ARRAY(count, u64, 2);
BPF_PERCPU_ARRAY(raised, u64, 2);                  /* raise time on this CPU */
BPF_PERCPU_ARRAY(entered, u64, 2);                 /* entry time on this CPU */

static inline int net_vec(u32 vec) { return vec == NET_TX_ || vec == NET_RX_; }

static inline void add(u64 *slot, u64 n) {
    if (slot)
        *slot += n;
}

#ifdef HOOK_np_raise
/* raw tracepoint softirq_raise(unsigned int vec_nr) */
int np_raise(struct bpf_raw_tracepoint_args *ctx) {
    u32 vec = ctx->args[0];
    if (!net_vec(vec))
        return 0;
    int i = vec - NET_TX_;
    u64 *t = raised.lookup(&i);
    if (t && *t == 0)
        *t = bpf_ktime_get_ns();
    return 0;
}
#endif

#ifdef HOOK_np_entry
/* raw tracepoint softirq_entry(unsigned int vec_nr) */
int np_entry(struct bpf_raw_tracepoint_args *ctx) {
    u32 vec = ctx->args[0];
    if (!net_vec(vec))
        return 0;
    int i = vec - NET_TX_;
    u64 now = bpf_ktime_get_ns();
    u64 *t = raised.lookup(&i);
    if (t && *t) {
        int h = i * SLOTS + (slot_of((now - *t) / 1000) & (SLOTS - 1));
        add(latency_us.lookup(&h), 1);
        *t = 0;
    }
    u64 *e = entered.lookup(&i);
    if (e)
        *e = now;
    return 0;
}
#endif

#ifdef HOOK_np_exit
/* raw tracepoint softirq_exit(unsigned int vec_nr) */
int np_exit(struct bpf_raw_tracepoint_args *ctx) {
    u32 vec = ctx->args[0];
    if (!net_vec(vec))
        return 0;
    int i = vec - NET_TX_;
    u64 *e = entered.lookup(&i);
    if (!e || *e == 0)
        return 0;
    u64 d = bpf_ktime_get_ns() - *e;
    *e = 0;
    int h = i * SLOTS + (slot_of(d / 1000) & (SLOTS - 1));
    add(runtime_us.lookup(&h), 1);
    add(total_ns.lookup(&i), d);
    add(count.lookup(&i), 1);
    return 0;
}
#endif
