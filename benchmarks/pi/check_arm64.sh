#!/usr/bin/env bash
# 64-bit Raspberry Pi OS (aarch64) check, emulated: see check_root.sh. Usage: sudo bash benchmarks/pi/check_arm64.sh [ROOT_DIR]
exec bash "$(dirname "$0")/check_root.sh" arm64 "${1:-$(cd "$(dirname "$0")/../.." && pwd)/build/pi-arm64}"
