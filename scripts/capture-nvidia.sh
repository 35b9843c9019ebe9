#!/usr/bin/env bash
# Captures what the agent's prober reads on an NVIDIA host, for use as test fixtures:
# nvidia-smi's XML (-q -x) idle and under load, `topo -m`, the text `-q`, `-L`, the CSV query the
# exporter fixtures use, the driver's /proc files and the sysfs attributes of every display,
# 3D-controller and accelerator-class PCI function (rebuilt as a tree the prober can be pointed at
# with `sysfs_root`). Everything lands in one tarball.
#
#   scripts/capture-nvidia.sh OUTDIR [LOAD_SECONDS]
#
# The load is a bf16 matrix-product loop through PyTorch when python3 has it (skipped otherwise).
# Identifiers (serials, UUIDs, board part numbers) are kept as printed: mask them before
# publishing a capture from a machine you do not own.
set -uo pipefail
out=${1:?usage: capture-nvidia.sh OUTDIR [LOAD_SECONDS]}
load=${2:-20}
mkdir -p "$out"
work=$(mktemp -d)
cap="$work/capture"
mkdir -p "$cap"

run() {  # run NAME COMMAND...: stdout to NAME, stderr and exit status to NAME.err
    local name=$1; shift
    "$@" > "$cap/$name" 2> "$cap/$name.err"
    echo "exit $?" >> "$cap/$name.err"
}

run version.txt nvidia-smi --version
run L.txt nvidia-smi -L
run q-x_idle.xml nvidia-smi -q -x
run q_idle.txt nvidia-smi -q
run topo-m.txt nvidia-smi topo -m
run nvlink-s.txt nvidia-smi nvlink -s
run help-query-gpu.txt nvidia-smi --help-query-gpu
# The exporter fixtures' field list: every `"name"` line of --help-query-gpu.
fields=$(grep -o '^"[a-z_.A-Z0-9]*"' "$cap/help-query-gpu.txt" | tr -d '"' | paste -sd, -)
run query-gpu.csv nvidia-smi --query-gpu="$fields" --format=csv
run query-gpu_noheader-nounits.csv nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,clocks.max.sm,ecc.errors.uncorrected.volatile.total --format=csv,noheader,nounits
run compute-apps.csv nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv
run proc-driver-version.txt cat /proc/driver/nvidia/version
for f in /proc/driver/nvidia/gpus/*/information; do
    [ -e "$f" ] && run "proc-gpu-$(basename "$(dirname "$f")").txt" cat "$f"
done
run uname.txt uname -a
run dmesg-xid.txt sh -c 'dmesg 2>&1 | grep -i -E "NVRM|xid" | tail -200'

# The sysfs tree the prober reads: bus/pci/devices/ADDR/{attributes, driver link, hwmon}.
sys="$cap/sys"
mkdir -p "$sys/bus/pci/devices" "$sys/class/drm" "$sys/class/accel"
ls -l /sys/bus/pci/devices/ > "$cap/sysfs-pci-devices-ls.txt" 2>&1
for d in /sys/bus/pci/devices/*; do
    [ -r "$d/class" ] || continue
    class=$(cat "$d/class" 2>/dev/null)
    case "$class" in 0x03*|0x12*|0x0680*) ;; *) continue ;; esac
    a=$(basename "$d")
    t="$sys/bus/pci/devices/$a"
    mkdir -p "$t"
    for attr in vendor device class revision subsystem_vendor subsystem_device numa_node local_cpulist \
        current_link_speed current_link_width max_link_speed max_link_width device_type \
        mem_info_vram_total mem_info_vram_used gpu_busy_percent max_power enable irq; do
        [ -r "$d/$attr" ] && cat "$d/$attr" > "$t/$attr" 2>/dev/null
    done
    if [ -L "$d/driver" ]; then ln -s "../../../bus/pci/drivers/$(basename "$(readlink "$d/driver")")" "$t/driver"; fi
    if [ -d "$d/hwmon" ]; then cp -rL "$d/hwmon" "$t/hwmon" 2>/dev/null; fi
done
for c in /sys/class/drm/card* /sys/class/accel/accel*; do
    [ -e "$c" ] || continue
    echo "$c -> $(readlink -f "$c/device" 2>/dev/null)" >> "$cap/sysfs-class-links.txt"
done

# Under load: a process computing on every GPU, then the same captures again.
if [ "$load" -gt 0 ] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 - "$load" > "$cap/load.txt" 2>&1 <<'EOF' &
import sys, time, torch
end = time.time() + float(sys.argv[1])
xs = [torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.bfloat16) for i in range(torch.cuda.device_count())]
n = 0
while time.time() < end:
    for x in xs:
        x @ x
    n += 1
    if n % 50 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print(f"{n} rounds of 8192^3 bf16 products on {len(xs)} GPU(s)")
EOF
    loader=$!
    sleep $(( load / 2 ))
    run q-x_load.xml nvidia-smi -q -x
    run query-gpu_load_noheader-nounits.csv nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,clocks.max.sm,ecc.errors.uncorrected.volatile.total --format=csv,noheader,nounits
    run compute-apps_load.csv nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv
    wait "$loader"
fi

date -u +%FT%TZ > "$cap/captured-at.txt"
tar -C "$work" -czf "$out/nvidia-capture.tar.gz" capture
cp "$cap/q-x_idle.xml" "$out/" 2>/dev/null
[ -e "$cap/q-x_load.xml" ] && cp "$cap/q-x_load.xml" "$out/"
ls -la "$out"
cat "$cap"/*.err | grep -v '^exit 0$' | head -40
head -c 3000 "$cap/L.txt" "$cap/topo-m.txt" "$cap/version.txt" "$cap/load.txt" 2>/dev/null
rm -rf "$work"
