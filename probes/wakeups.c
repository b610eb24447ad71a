/* wakeups: the thundering herd, counted from the kernel's side.
 *
 * A connection ready on a listening socket calls the listener's sk_data_ready
 * (sock:sk_data_ready), which takes the lock of the socket's wait queue and, holding it,
 * walks the queue and wakes waiters: blocking accept() callers (exclusive: one), epoll
 * instances (each non-exclusive entry is called; EPOLLEXCLUSIVE entries stop the walk once
 * one woke). Every task woken from that walk fires sched:sched_waking in the same context,
 * on the same CPU, while that lock is held. So: a per-CPU "current listener" is set at the
 * listener's data_ready (with the address of its wait-queue lock); a sched_waking by the same
 * task context while the lock is held, at most as many as the queue has entries, is that
 * connection's wake-up; the first one that finds the lock released ends the walk (as do the
 * next data_ready on the CPU and the return of the accept() that processed the backlog).
 * No program runs per packet or per softirq: the lock is the walk's boundary.
 * accept() results (syscalls:sys_enter/exit_accept4, accept) and EPOLL_CTL_ADD/MOD on the
 * listening fd (syscalls:sys_enter_epoll_ctl: EPOLLEXCLUSIVE or not) are kept per listener
 * (by socket, so SO_REUSEPORT members stay apart) and per thread. */
struct lst_val {
    u64 ready, wakeups, accepted, eagain, errors, inode;
    u32 port; u16 family; u16 pad;
    u32 waiters_max, epoll_max, exclusive_max, waiters_last;
};
BPF_F_TABLE("hash", u64, struct lst_val, listeners, MAX_LISTENERS, BPF_F_NO_PREALLOC);

struct worker_key { u64 sk; u32 tid; u32 pad; };
struct worker_val { u64 woken, accepted, eagain, errors; u32 tgid; u32 pad; char comm[16]; };
BPF_F_TABLE("hash", struct worker_key, struct worker_val, workers, MAX_WORKERS,
            BPF_F_NO_PREALLOC);

struct reg_key { u64 sk; u32 tgid; u32 pad; };
struct reg_val { u64 adds, exclusive, mods; char comm[16]; };
BPF_F_TABLE("hash", struct reg_key, struct reg_val, epoll_regs, MAX_EPOLL_REGS,
            BPF_F_NO_PREALLOC);

BPF_F_TABLE("hash", u32, u64, inflight, MAX_INFLIGHT, BPF_F_NO_PREALLOC); /* tid -> listener */

struct cur_val { u64 sk; u64 lock; u32 tid; u32 budget; };
BPF_PERCPU_ARRAY(cur, struct cur_val, 1);

#define TCP_LISTEN_ 10
#define WQ_FLAG_EXCLUSIVE_ 0x01     /* include/linux/wait.h */
#define EPOLLEXCLUSIVE_ (1U << 28)  /* include/uapi/linux/eventpoll.h */
#define WALK_MAX 64

static inline struct lst_val *listener_of(u64 sk) {
    struct lst_val *l = listeners.lookup(&sk);
    if (l)
        return l;
    struct lst_val zero = {};
    u16 num = 0;
    KREAD(num, sk + SKC_NUM_OFF);
    zero.port = num;
    zero.family = sk_family(sk);
#ifdef HAVE_SK_INODE
    zero.inode = sk_inode(sk);
#endif
    l = listeners.lookup_or_try_init(&sk, &zero);
    if (!l)
        lost_inc(LOSS_LISTENERS);
    return l;
}

static inline int is_listener(u64 sk) {
    if (!sk || sk_state(sk) != TCP_LISTEN_)
        return 0;
    if (!SK_COUNTED(sk))
        return 0;
    return 1;
}

static inline struct worker_val *worker_of(u64 sk, u32 tid, u32 tgid) {
    struct worker_key k = {.sk = sk, .tid = tid};
    struct worker_val zero = {.tgid = tgid};
    struct worker_val *w = workers.lookup_or_try_init(&k, &zero);
    if (!w)
        lost_inc(LOSS_WORKERS);
    return w;
}

