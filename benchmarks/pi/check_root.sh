#!/usr/bin/env bash
# Check emostream on a Raspberry Pi userland emulated on this machine (functional, not a speed figure).
#
#   sudo bash benchmarks/pi/check_root.sh ARCH [ROOT_DIR]      ARCH: arm64 (64-bit Pi OS) or armhf (32-bit)
#
# Builds a Debian bookworm root for ARCH with `debootstrap --foreign` and runs its second stage through
# qemu-user-static (binfmt_misc), installs python3, python3-venv, libportaudio2 and libsndfile1 with apt,
# then in a venv inside the root the emostream wheel (built here from this checkout) and its runtime
# wheel set for ARCH from PyPI (no TensorFlow). It then runs on the test fixtures, inside the root and
# on this machine from the same wheel:
#   emostream [--model M] analyze --jsonl FIXTURES...
#   emostream [--model M] --file FIXTURE --fast --no-dashboard --jsonl -
# for the accurate and the fast model, and compares the readings (benchmarks/pi/compare_readings.py:
# same labels and flags, scores within EMOSTREAM_PI_TOL, default 1e-3). It prints the wheel versions
# that installed (pip freeze), each run's wall and CPU time under emulation and its peak RSS
# (/usr/bin/time -v around the emulated process: QEMU's own memory included, so an upper bound).
#
# The root is cached in ROOT_DIR (default build/pi-ARCH, git-ignored): a rerun skips debootstrap, apt
# and the dependency download, and only reinstalls the emostream wheel. The last output is written to
# ROOT_DIR/check-output.txt. Needs root, the Debian packages debootstrap and qemu-user-static, and
# network access to deb.debian.org and pypi.org. Exit status 0 when every reading matches.
#
# The emulated CPU is a Raspberry Pi's: QEMU_CPU=cortex-a72 and a Pi 4 /proc/cpuinfo for arm64
# (EMOSTREAM_PI_MODEL=pi5: cortex-a76 and a Pi 5's), cortex-a15 and a Pi 3 (32-bit kernel) /proc/cpuinfo
# for armhf. The fake /proc/cpuinfo is needed, not decoration: QEMU 7.2 shows the guest the host's x86
# /proc/cpuinfo, and the TFLite runtimes' CPU detection (cpuinfo, used by XNNPACK and ruy) then
# dereferences NULL while the interpreter is created (SIGSEGV in Interpreter.__init__).
#
# Environment: EMOSTREAM_PI_MIRROR (default http://deb.debian.org/debian), EMOSTREAM_PI_TOL (1e-3),
# EMOSTREAM_PI_PIP_EXTRA (extra `pip install` arguments inside the root, e.g. an --extra-index-url),
# EMOSTREAM_PI_APT_EXTRA (more Debian packages for the root, e.g. compilers when a dependency has no
# wheel for ARCH on the index used and pip must build it from source), EMOSTREAM_PI_SYSTEM_NUMPY=1
# (Debian's python3-numpy through a --system-site-packages venv, /opt/emostream-venv-sysnumpy, and the
# other dependencies installed without emostream's numpy pin: for armhf, where PyPI has no numpy wheel,
# Raspberry Pi OS gets one from piwheels, which this machine cannot reach, and building numpy from
# source under emulation takes hours; the run then says that numpy is not the declared one).
set -euo pipefail

ARCH=${1:?usage: check_root.sh arm64|armhf [ROOT_DIR]}
REPO=${EMOSTREAM_PI_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ -z "${EMOSTREAM_PI_RUNNING_COPY:-}" ]; then
    # run from a copy, so that editing this file during a long run cannot derail the run
    copy=$(mktemp /tmp/emostream-check-root.XXXXXX.sh)
    cp "$0" "$copy"
    status=0
    EMOSTREAM_PI_RUNNING_COPY=$copy EMOSTREAM_PI_REPO=$REPO bash "$copy" "$@" || status=$?
    rm -f "$copy"
    exit $status
