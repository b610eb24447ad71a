/* wakeups: accept() results per process and listening fd (syscalls:sys_enter/exit_accept4,
 * accept): a worker that wakes up and gets EAGAIN lost the race for a connection (the
 * thundering herd). sock:sk_data_ready counts socket wake-ups. */
struct acc_key { u32 tgid; u32 fd; };
struct acc_val { u64 ok; u64 eagain; u64 other; u32 threads; char comm[16]; };
BPF_HASH(accepts, struct acc_key, struct acc_val, 4096);
BPF_HASH(inflight, u64, u32, 16384);            /* thread -> fd of the pending accept */
BPF_HASH(seen_threads, u64, u8, 16384);         /* (tgid,fd,tid) seen, to count threads */
BPF_ARRAY(data_ready, u64, 2);                  /* [0] TCP, [1] other */
BPF_HASH(ready_by_port, u32, u64, 4096);        /* TCP local port -> data-ready wake-ups */

static inline int acc_enter(void *ctx, u64 fd) {
    u64 id = bpf_get_current_pid_tgid();
    u32 f = (u32)fd;
    inflight.update(&id, &f);
    return 0;
}

static inline int acc_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 *fd = inflight.lookup(&id);
    if (!fd)
        return 0;
    struct acc_key k = {.tgid = id >> 32, .fd = *fd};
    inflight.delete(&id);
    struct acc_val zero = {};
    struct acc_val *v = accepts.lookup_or_try_init(&k, &zero);
    if (!v)
        return 0;
    if (v->comm[0] == 0)
        bpf_get_current_comm(&v->comm, sizeof(v->comm));
    if (ret >= 0) __sync_fetch_and_add(&v->ok, 1);
    else if (ret == -11) __sync_fetch_and_add(&v->eagain, 1);   /* EAGAIN */
    else __sync_fetch_and_add(&v->other, 1);
    u64 tkey = ((u64)k.fd << 32) ^ (u32)id ^ ((u64)k.tgid << 40);
    u8 one = 1;
    if (seen_threads.lookup(&tkey) == 0) {
        seen_threads.update(&tkey, &one);
        __sync_fetch_and_add(&v->threads, 1);
    }
    return 0;
}

#ifdef HOOK_np_enter_accept4
int np_enter_accept4(void *ctx) { u64 fd = 0; TP_READ(fd, sys_enter_accept4, fd); return acc_enter(ctx, fd); }
#endif
#ifdef HOOK_np_exit_accept4
int np_exit_accept4(void *ctx) { s64 ret = 0; TP_READ(ret, sys_exit_accept4, ret); return acc_exit(ret); }
#endif
#ifdef HOOK_np_enter_accept
int np_enter_accept(void *ctx) { u64 fd = 0; TP_READ(fd, sys_enter_accept, fd); return acc_enter(ctx, fd); }
#endif
#ifdef HOOK_np_exit_accept
int np_exit_accept(void *ctx) { s64 ret = 0; TP_READ(ret, sys_exit_accept, ret); return acc_exit(ret); }
#endif

#ifdef HOOK_np_data_ready
int np_data_ready(void *ctx) {
    u16 protocol = 0;
    TP_READ(protocol, sk_data_ready, protocol);
    int i = protocol == 6 ? 0 : 1;
    u64 *v = data_ready.lookup(&i);
    if (v) __sync_fetch_and_add(v, 1);
#ifdef SK_NUM_OFF
    if (protocol == 6) {            /* the socket's local port, at its BTF offset */
        u64 sk = 0;
        u16 num = 0;
        TP_READ(sk, sk_data_ready, skaddr);
        bpf_probe_read_kernel(&num, sizeof(num), (char *)sk + SK_NUM_OFF);
        u32 port = num;
        { u64 __z = 0, *__c = ready_by_port.lookup_or_try_init(&port, &__z); if (__c) __sync_fetch_and_add(__c, 1); else lost_inc(); }
    }
#endif
    return 0;
}
#endif