#ifdef HOOK_np_data_ready
/* raw tracepoint sk_data_ready(const struct sock *sk): it fires for every socket that gets
 * data, so the common case (not a listener) must cost one read: the state first, then the
 * protocol (a unix or SCTP listener is in TCP_LISTEN too). */
int np_data_ready(struct bpf_raw_tracepoint_args *ctx) {
    u16 protocol = 0;
    u64 sk = ctx->args[0];
    int z = 0;
    struct cur_val *c = cur.lookup(&z);
    if (!c)
        return 0;
    c->sk = 0;
    if (!sk || sk_state(sk) != TCP_LISTEN_)
        return 0;
    KREAD(protocol, sk + SK_PROTOCOL_OFF);
    if (protocol != 6 || !SK_COUNTED(sk))
        return 0;
    struct lst_val *l = listener_of(sk);
    if (!l)
        return 0;
    __sync_fetch_and_add(&l->ready, 1);
    /* Who waits on this listener now: sk->sk_wq->wait.head, entries by flags and function. */
    u64 wq = 0, head, pos = 0;
    u32 n = 0, excl = 0, ep = 0;
    KREAD(wq, sk + SK_WQ_OFF);
    if (!wq)
        return 0;               /* no wait queue: nobody can be woken */
    head = wq + SOCKWQ_WAIT_OFF + WQH_HEAD_OFF;
    KREAD(pos, head);
    for (int i = 0; i < WALK_MAX; i++) {
        if (!pos || pos == head)
            break;
        u64 entry = pos - WQE_ENTRY_OFF, func = 0;
        u32 flags = 0;
        KREAD(flags, entry + WQE_FLAGS_OFF);
        n++;
        if (flags & WQ_FLAG_EXCLUSIVE_)
            excl++;
#ifdef EP_CALLBACK_ADDR
        KREAD(func, entry + WQE_FUNC_OFF);
        if (func == EP_CALLBACK_ADDR)
            ep++;
#endif
        KREAD(pos, pos);
    }
    l->waiters_last = n;
    if (n > l->waiters_max) l->waiters_max = n;
    if (ep > l->epoll_max) l->epoll_max = ep;
    if (excl > l->exclusive_max) l->exclusive_max = excl;
    if (!n)
        return 0;
    c->sk = sk;
    c->lock = wq + SOCKWQ_WAIT_OFF + WQH_LOCK_OFF + SPINLOCK_RLOCK_OFF + RAWLOCK_LOCK_OFF;
    c->tid = (u32)bpf_get_current_pid_tgid();
    c->budget = n;              /* at most one wake-up per waiter */
    return 0;
}
#endif

#ifdef HOOK_np_waking
/* raw tracepoint sched_waking(struct task_struct *p) */
int np_waking(struct bpf_raw_tracepoint_args *ctx) {
    int z = 0;
    struct cur_val *c = cur.lookup(&z);
    if (!c || !c->sk)
        return 0;
    u32 held = 0;
    KREAD(held, c->lock);       /* the qspinlock word: non-zero while the walk holds it */
    if (!held || c->tid != (u32)bpf_get_current_pid_tgid() || c->budget == 0) {
        c->sk = 0;              /* the walk is over: this wake-up is not the listener's */
        return 0;
    }
    c->budget--;
    u64 sk = c->sk, p = ctx->args[0];
    u32 tid = 0, tgid = 0;
    KREAD(tid, p + TASK_PID_OFF);
    KREAD(tgid, p + TASK_TGID_OFF);
    struct lst_val *l = listeners.lookup(&sk);
    if (l)
        __sync_fetch_and_add(&l->wakeups, 1);
    struct worker_val *w = worker_of(sk, tid, tgid);
    if (w) {
        __sync_fetch_and_add(&w->woken, 1);
        if (w->comm[0] == 0)
            bpf_probe_read_kernel(&w->comm, sizeof(w->comm), (void *)(p + TASK_COMM_OFF));
    }
    return 0;
}
#endif

