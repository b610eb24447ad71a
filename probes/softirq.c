/* softirq: NET_RX / NET_TX softirqs per CPU: how long from raise to entry (latency) and how
 * long each run takes, as log2 histograms (irq:softirq_raise/entry/exit), and the CPU time
 * of the ksoftirqd/N threads that take over when softirq work keeps coming back
 * (sched:sched_switch). */
struct hist_key { u32 vec; u32 cpu; u32 slot; };
BPF_F_TABLE("hash", struct hist_key, u64, latency_us, MAX_LATENCY_US, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct hist_key, u64, runtime_us, MAX_RUNTIME_US, BPF_F_NO_PREALLOC);
struct tot_key { u32 vec; u32 cpu; };
BPF_F_TABLE("hash", struct tot_key, u64, total_ns, MAX_TOTAL_NS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct tot_key, u64, count, MAX_COUNT, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(raised, u64, 10);                 /* vec -> raise time on this CPU */
BPF_PERCPU_ARRAY(entered, u64, 10);                /* vec -> entry time on this CPU */
BPF_PERCPU_ARRAY(ksoft_since, u64, 1);
BPF_F_TABLE("hash", u32, u64, ksoft_ns, MAX_KSOFT_NS, BPF_F_NO_PREALLOC); /* cpu -> ksoftirqd ns */

static inline int net_vec(u32 vec) { return vec == 2 || vec == 3; }  /* NET_TX, NET_RX */

#ifdef HOOK_np_raise
int np_raise(void *ctx) {
    u32 vec = 0;
    TP_READ(vec, softirq_raise, vec);
    if (!net_vec(vec)) return 0;
    int i = vec;
    u64 *t = raised.lookup(&i);
    if (t && *t == 0) *t = bpf_ktime_get_ns();
    return 0;
}
#endif

#ifdef HOOK_np_entry
int np_entry(void *ctx) {
    u32 vec = 0;
    TP_READ(vec, softirq_entry, vec);
    if (!net_vec(vec)) return 0;
    int i = vec;
    u64 now = bpf_ktime_get_ns();
    u64 *t = raised.lookup(&i);
    if (t && *t) {
        struct hist_key k = {.vec = vec, .cpu = bpf_get_smp_processor_id(),
                             .slot = slot_of((now - *t) / 1000)};
        { u64 __z = 0, *__v = latency_us.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(LOSS_LATENCY_US); }
        *t = 0;
    }
    u64 *e = entered.lookup(&i);
    if (e) *e = now;
    return 0;
}
#endif

#ifdef HOOK_np_exit
int np_exit(void *ctx) {
    u32 vec = 0;
    TP_READ(vec, softirq_exit, vec);
    if (!net_vec(vec)) return 0;
    int i = vec;
    u64 *e = entered.lookup(&i);
    if (!e || *e == 0) return 0;
    u64 d = bpf_ktime_get_ns() - *e;
    *e = 0;
    u32 cpu = bpf_get_smp_processor_id();
    struct hist_key k = {.vec = vec, .cpu = cpu, .slot = slot_of(d / 1000)};
    { u64 __z = 0, *__v = runtime_us.lookup_or_try_init(&k, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(LOSS_RUNTIME_US); }
    struct tot_key t = {.vec = vec, .cpu = cpu};
    { u64 __z = 0, *__v = total_ns.lookup_or_try_init(&t, &__z); if (__v) __sync_fetch_and_add(__v, d); else lost_inc(LOSS_TOTAL_NS); }
    { u64 __z = 0, *__v = count.lookup_or_try_init(&t, &__z); if (__v) __sync_fetch_and_add(__v, 1); else lost_inc(LOSS_COUNT); }
    return 0;
}
#endif

#ifdef HOOK_np_switch
static inline int is_ksoftirqd(const char *c) {
    return c[0] == 'k' && c[1] == 's' && c[2] == 'o' && c[3] == 'f' && c[4] == 't' &&
           c[5] == 'i' && c[6] == 'r' && c[7] == 'q' && c[8] == 'd';
}
int np_switch(void *ctx) {
    char prev[16] = {}, next[16] = {};
    bpf_probe_read_kernel(&prev, sizeof(prev), (char *)ctx + OFF_sched_switch_prev_comm);
    bpf_probe_read_kernel(&next, sizeof(next), (char *)ctx + OFF_sched_switch_next_comm);
    int z = 0;
    u64 *since = ksoft_since.lookup(&z);
    if (!since) return 0;
    u64 now = bpf_ktime_get_ns();
    if (is_ksoftirqd(prev) && *since) {
        u32 cpu = bpf_get_smp_processor_id();
        { u64 __z = 0, *__v = ksoft_ns.lookup_or_try_init(&cpu, &__z); if (__v) __sync_fetch_and_add(__v, now - *since); else lost_inc(LOSS_KSOFT_NS); }
        *since = 0;
    }
    if (is_ksoftirqd(next))
        *since = now;
    return 0;
}
#endif
