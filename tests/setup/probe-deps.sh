#!/usr/bin/env bash
# Test setup for the eBPF probe tests (run by `make test` as root; never by netdiag itself):
# bcc from the distribution, bpftool, kernel headers, and, on a kernel that ships no headers
# of its own, /lib/modules/$(uname -r)/{build,source} linked to the installed Debian headers.
# Also mounts tracefs when the kernel has it but nobody mounted it.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "probe-deps: not root, skipping (probe tests will say why)"; exit 0; }

rel=$(uname -r)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
pkgs=()
/usr/bin/python3 -c 'import bcc' 2>/dev/null || pkgs+=(python3-bpfcc)
command -v bpftool >/dev/null || pkgs+=(bpftool)
if [ ! -e "/lib/modules/$rel/build/include" ]; then
    if apt-cache show "linux-headers-$rel" >/dev/null 2>&1; then
        pkgs+=("linux-headers-$rel")
    else
        pkgs+=("linux-headers-$arch")
    fi
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
if [ ! -e "/lib/modules/$rel/build/include" ]; then
    build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$build" ]; then
        mkdir -p "/lib/modules/$rel"
        ln -sfn "$build" "/lib/modules/$rel/build"
        [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$rel/source"
        echo "probe-deps: linked /lib/modules/$rel/build -> $build (test setup)"
    fi
fi
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing && echo "probe-deps: mounted tracefs"
fi