static inline int acc_enter(u64 fd) {
    u16 type = 0;
    u64 sk = fd_sock(fd, &type);
    if (type != 1 || !is_listener(sk))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (inflight.update(&tid, &sk) != 0)
        lost_inc(LOSS_INFLIGHT);
    return 0;
}

static inline int acc_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    int z = 0;
    struct cur_val *c = cur.lookup(&z);
    if (c && c->tid == tid)
        c->sk = 0;                  /* the listener's backlog was processed in this call */
    u64 *skp = inflight.lookup(&tid);
    if (!skp)
        return 0;
    u64 sk = *skp;
    inflight.delete(&tid);
    struct lst_val *l = listener_of(sk);
    struct worker_val *w = worker_of(sk, tid, id >> 32);
    if (w && w->comm[0] == 0)
        bpf_get_current_comm(&w->comm, sizeof(w->comm));
    if (ret >= 0) {
        if (l) __sync_fetch_and_add(&l->accepted, 1);
        if (w) __sync_fetch_and_add(&w->accepted, 1);
    } else if (ret == -11) {       /* EAGAIN: woken (or polling) for a connection already taken */
        if (l) __sync_fetch_and_add(&l->eagain, 1);
        if (w) __sync_fetch_and_add(&w->eagain, 1);
    } else {
        if (l) __sync_fetch_and_add(&l->errors, 1);
        if (w) __sync_fetch_and_add(&w->errors, 1);
    }
    return 0;
}

#ifdef HOOK_np_enter_accept4
int np_enter_accept4(void *ctx) { u64 fd = 0; TP_READ(fd, sys_enter_accept4, fd); return acc_enter(fd); }
#endif
#ifdef HOOK_np_exit_accept4
int np_exit_accept4(void *ctx) { s64 ret = 0; TP_READ(ret, sys_exit_accept4, ret); return acc_exit(ret); }
#endif
#ifdef HOOK_np_enter_accept
int np_enter_accept(void *ctx) { u64 fd = 0; TP_READ(fd, sys_enter_accept, fd); return acc_enter(fd); }
#endif
#ifdef HOOK_np_exit_accept
int np_exit_accept(void *ctx) { s64 ret = 0; TP_READ(ret, sys_exit_accept, ret); return acc_exit(ret); }
#endif

#ifdef HOOK_np_epoll_ctl
int np_epoll_ctl(void *ctx) {
    u64 op = 0, fd = 0, event = 0;
    u16 type = 0;
    TP_READ(op, sys_enter_epoll_ctl, op);
    if (op != 1 && op != 3)         /* EPOLL_CTL_ADD, EPOLL_CTL_MOD */
        return 0;
    TP_READ(fd, sys_enter_epoll_ctl, fd);
    u64 sk = fd_sock(fd, &type);
    if (type != 1 || !is_listener(sk))
        return 0;
    TP_READ(event, sys_enter_epoll_ctl, event);
    u32 events = 0;
    bpf_probe_read_user(&events, sizeof(events), (void *)event);   /* epoll_event.events */
    struct reg_key k = {.sk = sk, .tgid = bpf_get_current_pid_tgid() >> 32};
    struct reg_val zero = {};
    struct reg_val *r = epoll_regs.lookup_or_try_init(&k, &zero);
    if (!r) {
        lost_inc(LOSS_EPOLL_REGS);
        return 0;
    }
    if (r->comm[0] == 0)
        bpf_get_current_comm(&r->comm, sizeof(r->comm));
    if (op == 3) {
        __sync_fetch_and_add(&r->mods, 1);
    } else {
        __sync_fetch_and_add(&r->adds, 1);
        if (events & EPOLLEXCLUSIVE_)
            __sync_fetch_and_add(&r->exclusive, 1);
    }
    listener_of(sk);
    return 0;
}
#endif