fi
ROOT=${2:-$REPO/build/pi-$ARCH}
MIRROR=${EMOSTREAM_PI_MIRROR:-http://deb.debian.org/debian}
TOL=${EMOSTREAM_PI_TOL:-1e-3}
PIP_EXTRA=${EMOSTREAM_PI_PIP_EXTRA:-}
SUITE=bookworm
APT_PACKAGES="python3 python3-venv libportaudio2 libsndfile1 ca-certificates ${EMOSTREAM_PI_APT_EXTRA:-}"
CHECK=/opt/emostream-check          # inside the root: wheel, fixtures, outputs
VENV=/opt/emostream-venv            # inside the root
SYSTEM_NUMPY=${EMOSTREAM_PI_SYSTEM_NUMPY:-}
VENV_OPTIONS=
if [ -n "$SYSTEM_NUMPY" ]; then
    APT_PACKAGES="$APT_PACKAGES python3-numpy"
    VENV=/opt/emostream-venv-sysnumpy
    VENV_OPTIONS=--system-site-packages
fi

PI_MODEL=${EMOSTREAM_PI_MODEL:-}
case $ARCH in
    arm64) QEMU=qemu-aarch64; PI_MODEL=${PI_MODEL:-pi4} ;;
    armhf) QEMU=qemu-arm; PI_MODEL=${PI_MODEL:-pi3-32bit} ;;
    *) echo "check_root.sh: ARCH is '$ARCH'; expected arm64 or armhf" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "check_root.sh: needs root (debootstrap, chroot, mounts); run it with sudo" >&2; exit 2
fi
for tool in debootstrap chroot /usr/bin/time "$QEMU-static"; do
    if ! command -v "$tool" >/dev/null; then
        echo "check_root.sh: $tool is missing; apt-get install debootstrap qemu-user-static time" >&2; exit 2
    fi
done
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
OUT=$ROOT/check-output.txt
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
step() { say "== $*"; }
START=$(date +%s)

# --- binfmt_misc: let the kernel run ARCH binaries through qemu (F flag: no qemu binary needed in the root)
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e "/proc/sys/fs/binfmt_misc/$QEMU" ]; then
    conf=/usr/lib/binfmt.d/$QEMU.conf
    [ -r "$conf" ] || { echo "check_root.sh: $conf is missing; apt-get install qemu-user-static" >&2; exit 2; }
    grep -v '^#' "$conf" >/proc/sys/fs/binfmt_misc/register
fi

# --- what the emulated CPU is and says it is (see the header)
cpuinfo_block() {  # cpuinfo_block INDEX ARCH-DIGIT FEATURES PART VARIANT REVISION [MODEL-NAME]
    printf 'processor\t: %s\n' "$1"
    [ -z "${7:-}" ] || printf 'model name\t: %s\n' "$7"
    printf 'BogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: %s\n' "$3" "$2"
    printf 'CPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$5" "$4" "$6"
}
fake_cpuinfo() {  # the Pi's /proc/cpuinfo with as many processors as this machine has (sysfs is the host's)
    local i
    for ((i = 0; i < $(nproc --all); i++)); do
        case $PI_MODEL in
            pi4) cpuinfo_block "$i" 8 "fp asimd evtstrm crc32 cpuid" 0xd08 0x0 3 ;;
            pi5) cpuinfo_block "$i" 8 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" 0xd0b 0x4 1 ;;
            pi3-32bit) cpuinfo_block "$i" 7 "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32" 0xd03 0x0 4 "ARMv7 Processor rev 4 (v7l)" ;;
        esac
    done
    case $PI_MODEL in
        pi4) printf 'Revision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n' ;;
        pi5) printf 'Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n' ;;
        pi3-32bit) printf 'Hardware\t: BCM2835\nRevision\t: a02082\nModel\t\t: Raspberry Pi 3 Model B Rev 1.2\n' ;;
    esac
}
case $PI_MODEL in
    pi4) QEMU_CPU=cortex-a72 ;;
    pi5) QEMU_CPU=cortex-a76 ;;
    pi3-32bit) QEMU_CPU=cortex-a15 ;;
    *) echo "check_root.sh: EMOSTREAM_PI_MODEL is '$PI_MODEL'; expected pi4 or pi5 (arm64), pi3-32bit (armhf)" >&2; exit 2 ;;
esac
export QEMU_CPU

