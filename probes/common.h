/* netdiag probes: shared definitions. Tracepoint fields are read at the offsets the running
 * kernel declares in its format files (OFF_<event>_<field>, defined by netdiag before this
 * header), never through a compiled-in struct layout. */
#include <uapi/linux/ptrace.h>

#define TP_READ(var, ev, fld) \
    bpf_probe_read_kernel(&(var), sizeof(var), (char *)ctx + OFF_##ev##_##fld)

/* Counting into a hash: `u64 *v = map.lookup_or_try_init(&key, &zero)` at each site (bcc
 * rewrites map calls in the source, not inside macros). When a map is full, the event is
 * counted in `lost` instead of vanishing silently. */
BPF_ARRAY(lost, u64, 1);

static inline void lost_inc(void) {
    int z = 0;
    u64 *x = lost.lookup(&z);
    if (x)
        __sync_fetch_and_add(x, 1);
}
