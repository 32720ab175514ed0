#!/usr/bin/env bash
# 32-bit Raspberry Pi OS (armv7l userland) check, emulated: see check_root.sh. Usage: sudo bash benchmarks/pi/check_armhf.sh [ROOT_DIR]
exec bash "$(dirname "$0")/check_root.sh" armhf "${1:-$(cd "$(dirname "$0")/../.." && pwd)/build/pi-armhf}"