# --- mounts for the chroot, always undone on exit
MOUNTED=()
bind() {  # bind SRC DST-inside-root
    local dst=$ROOT$2
    mkdir -p "$dst"
    if ! mountpoint -q "$dst"; then mount --bind "$1" "$dst"; MOUNTED+=("$dst"); fi
}
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
}
trap unmount_all EXIT
mount_proc() {  # a proc of the root's own, private, so that the fake cpuinfo cannot reach the host's /proc
    if ! mountpoint -q "$ROOT/proc"; then
        mkdir -p "$ROOT/proc"
        mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc")
        mount --make-private "$ROOT/proc"
    fi
}
mount_system() {
    mount_proc; bind /sys /sys; bind /dev /dev; bind /dev/pts /dev/pts
    mkdir -p "$ROOT$CHECK"
    fake_cpuinfo >"$ROOT$CHECK/cpuinfo"
    if ! mountpoint -q "$ROOT/proc/cpuinfo"; then
        mount --bind "$ROOT$CHECK/cpuinfo" "$ROOT/proc/cpuinfo"; MOUNTED+=("$ROOT/proc/cpuinfo")
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
}
in_root() {  # run a shell command in the root with a clean environment
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" \
        PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$1"
}

# --- 1. the root: debootstrap first stage here, second stage emulated
if [ ! -e "$ROOT/.stage2-done" ]; then
    step "debootstrap $SUITE $ARCH into $ROOT"
    t0=$(date +%s)
    if [ ! -e "$ROOT/debootstrap/debootstrap" ] && [ ! -e "$ROOT/.stage1-done" ]; then
        debootstrap --foreign --variant=minbase --arch="$ARCH" "$SUITE" "$ROOT" "$MIRROR"
        touch "$ROOT/.stage1-done"
    fi
    mount_proc; bind /sys /sys; bind /dev /dev
    chroot "$ROOT" /debootstrap/debootstrap --second-stage
    touch "$ROOT/.stage2-done"
    say "root built in $(( $(date +%s) - t0 )) s"
fi
mount_system

# --- 2. apt packages (what docs/pi.md tells a Pi user to install)
if [ ! -e "$ROOT/.apt-done" ] || [ "$(cat "$ROOT/.apt-done")" != "$APT_PACKAGES" ]; then
    step "apt-get install $APT_PACKAGES"
    t0=$(date +%s)
    in_root "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PACKAGES"
    echo "$APT_PACKAGES" >"$ROOT/.apt-done"
    say "apt done in $(( $(date +%s) - t0 )) s"
fi
say "python in the root: $(in_root 'python3 -VV') on $(in_root 'uname -m'); emulated CPU $QEMU_CPU as $PI_MODEL ($(grep -m1 '^Model' "$ROOT$CHECK/cpuinfo" | cut -f2- -d:))"

# --- 3. pip inside the root. The host's /etc/pip.conf points at local x86_64-only mirrors
# (/opt/pypi, /opt/pypi-more, /opt/wheels): useless for ARCH, so the root uses pypi.org itself. This
# machine reaches pypi.org through a TLS-intercepting proxy, so the root gets the host's CA bundle.
mkdir -p "$ROOT$CHECK"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT$CHECK/host-ca-bundle.crt"
cat >"$ROOT/etc/pip.conf" <<EOF
[global]
index-url = https://pypi.org/simple
cert = $CHECK/host-ca-bundle.crt
timeout = 180
disable-pip-version-check = true
EOF

step "emostream wheel from $REPO"
rm -rf "$ROOT/wheel-build" && mkdir -p "$ROOT/wheel-build"
python3 -m pip wheel -q --no-deps "$REPO" -w "$ROOT/wheel-build"
WHEEL=$(basename "$(ls "$ROOT"/wheel-build/emostream-*.whl)")
rm -f "$ROOT$CHECK"/emostream-*.whl
cp "$ROOT/wheel-build/$WHEEL" "$ROOT$CHECK/"
say "wheel $WHEEL sha256 $(sha256sum "$ROOT$CHECK/$WHEEL" | cut -c1-16)"

step "pip install $WHEEL in $VENV (runtime dependencies for $ARCH from PyPI)"
t0=$(date +%s)
[ -x "$ROOT$VENV/bin/python" ] || in_root "python3 -m venv $VENV_OPTIONS $VENV"
if [ -n "$SYSTEM_NUMPY" ]; then
    # emostream without dependencies, then its requirements for this platform except numpy
    in_root "pip install -q --force-reinstall --no-deps $CHECK/$WHEEL && pip install -q $PIP_EXTRA \$(python -c '
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
reqs = [Requirement(r) for r in requires(\"emostream\")]
print(\" \".join(\"%s%s\" % (r.name, r.specifier) for r in reqs
               if r.name != \"numpy\" and (r.marker is None or r.marker.evaluate({\"extra\": \"\"}))))
')" 2>&1 | tee -a "$OUT"
    say "numpy from Debian: $(in_root "python -c 'import numpy; print(numpy.__version__, numpy.__file__)'") (emostream declares: $(in_root "python -c 'from importlib.metadata import requires; print([r for r in requires(\"emostream\") if r.startswith(\"numpy\")])'"))"
else
# shellcheck disable=SC2086  # PIP_EXTRA is a list of arguments
in_root "pip install -q --force-reinstall --no-deps $CHECK/$WHEEL && pip install -q $PIP_EXTRA $CHECK/$WHEEL" 2>&1 \
    | tee -a "$OUT"
fi
say "pip install done in $(( $(date +%s) - t0 )) s (emulated pip)"
say "pip freeze ($ARCH):"
in_root "pip freeze --all" | sed 's/^/    /' | tee -a "$OUT"

# --- 4. the reference on this machine, from the same wheel
HOSTVENV=$ROOT/host-venv
step "x86 reference venv $HOSTVENV (same wheel)"
[ -x "$HOSTVENV/bin/python" ] || python3 -m venv "$HOSTVENV"
{ "$HOSTVENV/bin/pip" install -q --force-reinstall --no-deps "$ROOT$CHECK/$WHEEL"
  "$HOSTVENV/bin/pip" install -q "$ROOT$CHECK/$WHEEL"; } 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }
say "host: $("$HOSTVENV/bin/python" -c 'import platform; print(platform.python_version(), platform.machine())'); $("$HOSTVENV/bin/pip" freeze | grep -i -E '^(ai-edge-litert|tflite-runtime|numpy|soxr)==' | tr '\n' ' ')"

# --- 5. the runs
rm -rf "$ROOT$CHECK/fixtures" "$ROOT$CHECK/out" "$ROOT/host-out"
mkdir -p "$ROOT$CHECK/fixtures" "$ROOT$CHECK/out" "$ROOT/host-out"
cp -r "$REPO/tests/fixtures/ravdess" "$REPO/tests/fixtures/synthetic/espeak_en_calm.flac" "$ROOT$CHECK/fixtures/"
LIVE=ravdess/Actor_01/03-01-05-02-01-01-01.flac   # angry, 4.1 s
ANALYZE="ravdess espeak_en_calm.flac"
STATUS=0
run_pair() {  # run_pair NAME ARGS... : the same emostream command in the root and on the host
    local name=$1; shift
    local args=$*
    step "$name: emostream $args"
    (cd "$ROOT$CHECK/fixtures" && /usr/bin/time -v -o "$ROOT/host-out/$name.host-time" \
        "$HOSTVENV/bin/emostream" $args >"$ROOT/host-out/$name.jsonl" 2>"$ROOT/host-out/$name.err") \
        || { say "host run failed: $(tail -3 "$ROOT/host-out/$name.err")"; STATUS=1; return; }
    if ! /usr/bin/time -v -o "$ROOT/host-out/$name.time" \
        chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" PATH=$VENV/bin:/usr/bin:/bin \
        /bin/sh -c "cd $CHECK/fixtures && exec emostream $args >$CHECK/out/$name.jsonl 2>$CHECK/out/$name.err"; then
        say "$ARCH run failed:"; tail -5 "$ROOT$CHECK/out/$name.err" | tee -a "$OUT"; STATUS=1; return
    fi
    local label
    for label in emulated host; do
        awk -F': ' -v label="$label" '/Elapsed \(wall clock\)/ {w=$2} /User time/ {u=$2} /System time/ {s=$2}
            /Maximum resident set size/ {m=$2}
            END {printf "%s: wall %s, CPU user %s s + sys %s s, peak RSS %.0f MB\n", label, w, u, s, m/1024}' \
            "$ROOT/host-out/$name.$([ $label = host ] && echo host-time || echo time)" | tee -a "$OUT"
    done
    "$HOSTVENV/bin/python" "$REPO/benchmarks/pi/compare_readings.py" --tol "$TOL" \
        "$ROOT/host-out/$name.jsonl" "$ROOT$CHECK/out/$name.jsonl" 2>&1 | tee -a "$OUT" || STATUS=1
}
for model in accurate fast; do
    run_pair "analyze-$model" --model "$model" analyze --jsonl $ANALYZE
    run_pair "live-$model" --model "$model" --file "$LIVE" --fast --no-dashboard --jsonl -
done

say "total $(( $(date +%s) - START )) s; $([ $STATUS = 0 ] && echo "PASS: $ARCH readings equal the x86 ones (tolerance $TOL)" || echo "FAIL")"
exit $STATUS
